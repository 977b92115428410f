"""The cleaning stage: erasure requests, noise removal and normalisation, the privacy policy, then the
filters the task's kind lists (`Task.cleaning_filters`, `filters.py`). Every input row is kept or rejected
with a reason; `redactions` lists, for audit, which spans of which kind were redacted in the text and the
provenance (no values: the original text stays only in raw_corpus, `privacy.keep_raw_text`), `quality_flags`
lists the flags raised on kept rows. A record is cleaned unit by unit (`Task.text_units`: its text, or
every turn of a conversation) and its fields rebuilt from the cleaned units (`Task.from_units`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import polars as pl

from finetune_pipeline.cleaning import noise
from finetune_pipeline.cleaning.erasure import ErasureReport, ErasureRequest, SubjectMatcher
from finetune_pipeline.cleaning.filters import Candidate, Filter, run_filters
from finetune_pipeline.cleaning.normalize import collapse_whitespace, normalize_text
from finetune_pipeline.cleaning.privacy import (UNRESOLVED_DETAIL, pop_redaction_counts, redact_to_fixed_point,
                                                redaction_counts)
from finetune_pipeline.cleaning.provenance import (PROVENANCE_FIELDS, provenance_redactions, redact_provenance,
                                                   redaction_spans, redactions_json)
from finetune_pipeline.cleaning.quality_filters import is_table_row
from finetune_pipeline.execution import frames
from finetune_pipeline.records import StageResult, StageStats, rejects_frame, sha256_text
from finetune_pipeline.settings import CleaningSettings, Settings
from finetune_pipeline.tasks import Task, task_for

STAGE = "cleaned_corpus"


@dataclass
class CleaningStats(StageStats):
    texts_changed: int = 0  # kept records whose text cleaning changed
    pii_by_type: dict[str, int] = field(default_factory=dict)  # spans found, by kind (never values)
    records_with_pii: int = 0
    quality_flags: dict[str, int] = field(default_factory=dict)
    erasure: ErasureReport = field(default_factory=ErasureReport)
    provenance_redacted: int = 0  # kept records whose source_uri or locator held personal data (redacted)
    pii_passes: dict[str, int] = field(default_factory=dict)  # records whose redaction took 2, 3 detector passes
    pii_unresolved: int = 0  # records rejected: personal data still found after the last pass
    pii_allowed: int = 0  # findings left in the text by privacy.allow
    pii_denied: int = 0  # spans redacted because privacy.deny names them
    warnings: list[str] = field(default_factory=list)  # filters that could not run, and why


def _reject(row: dict, reason: str, detail: str) -> dict:
    return {"record_id": row["record_id"], "stage": STAGE, "reason": reason, "detail": detail,
            "source_uri": row["source_uri"], "locator": row["locator"]}


def remove_page_headers(rows: list[dict], texts: list[str], settings: CleaningSettings) -> list[str]:
    """Drop lines repeated over the pages of one PDF/Word document (headers, footers, page numbers).
    `texts`: per row, its text (a chunk of a paged document is one text unit)."""
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


def clean_documents(batch: pl.DataFrame, settings: Settings,
                    erasure_requests: list[ErasureRequest] | None = None) -> pl.DataFrame:
    """Batch function over whole documents (every row of a `source_uri` together, for the page headers):
    each row with its outcome. Kept rows get the cleaned content fields, `redactions`, `content_sha256` and
    `quality_flags`; every row its `source_uri` and `locator` with personal data redacted; rejected rows
    `_reason` and `_detail` (and no content); `_erased_by` lists the erasure requests that hit
    a row, `_pii_counts` (JSON) what the privacy policy found in it."""
    task = task_for(settings)
    all_rows = list(batch.iter_rows(named=True))
    rows, erased_by = erase_requested(all_rows, erasure_requests)
    found = redact_provenance([row[name] for row in rows for name in PROVENANCE_FIELDS], settings.privacy)
    provenance = [{name: found[row[name]] for name in PROVENANCE_FIELDS} for row in rows]
    # Every unit of every record goes through the PII policy in one batch; a name found in one turn of a
    # conversation is redacted in every turn of it.
    redacted = redact_to_fixed_point(normalized_units(rows, task, settings.cleaning), settings.privacy)
    candidates = [Candidate(task.from_units(row, [p.text for p in pii]), [p.text for p in pii],
                            is_table_row(row["source_type"])) for row, pii in zip(rows, redacted)]
    filters = task.cleaning_filters(settings)
    for record_filter in filters:
        record_filter.prepare(candidates)  # batched work, e.g. the language filter's identifications
    outcome = {row["record_id"]: verdict(row, pii, provenance[n], candidate, filters)
               for n, (row, pii, candidate) in enumerate(zip(rows, redacted, candidates))}
    return outcome_frame(batch, all_rows, outcome, erased_by, task)


def erase_requested(rows: list[dict], requests: list[ErasureRequest] | None
                    ) -> tuple[list[dict], dict[str, list[str]]]:
    """The rows no erasure request names, and per erased record id the requests that hit it."""
    matcher = SubjectMatcher(requests) if requests else None
    kept, erased_by = [], {}
    for row in rows:
        hits = matcher.matches(row["record_id"], row["source_uri"] or "", row["text"] or "",
                               row["locator"] or "") if matcher else []
        if hits:
            erased_by[row["record_id"]] = hits
        else:
            kept.append(row)
    return kept, erased_by


def normalized_units(rows: list[dict], task: Task, cfg: CleaningSettings) -> list[list[str]]:
    """Per row its text units (`Task.text_units`) normalised, and a paged document's repeated lines removed
    (its chunks are one unit each)."""
    units = [[normalize_text(unit, cfg) for unit in task.text_units(row)] for row in rows]
    if cfg.remove_boilerplate:
        firsts = remove_page_headers(rows, [row_units[0] for row_units in units], cfg)
        units = [[first, *row_units[1:]] for first, row_units in zip(firsts, units)]
    return units


def verdict(row: dict, pii: list, provenance: dict, candidate: Candidate, filters: list[Filter]) -> dict:
    """One row's outcome: `_reason` and `_detail` when the privacy policy or a filter rejects it, else its
    cleaned fields, hash, redactions and flags; `_pii_counts` and its redacted provenance either way."""
    counts = sum((p.counts for p in pii), Counter()) + sum((v.counts for v in provenance.values()), Counter())
    drop_because = next((p.drop_because for p in pii if p.drop_because), None)
    in_provenance = next(((name, v.drop_because) for name, v in provenance.items() if v.drop_because), None)
    result = {"_pii_counts": json.dumps({**counts, **redaction_counts(pii)}, sort_keys=True),
              **{name: v.value for name, v in provenance.items()}}
    if drop_because:
        return {**result, "_reason": "pii_policy", "_detail": f"contains {drop_because}; privacy.{drop_because}=drop"}
    if any(p.unresolved for p in pii):
        return {**result, "_reason": "pii_policy", "_detail": UNRESOLVED_DETAIL}
    if in_provenance:
        name, kind = in_provenance
        return {**result, "_reason": "pii_policy", "_detail": f"its {name} contains {kind}; privacy.{kind}=drop"}
    reject, flags = run_filters(filters, candidate)
    if reject:
        return {**result, "_reason": reject[0], "_detail": reject[1]}
    fields = candidate.fields
    return {**result, **fields, "content_sha256": sha256_text(fields["text"]),
            "_text_changed": fields["text"] != row["text"],
            "redactions": redactions_json(redaction_spans(row["text"], fields["text"]),
                                          provenance_redactions(row, provenance)),
            "quality_flags": flags}


def outcome_frame(batch: pl.DataFrame, rows: list[dict], outcome: dict[str, dict], erased_by: dict[str, list[str]],
                  task: Task) -> pl.DataFrame:
    """Every row of `batch` with its outcome columns; a rejected or erased row keeps no content."""
    out = []
    for row in rows:
        result = outcome.get(row["record_id"], {})
        if result.get("_reason") or row["record_id"] in erased_by:
            result.update({c: None for c in task.content_columns if c in row})
        out.append({**row, "redactions": None, "quality_flags": None, "_reason": None, "_detail": None,
                    "_pii_counts": None, "_text_changed": None, **result,
                    "_erased_by": erased_by.get(row["record_id"])})
    schema = {**batch.schema, "redactions": pl.String, "quality_flags": pl.List(pl.String), "_reason": pl.String,
              "_detail": pl.String, "_pii_counts": pl.String, "_text_changed": pl.Boolean,
              "_erased_by": pl.List(pl.String)}
    return pl.DataFrame(out, schema=schema)


def clean_corpus(corpus: pl.DataFrame, settings: Settings,
                 erasure_requests: list[ErasureRequest] | None = None) -> StageResult:
    """Erase requested subjects, normalise every text, apply the PII policy, reject what fails a filter.
    `clean_documents` does the work, per document, here or on Ray workers (`settings.execution`)."""
    requests = list(erasure_requests or [])
    return cleaning_result(corpus, clean_rows(corpus, settings, requests), settings, requests)


def clean_rows(corpus: pl.DataFrame, settings: Settings, requests: list[ErasureRequest]) -> pl.DataFrame:
    """`clean_documents` over every document of `corpus`: one outcome row per input row, in input order
    (`_row` is the row's index in `corpus`)."""
    # a PDF's or Word file's pages stay together (their repeated headers are found across pages); any
    # other record is a group of its own, so one large CSV spreads over the workers too
    paged = pl.col("source_type").is_in(list(noise.PAGED_SOURCE_TYPES))
    grouped = corpus.with_row_index("_row").with_columns(
        pl.when(paged).then(pl.col("source_uri")).otherwise(pl.col("record_id")).alias("_document"))
    rows = (frames(grouped, settings.execution)
            .map_groups(["_document"], clean_documents, parallel=True, settings=settings, erasure_requests=requests)
            .to_polars().sort("_row").drop("_document", strict=False))
    if not rows.width:  # an empty corpus on Ray comes back without columns
        rows = clean_documents(corpus.with_row_index("_row").clear(), settings, requests)
    return rows


def cleaning_result(corpus: pl.DataFrame, rows: pl.DataFrame, settings: Settings,
                    requests: list[ErasureRequest]) -> StageResult:
    """The stage's kept records, rejects and statistics from `clean_rows`' outcome rows (in input order)."""
    erased = rows.filter(pl.col("_erased_by").is_not_null())
    rest = rows.filter(pl.col("_erased_by").is_null())
    rejected = rest.filter(pl.col("_reason").is_not_null())
    kept = rest.filter(pl.col("_reason").is_null())

    rejects = [{"record_id": r["record_id"], "stage": STAGE, "reason": "erased_by_request",
                "detail": "removed by erasure request " + ", ".join(r["_erased_by"]), "source_uri": None,
                "locator": None} for r in erased.iter_rows(named=True)]
    rejects += [_reject(r, r["_reason"], r["_detail"]) for r in rejected.iter_rows(named=True)]
    honoured = Counter({request.request_id: 0 for request in requests})
    honoured.update(h for hits in erased["_erased_by"].to_list() for h in hits)
    pii_counts, flag_counts = Counter(), Counter()
    found = [json.loads(c) for c in rest["_pii_counts"].to_list()]
    redaction = pop_redaction_counts(found)  # fixed-point passes, allow and deny figures
    for counts in found:
        pii_counts.update(counts)
    for flags in kept["quality_flags"].to_list():
        flag_counts.update(flags)

    # a filter that cannot run says so once (e.g. no tokenizer to count a conversation's tokens)
    filters = task_for(settings).cleaning_filters(settings) if corpus.height else []
    warnings = [warning for record_filter in filters if (warning := record_filter.warning())]
    schema = {**corpus.schema, "redactions": pl.String, "quality_flags": pl.List(pl.String)}
    kept_frame = kept.select(list(schema)).cast(schema)
    provenance = kept["redactions"].str.contains('"field": "(?:source_uri|locator)"')
    stats = CleaningStats(texts_changed=int(kept["_text_changed"].sum()), provenance_redacted=int(provenance.sum()),
                          pii_by_type=dict(pii_counts), records_with_pii=sum(bool(c) for c in found), **redaction,
                          quality_flags=dict(flag_counts), warnings=warnings,
                          erasure=ErasureReport(requests=len(honoured), records_removed=erased.height,
                                                removed_by_request=dict(honoured)))
    return StageResult(kept=kept_frame, rejected=rejects_frame(rejects), stats=stats)
