"""Deduplication on small constructed cases: exact, near, not near, transitive clusters, the keep rule
across runs, semantic duplicates, and agreement with the datasketch library."""

import numpy as np
import polars as pl
import pytest

from finetune_pipeline.dedup import ClusterSummary, deduplicate, minhash
from finetune_pipeline.dedup.synthetic import near_duplicate_benchmark, pair_scores
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import Settings

BASE = ("the replacement charger I ordered last week arrived today but it does not fit the laptop model "
        "listed on the product page and I would like to return it for a full refund as soon as possible")
OTHER = ("my account is locked after three failed password attempts and the reset email never arrives "
         "even though I checked the spam folder twice today and yesterday")


def _row(uri, text, ingested_at="2026-11-01T00:00:00+00:00"):
    return {"record_id": make_record_id(uri, "elements 0-0"), "text": text, "source_uri": uri, "source_type": "txt",
            "locator": "elements 0-0", "content_sha256": sha256_text(text), "ingested_at": ingested_at}


def _corpus(texts):
    return corpus_frame([_row(f"raw/{i:02d}.txt", t) for i, t in enumerate(texts)])


def _accounted(corpus, result):
    assert result.kept.height + result.rejected.height == corpus.height
    assert result.rejected["duplicate_of"].null_count() == 0
    assert set(result.rejected["duplicate_of"]) <= set(result.kept["record_id"])  # always names a kept record
    assert result.kept["group_id"].to_list() == result.kept["record_id"].to_list()


def test_exact_duplicates_ignore_case_and_whitespace_and_keep_the_first_source():
    corpus = _corpus([BASE, BASE.upper().replace(" ", "   "), "a different ticket about a missing parcel entirely"])
    result = deduplicate(corpus, Settings())
    assert result.kept["source_uri"].to_list() == ["raw/00.txt", "raw/02.txt"]
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "exact_duplicate" and reject["duplicate_of"] == corpus["record_id"][0]
    _accounted(corpus, result)


def test_near_duplicates_are_clustered_and_unrelated_text_kept():
    near = BASE.replace("last week", "two weeks ago")
    nearer = near.replace("full refund", "complete refund")  # near `near`, a bit further from BASE
    corpus = _corpus([BASE, near, nearer, OTHER])
    result = deduplicate(corpus, Settings())
    ids = corpus["record_id"].to_list()
    assert sorted(result.kept["record_id"]) == sorted([ids[0], ids[3]])
    near_rejects = result.rejected.filter(pl.col("reason") == "near_duplicate")
    assert sorted(near_rejects["record_id"]) == sorted(ids[1:3])
    assert set(near_rejects["duplicate_of"]) == {ids[0]}
    assert "estimated Jaccard" in near_rejects["detail"][0]
    _accounted(corpus, result)
    assert result.stats.largest_clusters[0] == ClusterSummary(
        group_id=ids[0], size=3, exact_duplicate=0, near_duplicate=2, semantic_duplicate=0, preview=BASE[:120])
    assert result.stats.cluster_sizes["3"] == 1 and sum(result.stats.near_similarity_histogram.values()) >= 2


def test_not_near_texts_sharing_a_sentence_stay():
    shared = "I would like to return it for a full refund as soon as possible. "
    corpus = _corpus([shared + BASE[:60] + " and the box was damaged on arrival by the courier",
                      shared + OTHER, shared + "the invoice for march lists a plan I never subscribed to at all"])
    result = deduplicate(corpus, Settings())
    assert result.kept.height == 3 and result.rejected.is_empty()


def test_transitive_chain_is_one_cluster_even_when_its_ends_are_not_similar():
    words = (BASE + " " + OTHER).split()
    a, b, c = list(words), list(words), list(words)
    b[10], b[30] = c[10], c[30] = "yesterday", "screen"  # two words changed in A's first half
    c[45], c[60] = "blocked", "inbox"  # and two more in its second half
    texts = [" ".join(t) for t in (a, b, c)]
    sig, _ = minhash.minhash_signatures(texts, 3, 128)
    ab, bc, ac = minhash.estimated_jaccard(sig, np.array([[0, 1], [1, 2], [0, 2]]))
    assert ab >= 0.7 and bc >= 0.7 and ac < 0.7  # the construction: A~B, B~C, A !~ C
    corpus = _corpus(texts)
    result = deduplicate(corpus, Settings())
    assert result.kept["record_id"].to_list() == [corpus["record_id"][0]]
    assert set(result.rejected["duplicate_of"]) == {corpus["record_id"][0]}


