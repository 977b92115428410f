#!/bin/bash
# Issue 35's check (WORK=/tmp/twice by default): `make run` twice on a copy of the sample root with a change between (a new raw ticket);
# then MLflow runs and model versions, `finetune-pipeline versions`, and a rollback compared byte for byte.
set -u
cd "$(dirname "$0")/.."
W=${WORK:-/tmp/twice}; R=$W/data; rm -rf $R $W/home $W/first; mkdir -p $W; cp -r data $R; rm -rf $R/exports $R/models $R/.pipeline
printf '\ntraining:\n  epochs: 2\n  compare: [lora, feature]\nsplits:\n  cv_folds: 2\n' >> $R/finetune.yaml  # time: the check is tracking and versions, not quality
mkdir -p $W/home
export FINETUNE_DATA_DIR=$R DAGSTER_HOME=$W/home
date; time make run > $W/run1.log 2>&1; echo "run1 rc=$?"
mkdir -p $W/first; cp -rL $R/exports/splits $W/first/splits; cp -rL $R/models/lora_adapter $W/first/adapter
printf 'Hello, I was charged twice for order 88412 this morning, once at 9:02 and again at 9:03. Please refund the second charge.\n' > $R/raw/tickets/billing/ticket_new_double_charge.txt
date; time make run > $W/run2.log 2>&1; echo "run2 rc=$?"
.venv/bin/finetune-pipeline versions --data-dir $R 2>&1 | tee $W/versions.txt
.venv/bin/python - <<'PY'
import mlflow, os
from mlflow import MlflowClient
uri = "sqlite:///" + os.environ["FINETUNE_DATA_DIR"] + "/.pipeline/mlflow/mlflow.db"
c = MlflowClient(tracking_uri=uri)
for e in c.search_experiments():
    runs = c.search_runs([e.experiment_id], max_results=500)
    print("experiment", e.name, "runs", len(runs))
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") is None:
            print("  run", r.info.run_name, r.info.status, {k: round(v, 4) for k, v in r.data.metrics.items() if k.startswith("test")})
for m in c.search_registered_models():
    for v in c.search_model_versions(f"name='{m.name}'"):
        print("model", m.name, "version", v.version, {k: v.tags.get(k) for k in ("dataset_version", "data_snapshot", "dagster.run_id")})
PY
SPLITV=$(grep -v '^\*' $W/versions.txt | awk '$1=="splits" {print $3}' | head -1)
ADV=$(grep -v '^\*' $W/versions.txt | awk '$1=="adapter" {print $3}' | head -1)
echo "rolling back to $SPLITV and $ADV"
.venv/bin/finetune-pipeline rollback $SPLITV --data-dir $R; .venv/bin/finetune-pipeline rollback $ADV --data-dir $R
diff -r $W/first/splits $R/exports/splits && echo "SPLITS BYTE-IDENTICAL after rollback"
diff -r $W/first/adapter $R/models/lora_adapter && echo "ADAPTER BYTE-IDENTICAL after rollback"
date
