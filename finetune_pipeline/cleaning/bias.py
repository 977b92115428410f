"""Bias report: how often common demographic term groups are mentioned, per label.

A record mentions a group when it contains one of the group's words (whole words, case-insensitive).
The report counts records, not words, so one long text cannot dominate. The word lists are short,
English, and leave out ambiguous words ("old" account, "miss" a parcel); they show representation in
the data, they do not judge any single text.

Warning rule (`BiasSettings`, finetune.yaml `bias`), per dimension (gender, age, ...):
- dominance: over the whole corpus, one group holds more than `max_group_share` of the dimension's
  mentions (when the dimension has at least `min_mentions`);
- label skew: within one label (with at least `min_mentions` of the dimension), a group's share of the
  dimension's mentions differs from its corpus-wide share by more than a factor `max_label_skew`.
"""

from __future__ import annotations

import re

import polars as pl

from finetune_pipeline.settings import BiasSettings

TERM_GROUPS: dict[str, dict[str, list[str]]] = {
    "gender": {
        "female": ["she", "her", "hers", "herself", "woman", "women", "girl", "girls", "lady", "ladies", "mother",
                   "mom", "mum", "wife", "daughter", "sister", "aunt", "niece", "grandmother", "grandma",
                   "girlfriend", "mrs", "ms", "madam", "female", "feminine"],
        "male": ["he", "him", "his", "himself", "man", "men", "boy", "boys", "gentleman", "gentlemen", "father",
                 "dad", "husband", "son", "brother", "uncle", "nephew", "grandfather", "grandpa", "boyfriend",
                 "mr", "sir", "male", "masculine"],
    },
    "age": {
        "young": ["young", "youth", "teen", "teens", "teenager", "teenagers", "kid", "kids", "child", "children",
                  "student", "students", "millennial", "millennials", "gen z", "toddler", "baby"],
        "older": ["elderly", "senior", "seniors", "retired", "retiree", "pensioner", "pensioners",
                  "grandparent", "grandparents", "boomer", "boomers", "aged"],
    },
    "nationality": {
        "north_american": ["american", "americans", "canadian", "canadians", "mexican", "mexicans"],
        "european": ["british", "english", "scottish", "irish", "welsh", "german", "germans", "french", "italian",
                     "italians", "spanish", "portuguese", "dutch", "swiss", "swedish", "norwegian", "danish",
                     "finnish", "polish", "greek", "russian", "russians", "ukrainian", "european", "europeans"],
        "asian": ["chinese", "japanese", "korean", "koreans", "indian", "indians", "pakistani", "bangladeshi",
                  "vietnamese", "thai", "filipino", "indonesian", "asian", "asians"],
        "african": ["african", "africans", "nigerian", "nigerians", "kenyan", "ethiopian", "egyptian",
                    "south african", "ghanaian"],
        "latin_american": ["brazilian", "brazilians", "argentinian", "argentine", "colombian", "chilean",
                           "peruvian", "venezuelan", "cuban", "latino", "latina", "latinx", "hispanic"],
        "middle_eastern": ["arab", "arabs", "arabic", "turkish", "iranian", "iraqi", "syrian", "saudi",
                           "israeli", "palestinian", "lebanese"],
        "oceanian": ["australian", "australians", "new zealander", "kiwi", "kiwis"],
    },
    "religion": {
        "christian": ["christian", "christians", "catholic", "catholics", "protestant", "church"],
        "muslim": ["muslim", "muslims", "islam", "islamic", "mosque"],
        "jewish": ["jewish", "jew", "jews", "judaism", "synagogue"],
        "hindu": ["hindu", "hindus", "hinduism"],
        "buddhist": ["buddhist", "buddhists", "buddhism"],
    },
}
# The rule: a term not preceded by a word character or "<", nor followed by one or ">" (a redaction
# placeholder such as <PERSON> is not a mention).
_PATTERNS = {(dim, group): re.compile(r"(?<![\w<])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w>])", re.I)
             for dim, groups in TERM_GROUPS.items() for group, words in groups.items()}
assert all(re.fullmatch(r"[a-z ]+", w) for groups in TERM_GROUPS.values() for ws in groups.values() for w in ws)
# The same rule for ASCII texts, where a word character is [A-Za-z0-9_], in the Rust regex syntax polars runs
# (no look-around: the neighbours are matched instead, which changes nothing for "is there a match").
_ASCII_PATTERNS = {(dim, group): "(?i)(?:^|[^A-Za-z0-9_<])(?:" + "|".join(words) + ")(?:$|[^A-Za-z0-9_>])"
                   for dim, groups in TERM_GROUPS.items() for group, words in groups.items()}
