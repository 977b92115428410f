"""Train / validation / test splits: stratified, group-aware, deterministic for a seed, and stable: a
group's place in its stratum is a seeded hash of its id (`group_ranks`), so new records move few old ones.

The task names the column each split keeps in proportion (`Task.stratify_column`): the label for
classification, where every label must reach every split; for instruction data the optional `category`,
else `source_uri`, where strata too small for every split are pooled instead (`Task.split_strata`). A group (a near-duplicate
cluster, `group_id`: near-identical prompts) never straddles two splits, and augmented rows follow the
record they were derived from, so nothing leaks from training into evaluation. `join_similar_groups`
first widens the groups to lightly edited copies (MinHash at `splits.contamination_threshold`, looser than
dedup's), and `cross_split_near_duplicates` is what the blocking contamination check looks for.

The split is decided once, on the original records, before augmentation (`split_assignment`: `record_id,
split, group_id`); augmentation draws only on records in train, and the export applies the same assignment
(`apply_split_assignment`: augmented rows take their source's split and group), so the two never differ.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from finetune_pipeline.dedup.minhash import clusters_from_pairs, near_duplicate_clusters
from finetune_pipeline.incremental import ResultCache, code_version, digest, frame_digest
from finetune_pipeline.records import SPLITS
from finetune_pipeline.settings import DedupSettings, ExecutionSettings, SplitSettings
from finetune_pipeline.tasks import Task, task_named

NO_STRATUM = "(none)"  # the stratum of records whose stratify column is null (e.g. no category)


class SplitError(ValueError):
    """The data cannot be split as configured (e.g. a class too small for every split)."""


def stratified_group_split(corpus: pl.DataFrame, cfg: SplitSettings, task: Task | None = None) -> pl.DataFrame:
    """`record_id, split` for original records (rows with no `augmented_from`), stratified by the task's
    `stratify_column` (classification when `task` is None)."""
    task = task or task_named(None)
    column = task.stratify_column(corpus)
    group_col = "group_id" if "group_id" in corpus.columns else "record_id"
    if "augmented_from" in corpus.columns:
        corpus = corpus.filter(pl.col("augmented_from").is_null())
    groups = group_strata(corpus, group_col, column)
    ratios = np.array([cfg.train, cfg.validation, cfg.test])
    needed = int((ratios > 0).sum())
    groups = task.split_strata(groups, needed)
    assignment: dict[str, str] = {}
    for label in sorted(groups["label"].unique().to_list()):
        members = groups.filter(pl.col("label") == label)
        if members.height < needed:
            raise SplitError(f"{column} '{label}' has {members.height} record group(s), fewer than the {needed} "
                             f"splits; {task.too_few_groups_hint}")
        order = np.argsort(group_ranks(members[group_col], cfg.seed), kind="stable")
        sizes = members["n"].to_numpy()[order]
        ids = members[group_col].to_numpy()[order]
        # Fill test and validation first, then the rest to train. A split takes a group when that brings
        # it closer to its target (filled + size / 2 < target: a 20-record cluster does not go to a test
        # split of 4), and every split gets at least one group: one left empty takes the smallest group
        # train has (the earliest in rank among equals).
        total = sizes.sum()
        targets = {"validation": max(1, round(total * cfg.validation)) if cfg.validation > 0 else 0,
                   "test": max(1, round(total * cfg.test))}
        filled = {"validation": 0, "test": 0}
        taken = {"test": 0, "validation": 0, "train": 0}  # groups per split
        chosen: dict[str, str] = {}
        for pos, (gid, size) in enumerate(zip(ids, sizes)):
            left = len(ids) - pos - 1  # groups after this one
            choice = "train"
            for split in ("test", "validation"):
                if filled[split] + size / 2 < targets[split]:
                    # a split that has a group already does not take one the still empty splits need
                    empty = sum(1 for other in ("validation", "train") if other != split and not taken[other]
                                and (other == "train" or targets[other] > 0))
                    if not taken[split] or left >= empty:
                        choice = split
                        break
            chosen[gid] = choice
            taken[choice] += 1
            if choice != "train":
                filled[choice] += size
        for split in ("test", "validation"):
            if targets[split] and not taken[split] and taken["train"] > 1:
                gid = ids[min((sizes[pos], pos) for pos in range(len(ids)) if chosen[ids[pos]] == "train")[1]]
                chosen[gid] = split
                taken[split] += 1
                taken["train"] -= 1
        assignment.update(chosen)
        if "train" not in {assignment[g] for g in ids}:
            raise SplitError(f"{column} '{label}' has too few records to leave any for training")
    split_of_group = pl.DataFrame({group_col: list(assignment), "split": list(assignment.values())})
    return corpus.select("record_id", group_col).join(split_of_group, on=group_col).select("record_id", "split")


def group_strata(corpus: pl.DataFrame, group_col: str, column: str) -> pl.DataFrame:
    """Per group (`group_col`, sorted): `label`, its stratum, the most frequent value of `column` among its
    rows (null: NO_STRATUM; ties: the first by name), and `n`, its rows. Counted as (group, value) pairs: a
    `mode()` per group held a list for each of a million groups (+360 MB at 911k records)."""
    return (corpus.group_by(group_col, pl.col(column).fill_null(NO_STRATUM).alias("label")).len()
            .sort(group_col, "len", "label", descending=[False, True, False])
            .group_by(group_col, maintain_order=True).agg(pl.col("label").first(), pl.col("len").sum().alias("n"))
            .sort(group_col))


def group_ranks(group_ids: pl.Series, seed: int) -> np.ndarray:
    """A seeded hash of each group id (uint64): a stratum's groups are taken in this order, test and
    validation filled first. The rank of a group depends on its id alone, never on which other groups
    exist, so a new group takes its place in the order and moves at most the few old groups at the
    split boundaries it shifts (`split_moves` counts them), and the result is that of a run from scratch."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{g}".encode()).digest()[:8], "big")
                     for g in group_ids.cast(pl.String).to_list()], dtype=np.uint64)


