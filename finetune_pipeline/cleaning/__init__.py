"""Cleaning stage: erasure requests, noise removal and normalisation, the privacy policy, then the quality
filters (for conversations, first the SFT filters on the final answer, then the too-long filter on the whole
conversation in the base model's tokens). Every input row is kept or rejected
with a reason; `redactions` lists, for audit, which spans of which kind were redacted in the text and the
provenance (no values: the original text stays only in raw_corpus, `privacy.keep_raw_text`), `quality_flags`
lists the flags raised on kept rows. A conversation is cleaned turn by turn and its `text`, `messages`,
`prompt` and `response` rebuilt from the cleaned turns.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import polars as pl

from finetune_pipeline.cleaning import noise
from finetune_pipeline.cleaning.erasure import ErasureReport, ErasureRequest, SubjectMatcher
from finetune_pipeline.cleaning.normalize import collapse_whitespace, normalize_text
from finetune_pipeline.cleaning.privacy import (UNRESOLVED_DETAIL, pop_redaction_counts, redact_to_fixed_point,
                                                redaction_counts)
from finetune_pipeline.cleaning.provenance import (PROVENANCE_FIELDS, provenance_redactions, redact_provenance,
                                                   redaction_spans, redactions_json)
from finetune_pipeline.cleaning.quality_filters import identify_languages, is_table_row, needs_language, quality_reject
from finetune_pipeline.cleaning.sft_filters import sft_reject, too_long_filter, training_tokenizer
from finetune_pipeline.execution import frames
from finetune_pipeline.records import StageResult, StageStats, rejects_frame, sha256_text
from finetune_pipeline.settings import CleaningSettings, Settings
from finetune_pipeline.sources.conversations import conversation_fields

STAGE = "cleaned_corpus"
_CONTENT_COLUMNS = ("text", "messages", "prompt", "response")  # what a person wrote: not kept for a reject


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


def _turns(row: dict) -> list[dict] | None:
    """The turns of a conversation record (instruction data), None for any other record."""
    messages = row.get("messages")
    return json.loads(messages) if messages else None


def _too_long(fields: dict, settings: Settings):
    """The too-long filter's reject on a cleaned conversation, or None (also when no tokenizer loads:
    `clean_corpus` reports that once as a warning)."""
    tokenizer, _ = training_tokenizer(settings.training)
    if tokenizer is None:
        return None
    return too_long_filter(json.loads(fields["messages"]), tokenizer, settings.training.instruction_max_length)


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


def clean_documents(batch: pl.DataFrame, settings: Settings,
                    erasure_requests: list[ErasureRequest] | None = None) -> pl.DataFrame:
    """Batch function over whole documents (every row of a `source_uri` together, for the page headers):
    each row with its outcome. Kept rows get the cleaned `text`, `redactions`, `content_sha256` and
    `quality_flags`; every row its `source_uri` and `locator` with personal data redacted; rejected rows
    `_reason` and `_detail` (and no content); `_erased_by` lists the erasure requests that hit
    a row, `_pii_counts` (JSON) what the privacy policy found in it."""
    cfg = settings.cleaning
    all_rows = list(batch.iter_rows(named=True))
    matcher = SubjectMatcher(erasure_requests) if erasure_requests else None
    rows, erased_by = [], {}
    for row in all_rows:
        hits = matcher.matches(row["record_id"], row["source_uri"] or "", row["text"] or "",
                               row["locator"] or "") if matcher else []
        if hits:
            erased_by[row["record_id"]] = hits
        else:
            rows.append(row)
    # A conversation is cleaned turn by turn (so `messages`, `prompt` and `response` are cleaned too);
    # every other record as one text. All of it goes through the PII policy in one batch; a name found in
    # one turn is redacted in every turn of the conversation.
    conversations = [_turns(row) for row in rows]
    found = redact_provenance([row[name] for row in rows for name in PROVENANCE_FIELDS], settings.privacy)
    provenance = [{name: found[row[name]] for name in PROVENANCE_FIELDS} for row in rows]
    texts = [normalize_text(row["text"], cfg) if turns is None else None for row, turns in zip(rows, conversations)]
    if cfg.remove_boilerplate:
        texts = remove_page_headers(rows, texts, cfg)
    units = [[text] if turns is None else [normalize_text(t["content"], cfg) for t in turns]
             for text, turns in zip(texts, conversations)]
    outcome: dict[str, dict] = {}
    redacted = redact_to_fixed_point(units, settings.privacy)  # until the export check finds nothing in them
    cleaned = [{"text": pii[0].text} if turns is None else
               conversation_fields([{**t, "content": p.text} for t, p in zip(turns, pii)])
               for turns, pii in zip(conversations, redacted)]
    # the language filter's identifications, batched: one numpy pass over every text that needs one
    judged = [n for n, fields in enumerate(cleaned) if needs_language(fields["text"], cfg)]
    languages = dict(zip(judged, identify_languages([cleaned[n]["text"] for n in judged])))
    for n, (row, turns, pii, fields) in enumerate(zip(rows, conversations, redacted, cleaned)):
        counts = sum((p.counts for p in pii), Counter()) + sum((v.counts for v in provenance[n].values()), Counter())
        drop_because = next((p.drop_because for p in pii if p.drop_because), None)
        in_provenance = next(((name, v.drop_because) for name, v in provenance[n].items() if v.drop_because), None)
        result = {"_pii_counts": json.dumps({**counts, **redaction_counts(pii)}, sort_keys=True),
                  **{name: v.value for name, v in provenance[n].items()}}
        # an empty final answer is the SFT filters' empty_response
        empty_turn = turns is not None and next((i for i, p in enumerate(pii[:-1], start=1) if not p.text.strip()),
                                                None)
        if drop_because:
            result.update(_reason="pii_policy", _detail=f"contains {drop_because}; privacy.{drop_because}=drop")
        elif any(p.unresolved for p in pii):
            result.update(_reason="pii_policy", _detail=UNRESOLVED_DETAIL)
        elif in_provenance:
            name, kind = in_provenance
            result.update(_reason="pii_policy", _detail=f"its {name} contains {kind}; privacy.{kind}=drop")
        elif empty_turn:
            result.update(_reason="empty", _detail=f"turn {empty_turn} ({turns[empty_turn - 1]['role']}) is empty "
                                                   f"after cleaning; fix the turn or remove the conversation")
        elif turns is not None and (sft := sft_reject(fields["prompt"], fields["response"], cfg)):
            result.update(_reason=sft[0], _detail=sft[1])
        elif (reject := quality_reject(fields["text"], cfg, None if turns is None else [p.text for p in pii],
                                       languages.get(n), is_table_row(row["source_type"])))[0]:
            result.update(_reason=reject[0][0], _detail=reject[0][1])
        elif (too_long := turns is not None and _too_long(fields, settings)) and cfg.too_long_action == "drop":
            result.update(_reason=too_long[0], _detail=too_long[1])
        else:
            result.update(**fields, content_sha256=sha256_text(fields["text"]),
                          _text_changed=fields["text"] != row["text"],
                          redactions=redactions_json(redaction_spans(row["text"], fields["text"]),
                                                     provenance_redactions(row, provenance[n])),
                          quality_flags=reject[1] + ([too_long[0]] if too_long else []))
        outcome[row["record_id"]] = result
    out = []
    for row in all_rows:
        result = outcome.get(row["record_id"], {})
        if result.get("_reason") or row["record_id"] in erased_by:  # a reject keeps no raw content
            result.update({c: None for c in _CONTENT_COLUMNS if c in row})
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

    warnings = []
    if "messages" in corpus.columns and corpus["messages"].null_count() < corpus.height:
        warning = training_tokenizer(settings.training)[1]
        warnings += [warning] if warning else []
    schema = {**corpus.schema, "redactions": pl.String, "quality_flags": pl.List(pl.String)}
    kept_frame = kept.select(list(schema)).cast(schema)
    provenance = kept["redactions"].str.contains('"field": "(?:source_uri|locator)"')
    stats = CleaningStats(texts_changed=int(kept["_text_changed"].sum()), provenance_redacted=int(provenance.sum()),
                          pii_by_type=dict(pii_counts), records_with_pii=sum(bool(c) for c in found), **redaction,
                          quality_flags=dict(flag_counts), warnings=warnings,
                          erasure=ErasureReport(requests=len(honoured), records_removed=erased.height,
                                                removed_by_request=dict(honoured)))
    return StageResult(kept=kept_frame, rejected=rejects_frame(rejects), stats=stats)