ALL_LABELS = "(all)"


def mentions_frame(corpus: pl.DataFrame) -> pl.DataFrame:
    """One boolean column per `dimension/group`: does the record's text mention the group.

    ASCII texts are searched by polars (vectorised: 0.9 s instead of 15 s for 100k tickets); any other
    text by Python's `re` with Unicode word characters, so both follow the one rule above (`test_bias.py`
    compares them on generated texts)."""
    texts = corpus["text"].fill_null("")
    unicode_rows = texts.str.contains(r"[^\x00-\x7F]").arg_true().to_list()
    unicode_texts = texts.gather(unicode_rows).to_list()
    columns = {}
    for key, pattern in _PATTERNS.items():
        found = texts.str.contains(_ASCII_PATTERNS[key]).to_list()
        for row, text in zip(unicode_rows, unicode_texts):
            found[row] = bool(pattern.search(text))
        columns[f"{key[0]}/{key[1]}"] = pl.Series(found, dtype=pl.Boolean)
    return pl.DataFrame({"label": corpus["label"].fill_null("(none)"), **columns})


def dataset_mentions(dataset, originals_only: bool = True) -> pl.DataFrame:
    """`mentions_frame` of a sharded dataset's records (with `originals_only`, not the augmented copies: rows
    whose `augmented_from` is set), read one shard's text and label at a time: every record's flags, never
    its text in memory whole."""
    augmented = originals_only and "augmented_from" in dataset.columns
    parts = []
    for shard in dataset.iter_shards(columns=["text", "label", *(["augmented_from"] if augmented else [])]):
        parts.append(mentions_frame(shard.filter(pl.col("augmented_from").is_null()) if augmented else shard))
    return pl.concat(parts) if parts else mentions_frame(pl.DataFrame(schema={"text": pl.String, "label": pl.String}))


def bias_report(corpus: pl.DataFrame | None, flags: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per label (and `(all)`) and group: records, records mentioning the group, that as a share of the
    label's records, and the group's share of its dimension's mentions in that label. `flags`: the
    `mentions_frame` of the corpus when it was made already (`dataset_mentions`); `corpus` is then not read."""
    flags = mentions_frame(corpus) if flags is None else flags
    labels = [ALL_LABELS, *sorted(flags["label"].unique().to_list())]
    rows = []
    for label in labels:
        part = flags if label == ALL_LABELS else flags.filter(pl.col("label") == label)
        for dim, groups in TERM_GROUPS.items():
            counts = {group: int(part[f"{dim}/{group}"].sum()) for group in groups}
            total = sum(counts.values())
            for group, n in counts.items():
                rows.append({"label": label, "dimension": dim, "group": group, "records": part.height,
                             "mentions": n, "share_of_records": n / part.height if part.height else 0.0,
                             "share_of_dimension": n / total if total else 0.0, "dimension_mentions": total})
    return pl.DataFrame(rows, schema={"label": pl.String, "dimension": pl.String, "group": pl.String,
                                      "records": pl.Int64, "mentions": pl.Int64, "share_of_records": pl.Float64,
                                      "share_of_dimension": pl.Float64, "dimension_mentions": pl.Int64})


def bias_findings(report: pl.DataFrame, settings: BiasSettings) -> list[str]:
    """Warnings by the rule in the module docstring; empty when nothing is far over- or under-represented."""
    findings = []
    overall = report.filter(pl.col("label") == ALL_LABELS)
    corpus_share = {(r["dimension"], r["group"]): r["share_of_dimension"] for r in overall.iter_rows(named=True)}
    for r in overall.iter_rows(named=True):
        if r["dimension_mentions"] >= settings.min_mentions and r["share_of_dimension"] > settings.max_group_share:
            findings.append(f"{r['dimension']}: '{r['group']}' holds {r['share_of_dimension']:.0%} of "
                            f"{r['dimension_mentions']} mentions (> bias.max_group_share={settings.max_group_share})")
    for r in report.filter(pl.col("label") != ALL_LABELS).iter_rows(named=True):
        base = corpus_share[(r["dimension"], r["group"])]
        if r["dimension_mentions"] < settings.min_mentions or base == 0:
            continue
        ratio = r["share_of_dimension"] / base
        if ratio > settings.max_label_skew or ratio < 1 / settings.max_label_skew:
            findings.append(f"{r['dimension']}: '{r['group']}' is {r['share_of_dimension']:.0%} of mentions in label "
                            f"'{r['label']}' vs {base:.0%} overall (factor {ratio:.2f}, bias.max_label_skew="
                            f"{settings.max_label_skew})")
    return findings
