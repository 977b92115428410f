"""Cleaning stage (seed 1.1 and 1.2): erasure requests, noise removal and normalisation, the privacy
policy, then the quality filters. Every input row is kept or rejected with a reason; `text_raw` keeps
the original text of kept rows for audit, `quality_flags` lists the flags raised on them.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import polars as pl

from finetune_pipeline.cleaning import noise
from finetune_pipeline.cleaning.erasure import ErasureRequest, SubjectMatcher
from finetune_pipeline.cleaning.normalize import collapse_whitespace, normalize_text
from finetune_pipeline.cleaning.privacy import apply_pii_policy_batch
from finetune_pipeline.cleaning.quality_filters import quality_reject
from finetune_pipeline.records import StageResult, rejects_frame, sha256_text
from finetune_pipeline.settings import CleaningSettings, Settings

STAGE = "cleaned_corpus"


def _reject(row: dict, reason: str, detail: str) -> dict:
    return {"record_id": row["record_id"], "stage": STAGE, "reason": reason, "detail": detail,
            "source_uri": row["source_uri"], "locator": row["locator"]}


def erase_requested(rows: list[dict], requests: list[ErasureRequest]) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Split rows into (kept, rejects) by the erasure requests; also records removed per request id.
    Rejects of erased rows carry neither source_uri nor locator: those may name the subject."""
    honoured = {request.request_id: 0 for request in requests}
    if not requests:
        return rows, [], honoured
    matcher = SubjectMatcher(requests)
    kept, rejects = [], []
    for row in rows:
        hits = matcher.matches(row["record_id"], row["source_uri"] or "", row["text"] or "")
        if not hits:
            kept.append(row)
            continue
        for request_id in hits:
            honoured[request_id] += 1
        rejects.append({"record_id": row["record_id"], "stage": STAGE, "reason": "erased_by_request",
                        "detail": "removed by erasure request " + ", ".join(hits), "source_uri": None, "locator": None})
    return kept, rejects, honoured


def remove_page_headers(rows: list[dict], texts: list[str], settings: CleaningSettings) -> list[str]:
    """Drop lines repeated over the pages of one PDF/Word document (headers, footers, page numbers)."""
    by_document: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row["source_type"] in noise.PAGED_SOURCE_TYPES:
            by_document[row["source_uri"]].append(i)
    texts = list(texts)
    for indices in by_document.values():
        keys = noise.repeated_lines([texts[i] for i in indices], settings.repeated_line_min)
        for i in indices:
            cleaned = noise.remove_lines(texts[i], keys)
            if cleaned != texts[i]:
                texts[i] = (collapse_whitespace(cleaned) if settings.collapse_whitespace else cleaned).strip()
    return texts


def clean_corpus(corpus: pl.DataFrame, settings: Settings,
                 erasure_requests: list[ErasureRequest] | None = None) -> StageResult:
    """Erase requested subjects, normalise every text, apply the PII policy, reject what fails a filter."""
    cfg = settings.cleaning
    rows, rejects, honoured = erase_requested(list(corpus.iter_rows(named=True)), list(erasure_requests or []))
    texts = [normalize_text(row["text"], cfg) for row in rows]
    if cfg.remove_boilerplate:
        texts = remove_page_headers(rows, texts, cfg)
    pii_results = apply_pii_policy_batch(texts, settings.privacy)

    kept_rows, pii_counts, flag_counts = [], Counter(), Counter()
    records_with_pii = changed = 0
    for row, pii in zip(rows, pii_results):
        pii_counts.update(pii.counts)
        records_with_pii += bool(pii.counts)
        if pii.drop_because:
            rejects.append(_reject(row, "pii_policy",
                                   f"contains {pii.drop_because}; privacy.{pii.drop_because}=drop"))
            continue
        reject, flags = quality_reject(pii.text, cfg)
        if reject:
            rejects.append(_reject(row, *reject))
            continue
        flag_counts.update(flags)
        changed += pii.text != row["text"]
        kept_rows.append({**row, "text": pii.text, "text_raw": row["text"], "content_sha256": sha256_text(pii.text),
                          "quality_flags": flags})

    schema = {**corpus.schema, "text_raw": pl.String, "quality_flags": pl.List(pl.String)}
    kept = pl.DataFrame(kept_rows, schema=schema) if kept_rows else pl.DataFrame(schema=schema)
    stats = {"texts_changed": changed, "pii_by_type": dict(pii_counts), "records_with_pii": records_with_pii,
             "quality_flags": dict(flag_counts),
             "erasure": {"requests": len(honoured), "records_removed": sum(r["reason"] == "erased_by_request"
                                                                            for r in rejects),
                         "removed_by_request": honoured}}
    return StageResult(kept=kept, rejected=rejects_frame(rejects), stats=stats)