def test_a_later_arriving_duplicate_is_rejected_and_the_kept_record_keeps_its_group_across_runs():
    first_run = corpus_frame([_row("raw/zz_old.txt", BASE, "2026-11-01T00:00:00+00:00"),
                              _row("raw/b.txt", OTHER, "2026-11-01T00:00:00+00:00")])
    before = deduplicate(first_run, Settings())
    old_id = first_run["record_id"][0]
    # Next run: a new source whose name sorts first brings an exact and a near copy of the kept record.
    second_run = pl.concat([first_run, corpus_frame([
        _row("raw/aa_new.txt", BASE.replace("last week", "two weeks ago"), "2026-11-20T00:00:00+00:00"),
        _row("raw/ab_new.txt", BASE.upper(), "2026-11-20T00:00:00+00:00")])])
    after = deduplicate(second_run, Settings())
    assert after.kept["record_id"].to_list() == before.kept["record_id"].to_list()
    group = dict(zip(after.kept["record_id"], after.kept["group_id"]))
    assert group[old_id] == dict(zip(before.kept["record_id"], before.kept["group_id"]))[old_id] == old_id
    assert sorted(after.rejected["reason"]) == ["exact_duplicate", "near_duplicate"]
    assert set(after.rejected["duplicate_of"]) == {old_id}
    _accounted(second_run, after)


def test_a_copy_of_a_removed_record_names_the_record_finally_kept():
    near = BASE.replace("last week", "two weeks ago")
    corpus = _corpus([BASE, near, near.upper()])  # 02 = exact copy of 01, which is a near copy of 00
    result = deduplicate(corpus, Settings())
    exact = result.rejected.filter(pl.col("reason") == "exact_duplicate").row(0, named=True)
    assert exact["duplicate_of"] == corpus["record_id"][0]
    assert corpus["record_id"][1] in exact["detail"]
    assert result.stats.largest_clusters[0].size == 3


def test_near_duplicates_can_be_switched_off():
    corpus = _corpus([BASE, BASE.replace("last week", "two weeks ago")])
    assert deduplicate(corpus, Settings.model_validate({"dedup": {"near_duplicates": False}})).kept.height == 2


def test_character_shingles_find_a_near_duplicate_of_a_short_text():
    short = "Refund please, the charger does not fit my laptop."
    corpus = _corpus([short, short.replace("does not", "doesn't"), "Where is my parcel? Tracking shows nothing new."])
    settings = Settings.model_validate({"dedup": {"shingle": "char", "ngram": 5}})
    result = deduplicate(corpus, settings)
    assert result.rejected["reason"].to_list() == ["near_duplicate"]


def test_empty_and_tiny_texts_do_not_cluster_together():
    corpus = _corpus(["", "ok", "fine"])
    result = deduplicate(corpus, Settings())
    assert result.kept.height == 3


def test_signatures_equal_datasketch_given_the_same_shingle_hashes():
    datasketch = pytest.importorskip("datasketch")
    texts = near_duplicate_benchmark(40, seed=5).texts + ["two words", "x"]
    signatures, counts = minhash.minhash_signatures(texts, 3, 64)
    hashes, _ = minhash.shingle_hashes(texts, 3)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(len(texts)):
        reference = datasketch.MinHash(num_perm=64, hashfunc=int)
        reference.update_batch(hashes[starts[i]:starts[i + 1]].tolist())
        assert (reference.hashvalues == signatures[i]).all()


def _datasketch_pairs(datasketch, shingle_sets, cfg, hashfunc=None) -> np.ndarray:
    """The usual datasketch recipe: MinHash per text, MinHashLSH with our bands, candidates verified."""
    lsh = datasketch.MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.num_perm // cfg.bands))
    sketches = []
    for i, shingles in enumerate(shingle_sets):
        sketch = datasketch.MinHash(num_perm=cfg.num_perm, **({"hashfunc": hashfunc} if hashfunc else {}))
        sketch.update_batch(shingles)
        lsh.insert(i, sketch)
        sketches.append(sketch)
    return np.array(sorted((i, j) for i, s in enumerate(sketches) for j in lsh.query(s)
                           if j > i and s.jaccard(sketches[j]) >= cfg.threshold)).reshape(-1, 2)


def test_same_verified_pairs_as_datasketch_given_the_same_shingle_hashes():
    datasketch = pytest.importorskip("datasketch")
    texts = near_duplicate_benchmark(600, seed=7).texts
    cfg = Settings().dedup
    hashes, counts = minhash.shingle_hashes(texts, cfg.ngram)
    starts = np.concatenate([[0], np.cumsum(counts)])
    theirs = _datasketch_pairs(datasketch, [hashes[starts[i]:starts[i + 1]].tolist() for i in range(len(texts))],
                               cfg, hashfunc=int)
    signatures, _ = minhash.minhash_signatures(texts, cfg.ngram, cfg.num_perm)
    candidates = minhash.candidate_pairs(minhash.band_keys(signatures, cfg.bands))
    ours = candidates[minhash.estimated_jaccard(signatures, candidates) >= cfg.threshold]
    assert len(theirs) > 100 and ours.tolist() == theirs.tolist()