def split_moves(current: pl.DataFrame, previous: pl.DataFrame) -> dict:
    """Original records (no `augmented_from`) of `previous` (e.g. the last published split) still present
    in `current`: how many kept their split, and how many moved from one split to another."""
    def originals(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.is_empty() or "split" not in frame.columns:
            return pl.DataFrame(schema={"record_id": pl.String, "split": pl.String})
        if "augmented_from" in frame.columns:
            frame = frame.filter(pl.col("augmented_from").is_null())
        return frame.select("record_id", pl.col("split").cast(pl.String))

    both = originals(current).join(originals(previous), on="record_id", suffix="_before")
    moved = both.filter(pl.col("split") != pl.col("split_before"))
    return {"old_records": both.height, "kept_split": both.height - moved.height,
            "moved": {f"{a}->{b}": n for a, b, n in
                      moved.group_by("split_before", "split").len().sort("split_before", "split").rows()}}


def assign_splits(corpus: pl.DataFrame, cfg: SplitSettings, task: Task | None = None) -> pl.DataFrame:
    """The augmented corpus with a `split` column: originals by `stratified_group_split`, augmented
    rows in the split of their source record."""
    originals = stratified_group_split(corpus, cfg, task)
    by_source = originals.rename({"record_id": "augmented_from", "split": "_source_split"})
    out = (corpus.join(originals, on="record_id", how="left")
           .join(by_source, on="augmented_from", how="left")
           .with_columns(pl.coalesce("split", "_source_split").alias("split"))
           .drop("_source_split"))
    return out.with_columns(pl.col("split").cast(pl.Enum(list(SPLITS)))).sort("split", "record_id") \
        .with_columns(pl.col("split").cast(pl.String))


def kfold_assignments(train: pl.DataFrame, k: int, seed: int, task: Task | None = None) -> pl.DataFrame:
    """`record_id, fold` for original training records: stratified by the task's `stratify_column`
    (classification when `task` is None), groups kept together."""
    column = (task or task_named(None)).stratify_column(train)
    group_col = "group_id" if "group_id" in train.columns else "record_id"
    originals = train.filter(pl.col("augmented_from").is_null()) if "augmented_from" in train.columns else train
    groups = originals.group_by(group_col).agg(pl.col(column).fill_null(NO_STRATUM).first().alias("label")) \
        .sort(group_col)
    rng = np.random.default_rng(seed)
    fold_of = {}
    for label in sorted(groups["label"].unique().to_list()):
        ids = groups.filter(pl.col("label") == label)[group_col].to_numpy()
        for i, gid in enumerate(ids[rng.permutation(len(ids))]):
            fold_of[gid] = i % k
    folds = pl.DataFrame({group_col: list(fold_of), "fold": list(fold_of.values())})
    return originals.select("record_id", group_col).join(folds, on=group_col).select("record_id", "fold")


def cross_validation_folds(splits: pl.DataFrame, cfg: SplitSettings, task: Task | None = None) -> pl.DataFrame:
    """`record_id, fold` over the original train + validation records (`kfold_assignments`: stratified,
    groups kept together; the test split never in a fold), with k from `cfg.folds_for`; empty when off."""
    pool = splits.filter(pl.col("split").is_in(["train", "validation"]))
    originals = pool.filter(pl.col("augmented_from").is_null()) if "augmented_from" in pool.columns else pool
    k = cfg.folds_for(originals.height)
    if k < 2:
        return pl.DataFrame(schema={"record_id": pl.String, "fold": pl.Int64})
    return kfold_assignments(pool, k, cfg.seed, task).with_columns(pl.col("fold").cast(pl.Int64)).sort("record_id")


CONTAMINATION_BANDS = 64  # 64 bands of 2 rows: a pair at Jaccard 0.5 is a candidate with probability > 0.99


def _contamination_settings(threshold: float, dedup: DedupSettings) -> DedupSettings:
    return dedup.model_copy(update={"threshold": threshold, "bands": CONTAMINATION_BANDS, "num_perm": 128,
                                    "shingle": "word", "ngram": 3})


def _contamination_clusters(texts: pl.Series, threshold: float, dedup: DedupSettings) -> np.ndarray:
    return near_duplicate_clusters(texts, _contamination_settings(threshold, dedup)).root


class TextSource:
    """Where the contamination looks read the texts of the rows they compare: the rows' own `text` column
    (`dataset` None), or, for rows that carry `_row` (their row in `dataset`) instead, the sharded dataset,
    read shard by shard with the signatures spilled to disk (`dedup/sharded.py`): the same answers, and the
    same cache key, without every text in memory."""

    def __init__(self, dataset=None, execution: ExecutionSettings | None = None):
        self.dataset, self.execution = dataset, execution  # on `backend: ray` the shards' passes run on the workers

    def clusters(self, rows: pl.DataFrame, threshold: float, dedup: DedupSettings) -> np.ndarray:
        """Per row of `rows` (in their order), the index of its contamination cluster's first row."""
        if self.dataset is None:
            return _contamination_clusters(rows["text"], threshold, dedup)
        from finetune_pipeline.dedup.sharded import near_duplicates_sharded

        return near_duplicates_sharded(self.dataset, rows["_row"].to_numpy(),
                                       _contamination_settings(threshold, dedup), self.execution).root

    def digest(self, rows: pl.DataFrame) -> str:
        """`frame_digest` of the rows' (`record_id`, `text`, `split`), in their order."""
        if self.dataset is None:
            return frame_digest(rows.select("record_id", "text", "split"))
        columns = {"record_id": pl.String, "text": pl.String, "split": pl.String}
        return self._digest(rows.select("_row", "record_id", "split"), columns)

    def frame_digest(self, rows: pl.DataFrame) -> str:
        """`incremental.frame_digest` of `rows` with their texts in the column order of `dataset` (the frame
        `streaming.decision_frame` would have read, texts included): the same key as for that frame."""
        if self.dataset is None:
            return frame_digest(rows)
        return self._digest(rows, {c: t for c, t in self.dataset.schema.items() if c in rows.columns or c == "text"})

    def _digest(self, rows: pl.DataFrame, schema: dict) -> str:
        """`frame_digest` of `rows` as a frame of `schema`, the text column read from the dataset."""
        from finetune_pipeline.dedup.sharded import row_hashes

        hashes = row_hashes(self.dataset, rows, "text", schema)
        return digest(str(pl.Schema(schema)), rows.height,
                      hashlib.sha256(b"".join(h.tobytes() for h in hashes) if rows.height else b"").hexdigest(),
                      pl.__version__)


DOCUMENT_SOURCE_TYPES = ("txt", "md", "html", "pdf", "docx", "eml")  # sources.files.DOCUMENT_TYPES' values


def _same_key_links(keys: pl.Series) -> np.ndarray:
    """(row, first row with the same key) for every row whose key is not null (k x 2)."""
    frame = pl.DataFrame({"key": keys}).with_row_index("row").filter(pl.col("key").is_not_null())
    first = frame.select(pl.col("row").cast(pl.Int64), pl.col("row").first().over("key").cast(pl.Int64).alias("first"))
    return np.stack([first["row"].to_numpy(), first["first"].to_numpy()], axis=1).reshape(-1, 2)


def join_similar_groups(corpus: pl.DataFrame, cfg: SplitSettings, dedup: DedupSettings,
                        texts: TextSource | None = None) -> pl.DataFrame:
    """`group_id` widened so that what must not straddle two splits shares one group: by `cfg.group_by`, the
    chunks of one source document or the rows with one `group_column` value; and always original records at
    MinHash Jaccard >= `cfg.contamination_threshold` (lightly edited copies that deduplication kept).
    Augmented rows follow their source and are left as they are. `texts`: where the texts are read
    (`TextSource`; default: the `text` column)."""
    group_col = "group_id" if "group_id" in corpus.columns else "record_id"
    originals = corpus.filter(pl.col("augmented_from").is_null()) if "augmented_from" in corpus.columns else corpus
    if cfg.group_by == "column" and cfg.group_column not in corpus.columns:
        raise SplitError(f"splits.group_column {cfg.group_column!r} is not a column of the corpus; name one of "
                         f"{', '.join(sorted(corpus.columns))}")
    groups = originals[group_col]
    links = [np.empty((0, 2), dtype=np.int64)]
    if cfg.group_by == "document" and {"source_uri", "source_type"} <= set(originals.columns):
        document = pl.col("source_type").is_in(DOCUMENT_SOURCE_TYPES)
        links.append(_same_key_links(originals.select(pl.when(document).then(pl.col("source_uri")))["source_uri"]))
    elif cfg.group_by == "column":
        links.append(_same_key_links(originals[cfg.group_column]))
    if originals.height > 1:
        root = (texts or TextSource()).clusters(originals, cfg.contamination_threshold, dedup)
        moved = np.flatnonzero(root != np.arange(len(root)))
        links.append(np.stack([moved, root[moved]], axis=1).astype(np.int64))
    links.append(_same_key_links(groups))  # the rows of one group stay linked
    return _merge_linked_groups(corpus, group_col, groups, np.concatenate(links))


def _merge_linked_groups(corpus: pl.DataFrame, group_col: str, groups: pl.Series,
                         links: np.ndarray) -> pl.DataFrame:
    """`corpus` with `group_id`: `groups[i]` is item i's group, `links` pairs of linked items; each group
    joins the smallest group id of its connected component (groups no item names stay as they are).

    Only the groups of components with more than one item are renamed, and they reach the corpus as one
    column's values replaced (`replace` with that small mapping): a join of the corpus would copy every
    column of it (about 340 MB of a 911k-record frame's columns, measured, for no link at all)."""
    component = clusters_from_pairs(len(groups), np.asarray(links, dtype=np.int64).reshape(-1, 2))
    shared = np.flatnonzero(np.bincount(component, minlength=len(groups))[component] > 1)
    joined = (pl.DataFrame({"_g": groups.cast(pl.String).gather(shared), "_c": component[shared]},
                           schema={"_g": pl.String, "_c": pl.Int64})
              .with_columns(pl.col("_g").min().over("_c").alias("_joined"))
              .filter(pl.col("_joined") != pl.col("_g")).unique("_g"))
    return corpus.with_columns(pl.col(group_col).cast(pl.String).replace(joined["_g"], joined["_joined"])
                               .alias("group_id"))


# What computes a split and its contamination check.
SPLIT_CODE = ("splits.py", "tasks", "records.py", "dedup/minhash.py", "dedup/identifiers.py", "dedup/sharded.py",
              "execution.py")


def cross_split_near_duplicates(splits: pl.DataFrame, threshold: float, dedup: DedupSettings,
                                cache: ResultCache | None = None, texts: TextSource | None = None) -> pl.DataFrame:
    """Clusters of records (all rows, augmented included) at MinHash Jaccard >= `threshold` that appear in
    more than one split: `cluster` (its first record id), `record_ids`, `splits`. Empty when clean.

    `cache`: the answer for these very rows (ids, texts and splits, in this order), threshold and code is
    read from there when it holds it, and stored there otherwise. The split's last look and the blocking
    check ask the same question of the same rows; the second asker gets the first one's answer.
    `texts`: where the texts are read (`TextSource`; default: the `text` column)."""
    texts = texts or TextSource()
    schema = {"cluster": pl.String, "record_ids": pl.List(pl.String), "splits": pl.List(pl.String)}
    if splits.height < 2:
        return pl.DataFrame(schema=schema)
    if cache is not None:
        key = digest(texts.digest(splits),
                     _contamination_settings(threshold, dedup).model_dump(), code_version(SPLIT_CODE))
        if (hit := cache.load(key)) is not None:
            return hit[0]
    root = texts.clusters(splits, threshold, dedup)
    ids = splits["record_id"]
    frame = splits.select("record_id", "split").with_columns(pl.Series("cluster", ids.gather(root)))
    crossing = (frame.group_by("cluster").agg(pl.col("record_id").sort().alias("record_ids"),
                                              pl.col("split").unique().sort().alias("splits"))
                .filter(pl.col("splits").list.len() > 1).sort("cluster").select(list(schema)))
    if cache is not None:
        cache.store(key, crossing)
    return crossing


MAX_SPLIT_ROUNDS = 4


def contamination_free_splits(corpus: pl.DataFrame, cfg: SplitSettings, dedup: DedupSettings,
                              task: Task | None = None, max_rounds: int = MAX_SPLIT_ROUNDS,
                              check_cache: ResultCache | None = None, texts: TextSource | None = None
                              ) -> tuple[pl.DataFrame, int]:
    """`assign_splits` of `join_similar_groups`, then what the contamination check looks for
    (`cross_split_near_duplicates` on the assigned rows): a cluster found in two splits has its groups
    joined, and the split is made again, until none is found or after `max_rounds` splits (the check then
    fails with the clusters named). Returns the splits and how many clusters were joined after a split.

    Why a second look: LSH pairs a document only with the next `minhash.LSH_WINDOW` members of each bucket,
    so which near copies it finds depends on the other documents and their order. The originals (what the
    groups are made of) and every row in split order (what the check reads, augmented rows included) can
    give different pairs: on 100,000 templated tickets the check found 3 clusters the groups had missed.
    `check_cache`: where each look's answer is stored (see `cross_split_near_duplicates`), so the check of
    the split returned reads the last look's instead of computing it again. `texts`: where the looks read the
    texts (`TextSource`; default: the `text` column)."""
    grouped = join_similar_groups(corpus, cfg, dedup, texts)
    # what the rounds read (each split a copy of it): the ids, groups, strata and where the texts are
    task = task or task_named(None)
    grouped = grouped.select(c for c in dict.fromkeys(("record_id", "group_id", "augmented_from", "_row", "text",
                                                       task.stratify_column(grouped))) if c in grouped.columns)
    joined = 0
    for _ in range(max_rounds):
        splits = assign_splits(grouped, cfg, task)
        crossing = cross_split_near_duplicates(splits, cfg.contamination_threshold, dedup, check_cache, texts)
        if crossing.is_empty():
            break
        grouped = _join_groups(grouped, splits, crossing)
        joined += crossing.height
    return splits, joined


ASSIGNMENT_SCHEMA = {"record_id": pl.String, "split": pl.String, "group_id": pl.String}


def split_assignment(corpus: pl.DataFrame, cfg: SplitSettings, dedup: DedupSettings, task: Task | None = None,
                     max_rounds: int = MAX_SPLIT_ROUNDS, check_cache: ResultCache | None = None,
                     texts: TextSource | None = None) -> tuple[pl.DataFrame, int]:
    """The split of the original records (rows with no `augmented_from`), decided once, before augmentation:
    `record_id, split, group_id` by `contamination_free_splits` (near copies grouped, the second look), sorted
    by record id, and how many clusters were joined after a split."""
    if "augmented_from" in corpus.columns:
        corpus = corpus.filter(pl.col("augmented_from").is_null())
    else:
        corpus = corpus.with_columns(pl.lit(None, pl.String).alias("augmented_from"))
    splits, joined = contamination_free_splits(corpus, cfg, dedup, task, max_rounds, check_cache, texts)
    return splits.select(list(ASSIGNMENT_SCHEMA)).cast(ASSIGNMENT_SCHEMA).sort("record_id"), joined


def check_assignment_covers(corpus: pl.DataFrame, assignment: pl.DataFrame, name: str = "the corpus") -> None:
    """Raise `SplitError` unless `assignment` holds each original record of `corpus` (no `augmented_from`)
    exactly once and nothing else: an assignment made for other data is never applied."""
    originals = corpus.filter(pl.col("augmented_from").is_null()) if "augmented_from" in corpus.columns else corpus
    # joins on the id columns, not Python sets of every id (a few hundred MiB at 1M records)
    ids, assigned = originals.select("record_id").unique(), assignment.select("record_id").unique()
    missing = ids.join(assigned, on="record_id", how="anti")["record_id"].sort()
    extra = assigned.join(ids, on="record_id", how="anti")["record_id"].sort()
    twice = assignment.height - assigned.height
    problems = []
    if missing.len():
        problems.append(f"{missing.len()} record(s) of {name} without a split (e.g. {', '.join(missing.head(3))})")
    if extra.len():
        problems.append(f"{extra.len()} assigned record(s) not in {name} (e.g. {', '.join(extra.head(3))})")
    if twice:
        problems.append(f"{twice} record(s) assigned twice")
    if problems:
        raise SplitError(f"the split assignment is not that of {name}: {'; '.join(problems)}. It was made for other "
                         "data: materialize split_assignment again (and what follows it)")


def apply_split_assignment(corpus: pl.DataFrame, assignment: pl.DataFrame) -> pl.DataFrame:
    """`corpus` with the assignment's `split` and `group_id`: an original record by its id, an augmented row
    (`augmented_from`) those of its source; sorted by split, then record id. Decides nothing: a record the
    assignment moved keeps its augmented rows with it, for the leakage check to see."""
    check_assignment_covers(corpus, assignment)
    source = pl.coalesce("augmented_from", "record_id") if "augmented_from" in corpus.columns else pl.col("record_id")
    placed = assignment.select(pl.col("record_id").alias("_source"), pl.col("split").alias("_split"),
                               pl.col("group_id").alias("_group"))
    out = (corpus.drop("split", strict=False).with_columns(source.alias("_source"))
           .join(placed, on="_source", how="left")
           .with_columns(pl.col("_group").alias("group_id"), pl.col("_split").alias("split"))
           .drop("_source", "_split", "_group"))
    # in split order; a value that is no split (a stored assignment edited by hand) sorts last, for the check
    order = pl.col("split").replace_strict({name: i for i, name in enumerate(SPLITS)}, default=len(SPLITS),
                                           return_dtype=pl.Int8)
    return out.sort(order, "record_id")


def _join_groups(corpus: pl.DataFrame, splits: pl.DataFrame, crossing: pl.DataFrame) -> pl.DataFrame:
    """`corpus` with the groups of each `crossing` cluster's records (an augmented row: its source's group)
    joined into the smallest of their ids."""
    source = pl.coalesce("augmented_from", "record_id") if "augmented_from" in splits.columns else pl.col("record_id")
    group_of = splits.select("record_id", source.alias("_source")).join(
        splits.select(pl.col("record_id").alias("_source"), "group_id"), on="_source", how="left") \
        .select("record_id", "group_id")
    groups = corpus["group_id"].unique().sort()
    index = group_of.join(pl.DataFrame({"group_id": groups}).with_row_index("_i"), on="group_id", how="left") \
        .select("record_id", pl.col("_i").cast(pl.Int64))
    ids = crossing.select(pl.col("record_ids").list.slice(0, pl.col("record_ids").list.len() - 1).alias("a"),
                          pl.col("record_ids").list.slice(1).alias("b")).explode("a", "b").drop_nulls()
    pairs = (ids.join(index.rename({"record_id": "a", "_i": "i"}), on="a", how="left", maintain_order="left")
             .join(index.rename({"record_id": "b", "_i": "j"}), on="b", how="left", maintain_order="left"))
    return _merge_linked_groups(corpus, "group_id", groups,
                                np.stack([pairs["i"].to_numpy(), pairs["j"].to_numpy()], axis=1).reshape(-1, 2))


def split_key(corpus: pl.DataFrame, cfg: SplitSettings, dedup: DedupSettings, task: Task,
              texts: TextSource | None = None) -> str:
    """What decides `split_assignment` of `corpus`: every value of the corpus in its order, the split
    settings, the near-copy detector's settings, the task and the code that computes them. `texts`: where
    the rows' texts are read (`TextSource`; default: the `text` column); the key is the same either way."""
    return digest((texts or TextSource()).frame_digest(corpus), cfg.model_dump(), _contamination_settings(cfg.contamination_threshold,
                  dedup).model_dump(), task.name, code_version(SPLIT_CODE))
