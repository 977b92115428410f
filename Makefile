# Set-up, run and test. Nothing needs to be installed by hand: `make run` and `make test` create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export FINETUNE_DATA_DIR ?= $(CURDIR)/data
export DO_NOT_TRACK := true
export UNSTRUCTURED_DISABLE_NOTICE := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# pip keeps no second copy of what it downloads: where the wheels come from PyPI (torch, ray, onnxruntime...)
# its cache would double the install's few GB on disk (a CI machine once ran out of space in the install).
export PIP_NO_CACHE_DIR := 1

.PHONY: install run test audit ui review mlflow clean

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test,ray]'
	# unstructured-inference without its dependency chain (timm -> torchvision breaks transformers here);
	# what it really imports is listed in pyproject.toml.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -c requirements.lock unstructured-inference
	touch $@

install: $(VENV)/.installed
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# build-base-model: an instruction root whose finetune.yaml asks for a small local base model
# (training.build_base_model) gets it built when missing; nothing happens for other roots.
run: install
	$(BIN)/finetune-pipeline build-base-model
	$(BIN)/finetune-pipeline run

# The SQL-source and Dagster-storage tests read from a real PostgreSQL: a throwaway server on 127.0.0.1
# (scripts/test_postgres.sh); the UI test drives Debian's Chromium. Both are
# installed with apt-get when missing and running as root. Two pytest-xdist workers (TEST_WORKERS): each test
# file stays on one, and the end-to-end run's tests share one (conftest.py), so nothing starts twice.
TEST_WORKERS ?= 2
test: install
	scripts/ensure_debian_package.sh chromium chromium
	# One Label Studio server for the whole test run (its own .venv-labelstudio/, installed when missing), started in
	# the background while the other tests run; the label_studio_server fixture waits for it.
	LABEL_STUDIO_STATE=/tmp/finetune-pipeline-labelstudio-test scripts/label_studio.sh start >/tmp/finetune-pipeline-labelstudio-test.log 2>&1 &
	# One torch/OpenMP thread per worker: two workers with two threads each on two cores oversubscribe them.
	OMP_NUM_THREADS=1 FINETUNE_TEST_PG_URL="$$(scripts/test_postgres.sh start)" $(BIN)/python -m pytest -n $(TEST_WORKERS)

# pip-audit over requirements.lock (from its own .venv-audit/). Exit 1: an untriaged vulnerability;
# exit 3: not audited (the vulnerability service is unreachable from this network). See docs/security.md.
audit:
	$(PYTHON) scripts/audit_dependencies.py

ui: install
	$(BIN)/finetune-pipeline build-base-model
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

# Review in a real Label Studio (review.backend: label_studio in finetune.yaml; review.url's default is this
# port): starts Label Studio (scripts/label_studio.sh; its own .venv-labelstudio/, state in .labelstudio/) on
# 127.0.0.1:8080, then the Dagster UI beside it with the server's API token in LABEL_STUDIO_USER_TOKEN.
# First user: $$LABEL_STUDIO_USERNAME (admin@example.com), password in .labelstudio/password unless set.
review: install
	$(BIN)/finetune-pipeline build-base-model
	@export LABEL_STUDIO_STATE=$${LABEL_STUDIO_STATE:-$(CURDIR)/.labelstudio} LABEL_STUDIO_PORT=$${LABEL_STUDIO_PORT:-8080}; \
	  url=$$(scripts/label_studio.sh start) && echo "Label Studio: $$url" && \
	  LABEL_STUDIO_USER_TOKEN=$$(scripts/label_studio.sh token) $(BIN)/dagster dev -h 127.0.0.1 -p 3000

# The MLflow UI on the local tracking store (.pipeline/mlflow/ under the data root; tracking in finetune.yaml).
# The project has mlflow-skinny (no UI); the full mlflow, whose pins clash with ours (pyarrow<26), lives in
# its own .venv-mlflow/, at the same release so both read the same database schema.
MLFLOW_VENV := .venv-mlflow
MLFLOW_VERSION := $(shell sed -n 's/^mlflow-skinny==//p' requirements.lock)

$(MLFLOW_VENV)/.installed: requirements.lock
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check mlflow==$(MLFLOW_VERSION)
	touch $@

mlflow: install $(MLFLOW_VENV)/.installed
	$(BIN)/python -m finetune_pipeline.tracking ui $(MLFLOW_VENV)/bin/mlflow

clean:
	rm -rf $(DAGSTER_HOME) $(FINETUNE_DATA_DIR)/.pipeline $(FINETUNE_DATA_DIR)/exports $(FINETUNE_DATA_DIR)/models