def test_f1_within_0_01_of_datasketch_with_its_own_hashing_on_a_generated_benchmark():
    datasketch = pytest.importorskip("datasketch")
    bench = near_duplicate_benchmark(4000, seed=11)  # smaller sets: F1 differences of 0.01 from hashing noise
    cfg = Settings().dedup
    ours = minhash.near_duplicate_clusters(bench.texts, cfg)
    ngrams = []
    for text in bench.texts:
        words = text.lower().split()
        ngrams.append({" ".join(words[k:k + cfg.ngram]).encode() for k in range(len(words) - cfg.ngram + 1)})
    pairs = _datasketch_pairs(datasketch, ngrams, cfg)  # sha1 shingle hashes: estimates differ by noise only
    theirs = minhash.clusters_from_pairs(len(bench.texts), pairs)
    ours_f1, theirs_f1 = pair_scores(ours.root, bench.family)["f1"], pair_scores(theirs, bench.family)["f1"]
    assert ours_f1 >= 0.95 and abs(ours_f1 - theirs_f1) <= 0.01
    found = sum(ours.root[i] == ours.root[j] for i, j in pairs)
    assert found >= 0.95 * len(pairs)  # datasketch's pairs, in one of our clusters too


def test_benchmark_scores_count_pairs():
    scores = pair_scores(np.array([0, 0, 0, 3]), np.array([0, 0, 2, 2]))
    assert (scores["true_pairs"], scores["predicted_pairs"], scores["true_positive_pairs"]) == (2, 3, 1)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)


PARAPHRASE = ("My replacement charger arrived today but it does not fit my laptop, so I want to return it for a "
              "full refund.")
PARAPHRASED = ("The replacement charger I got today doesn't fit my laptop; I'd like to send it back and get my "
               "money refunded.")


@pytest.mark.parametrize("semantic", [False, True])
def test_semantic_duplicates_with_the_shipped_minilm(semantic):
    corpus = _corpus([PARAPHRASE, PARAPHRASED, OTHER])
    result = deduplicate(corpus, Settings.model_validate({"dedup": {"semantic": semantic}}))
    if not semantic:
        assert result.kept.height == 3 and result.stats.semantic_nearest_histogram == {}
        return
    assert result.kept["record_id"].to_list() == [corpus["record_id"][0], corpus["record_id"][2]]
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "semantic_duplicate" and reject["duplicate_of"] == corpus["record_id"][0]
    assert "cosine" in reject["detail"] and sum(result.stats.semantic_nearest_histogram.values()) == 3


def test_asset_metadata_shows_clusters_and_a_similarity_histogram(tmp_path):
    import dagster as dg

    from finetune_pipeline.defs.cleaning import deduplicated_corpus
    from finetune_pipeline.defs.resources import PipelineResource, RayCluster

    corpus = _corpus([BASE, BASE.replace("last week", "two weeks ago"), BASE.upper(), OTHER + " | pipe"])
    context = dg.build_asset_context(instance=dg.DagsterInstance.ephemeral())
    pipeline = PipelineResource(data_dir=str(tmp_path))
    # the step yields its output first, then its checks' results (not evaluated here: no stored rejects)
    from finetune_pipeline import shards

    shards.write_dataset(corpus, tmp_path / "cleaned")  # the stage reads its input as the IO manager stores it
    stored = shards.open_dataset(tmp_path / "cleaned")
    result = next(iter(deduplicated_corpus(context, pipeline, RayCluster(pipeline=pipeline), stored))).value
    meta = context.get_output_metadata("result")
    assert result.kept.height == 2 and meta["rows_rejected"] == 2
    assert (meta["exact_duplicates"], meta["near_duplicates"], meta["clusters_with_duplicates"]) == (1, 1, 1)
    largest = meta["largest_clusters"].value
    assert f"| {corpus['record_id'][0]} | 3 | 1 | 1 | 0 | {BASE[:120]} |" in largest
    histogram = meta["near_similarity_histogram"].value
    assert "estimated Jaccard from" in histogram and "█" in histogram


