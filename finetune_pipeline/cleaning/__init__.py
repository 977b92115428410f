"""Cleaning stage: normalise text, apply the privacy policy, then the quality filters."""

from __future__ import annotations

from collections import Counter

import polars as pl

from finetune_pipeline.cleaning.normalize import normalize_text
from finetune_pipeline.cleaning.privacy import apply_pii_policy
from finetune_pipeline.cleaning.quality_filters import length_filter
from finetune_pipeline.records import StageResult, rejects_frame, sha256_text
from finetune_pipeline.settings import Settings

STAGE = "cleaned_corpus"


def clean_corpus(corpus: pl.DataFrame, settings: Settings) -> StageResult:
    """Normalise every text, redact PII, reject what fails a filter. Keeps `text_raw` for audit."""
    kept_rows, rejects = [], []
    pii_counts: Counter = Counter()
    changed = 0
    for row in corpus.iter_rows(named=True):
        raw = row["text"]
        text = normalize_text(raw, settings.cleaning)
        pii = apply_pii_policy(text, settings.privacy)
        pii_counts.update(pii.counts)
        reject = None
        if pii.drop_because:
            reject = ("pii_policy", f"contains {pii.drop_because}; privacy.{pii.drop_because}=drop")
        else:
            reject = length_filter(pii.text, settings.cleaning)
        if reject:
            rejects.append({"record_id": row["record_id"], "stage": STAGE, "reason": reject[0],
                            "detail": reject[1], "source_uri": row["source_uri"], "locator": row["locator"]})
            continue
        changed += pii.text != raw
        kept_rows.append({**row, "text": pii.text, "text_raw": raw, "content_sha256": sha256_text(pii.text)})
    columns = [*corpus.columns, "text_raw"]
    kept = pl.DataFrame(kept_rows, schema={**corpus.schema, "text_raw": pl.String}) if kept_rows \
        else corpus.clear().with_columns(pl.lit(None, pl.String).alias("text_raw"))
    return StageResult(kept=kept.select(columns), rejected=rejects_frame(rejects),
                       stats={"texts_changed": changed, "pii_by_type": dict(pii_counts)})
