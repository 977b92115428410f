"""The sentence encoder in a process of its own (issue 36): a labeling pass over many texts leaves torch and the
model out of the step process, with the vectors, and so the labels, it would have given in the step."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetune_pipeline import embeddings  # noqa: E402
from finetune_pipeline_tests.test_embedding_cache import TEXTS, _labeling_corpus  # noqa: E402


def test_the_encoder_process_gives_the_vectors_of_this_process_over_several_chunks(monkeypatch):
    texts = [f"{text} (ticket {n})" * (1 + n % 3) for n in range(9) for text in TEXTS]  # longest first differs from the input order
    monkeypatch.setattr(embeddings, "PROCESS_CHUNK", 8)  # 36 texts in batches of 4: five requests
    name = str(embeddings.default_encoder())
    here = embeddings._encode(texts, name, 4, 64)
    with embeddings.EncoderProcess(name, 4, 64) as apart:
        away = apart(texts)
        empty = apart([])
    np.testing.assert_array_equal(away, here)  # the same batches, so the same floats
    assert empty.shape == (0, here.shape[1]) and empty.dtype == np.float32


def test_a_labeling_pass_over_many_texts_embeds_them_in_another_process_with_the_same_labels(tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import polars as pl
        from finetune_pipeline.labeling import apply_labels
        from finetune_pipeline.settings import Settings
        corpus = pl.read_parquet(sys.argv[1])
        for minimum in (3, None):  # six texts and two label descriptions: over 3, in another process; then here
            settings = Settings(labels=["billing", "shipping"], checks={"min_records": 1},
                                execution={"encoder_process_min_texts": minimum})
            result = apply_labels(corpus, settings)
            kept = result.kept.sort("record_id").select("record_id", "label", "label_confidence").rows()
            print(json.dumps({"torch": "torch" in sys.modules, "kept": kept, "rejected": result.rejected.height}))
    """)
    corpus = tmp_path / "corpus.parquet"
    _labeling_corpus().write_parquet(corpus)
    out = subprocess.run([sys.executable, "-c", script, str(corpus)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    apart, here = (json.loads(line) for line in out.splitlines()[-2:])  # torch: whether imported by then
    assert apart["torch"] is False and here["torch"] is True
    assert apart["kept"] == here["kept"] and apart["rejected"] == here["rejected"]
    assert len(here["kept"]) + here["rejected"] == _labeling_corpus().height


def test_the_sharded_domain_filter_embeds_in_another_process_with_the_same_answer(tmp_path):
    """The domain's description and every record's text by the encoder's own process (the streaming path's
    domain filter on a corpus of at least `encoder_process_min_texts` records): the same scores and verdicts."""
    from finetune_pipeline import shards
    from finetune_pipeline_tests.test_domain_sharded import DOMAIN, packages_and_licences

    corpus = packages_and_licences().head(60)  # packages and licence paragraphs, three shards
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=25)
    script = textwrap.dedent("""
        import json, sys
        from finetune_pipeline import shards
        from finetune_pipeline.domain_sharded import domain_filter_sharded
        from finetune_pipeline.settings import Settings
        from finetune_pipeline.tasks import task_for
        for minimum in (50, None):  # 60 records: over 50, in another process; then here
            settings = Settings.model_validate({"domain": json.loads(sys.argv[2]),
                                                "execution": {"encoder_process_min_texts": minimum}})
            result = domain_filter_sharded(shards.open_dataset(sys.argv[1]), settings.domain, task_for(settings),
                                           settings.execution)
            print(json.dumps({"torch": "torch" in sys.modules, "below": result.below.tolist(),
                              "stats": result.stats.to_dict() if hasattr(result.stats, "to_dict") else vars(result.stats)}))
    """)
    domain = json.dumps({**DOMAIN, "calibration": "absolute", "threshold": 0.2, "max_reject_share": 1.0})
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in"), domain], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    apart, here = (json.loads(line) for line in out.splitlines()[-2:])  # torch: whether imported by then
    assert apart["torch"] is False and here["torch"] is True
    assert apart["below"] == here["below"] and 0 < sum(here["below"]) < 60  # licence paragraphs fall below
    assert apart["stats"] == here["stats"]