def test_connected_components_by_label_propagation_equal_scipys():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(3)
    n = 3000
    chain = np.stack([np.arange(0, 500), np.arange(1, 501)], axis=1)  # a long path: many propagation rounds
    pairs = np.concatenate([chain, rng.integers(600, n, size=(1500, 2))])
    ours = minhash.clusters_from_pairs(n, pairs)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n)
    np.minimum.at(first, labels, np.arange(n))
    assert ours.tolist() == first[labels].tolist() and (ours[:501] == 0).all()


# Real package synopses (apt-cache dumpavail) of 8-12 words: one edited word changes 3 of their 6-10 word
# 3-grams (Jaccard about 0.45), but 1 of their 8-12 words (0.8).
SYNOPSES = ["Python 3 bindings for SLEPc 3.18 libraries (real numbers)",
            "Transitional dummy package for the old name of this library",
            "Tiny and efficient software defined radio receiver - utilities",
            "mathematical tool suite for problems on linear spaces -- user guide"]
EDITED = ["Python 3 bindings for the SLEPc 3.18 libraries (real numbers)",  # insertion
          "Transitional dummy package for the old name this library",  # deletion
          "Tiny and efficient software defined radio receiver - tools",  # substitution
          "mathematical tool suite for on problems linear spaces -- user guide"]  # swap


def test_short_texts_with_one_edited_word_are_near_duplicates():
    corpus = _corpus(SYNOPSES + EDITED)
    result = deduplicate(corpus, Settings())
    near = result.rejected.filter(pl.col("reason") == "near_duplicate")
    ids = corpus["record_id"].to_list()
    assert dict(zip(near["record_id"], near["duplicate_of"])) == {ids[4 + k]: ids[k] for k in range(4)}
    assert all(float(d.split("estimated Jaccard ")[1].rstrip(")")) >= 0.7 for d in near["detail"])
    _accounted(corpus, result)
    word_3_grams = deduplicate(corpus, Settings.model_validate({"dedup": {"short_text_words": 0}}))
    assert word_3_grams.rejected.height <= 1  # what word 3-grams alone find


def test_short_texts_that_name_different_things_are_never_merged():
    texts = ["Python 3 bindings for SLEPc 3.18 libraries (real numbers)",
             "Python 3 bindings for SLEPc 3.19 libraries (real numbers)",  # another version
             "rename Debian packages to full package names with dpkg",
             "rename Debian packages to full package names with dpkg-name",  # another command
             "Extensive tutorial and documentation about C++ - PDF output",
             "Extensive tutorial and documentation about C++ - output",  # near both: a chain
             "Extensive tutorial and documentation about C++ - DVI output"]
    result = deduplicate(_corpus(texts), Settings())
    kept = set(result.kept["text"])
    assert {texts[0], texts[1], texts[2], texts[3], texts[4], texts[6]} <= kept  # PDF and DVI: two clusters
    assert result.rejected["record_id"].to_list() == [_corpus(texts)["record_id"][5]]


def test_distinguishing_tokens_are_identifiers_numbers_and_names():
    from finetune_pipeline.dedup.identifiers import distinguishing_tokens, name_different_things

    assert distinguishing_tokens("What does the `ls` tool do with 3.18 files in Paris, or dpkg-name? Fine.") == \
        {"ls", "3.18", "paris", "dpkg-name"}
    assert name_different_things("What does ucf do?", "What does ucfr do?")
    assert not name_different_things("leaves falling in the park", "leaves faling in the park")  # one-sided


def test_the_kind_says_what_near_dedup_compares_and_how_records_group(monkeypatch):
    """The stage asks the kind (`Task.near_duplicate_texts`, `Task.duplicate_groups`) and tests no column: a
    kind whose records share a prompt on purpose (preference pairs) compares no whole record, rejects none of
    its near copies, and groups them by prompt."""
    from finetune_pipeline.dedup import stage
    from finetune_pipeline.records import StageResult
    from finetune_pipeline.tasks import task_named

    class PromptGroups(type(task_named("classification"))):
        def near_duplicate_texts(self, kept):
            return None

        def duplicate_groups(self, kept, dedup):
            return StageResult(kept.with_columns(pl.col("text").str.slice(0, 20).alias("group_id")), stats=None)

    near = BASE.replace("last week", "two weeks ago")
    corpus = _corpus([BASE, near, OTHER])
    assert deduplicate(corpus, Settings()).kept.height == 2  # classification: `near` is a near duplicate
    monkeypatch.setattr(stage, "task_for", lambda settings: PromptGroups())
    result = deduplicate(corpus, Settings())
    assert result.kept.height == 3 and result.rejected.is_empty()
    assert result.kept["group_id"].to_list() == [BASE[:20], near[:20], OTHER[:20]]
    assert result.stats.near_duplicates == 0 and result.stats.prompts is None
