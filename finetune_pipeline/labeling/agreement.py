"""Inter-annotator agreement: how far the people labeling the data agree, overall, per label and per annotator.

- Krippendorff's alpha (nominal), from the `krippendorff` package: any number of annotators per record,
  missing labels allowed.
- Fleiss' kappa, written here because the common implementations (statsmodels) require the same number
  of annotators on every record; with a varying number we use the per-record agreement
  P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), which is Fleiss (1971) exactly when n_i is constant
  (tested against the worked example of Fleiss' paper). Per label: the same kappa on the label-vs-rest table.
- Cohen's kappa (scikit-learn) averaged over annotator pairs who labeled at least `min_common` records together.
- Per annotator: accuracy and Cohen's kappa against the final label (expert or consensus), on records
  with at least two annotators. The annotator's own vote is part of that consensus, so this reads high
  for a small crowd; it ranks annotators, it does not measure them absolutely.

Only records labeled by at least two annotators enter the figures. Every figure is None when undefined
(e.g. one annotator, or one label only). Returns plain dicts (JSON-ready).
"""

from __future__ import annotations

import math
from itertools import combinations

import krippendorff
import numpy as np
import polars as pl


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an (items x categories) table of label counts; items may have different numbers of
    annotators (each at least two)."""
    counts = np.asarray(counts, dtype=float)
    n_i = counts.sum(axis=1)
    counts, n_i = counts[n_i >= 2], n_i[n_i >= 2]
    if len(counts) == 0:
        return None
    p_i = (counts * (counts - 1)).sum(axis=1) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float((p_j ** 2).sum())
    if p_e >= 1.0:
        return None  # one category only: agreement is not defined
    return (float(p_i.mean()) - p_e) / (1.0 - p_e)


def krippendorff_alpha(reliability: np.ndarray) -> float | None:
    """Nominal alpha of an (annotators x items) matrix of label codes, NaN where not labeled."""
    try:
        return float(krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal"))
    except (ValueError, ZeroDivisionError):
        return None


def agreement_report(annotations: pl.DataFrame, final: pl.DataFrame, labels: list[str],
                     min_common: int = 2) -> dict:
    """Agreement figures for `annotations` (record_id, annotator, label; labels from the set) against the
    `final` (record_id, label) of each record."""
    counts = annotations.group_by("record_id").len()
    multi = counts.filter(pl.col("len") >= 2)["record_id"]
    rows = annotations.filter(pl.col("record_id").is_in(multi.implode()))
    report = {"records": int(multi.len()), "annotations": int(rows.height),
              "annotators": int(rows["annotator"].n_unique()) if rows.height else 0,
              "krippendorff_alpha": None, "fleiss_kappa": None, "cohen_kappa_mean": None, "cohen_pairs": 0,
              "per_label": [], "per_annotator": [], "confusion": {"labels": list(labels), "matrix": []}}
    if rows.is_empty():
        return report
    code = {label: i for i, label in enumerate(labels)}
    items = sorted(rows["record_id"].unique().to_list())
    annotators = sorted(rows["annotator"].unique().to_list())
    item_ix = {r: i for i, r in enumerate(items)}
    ann_ix = {a: i for i, a in enumerate(annotators)}

    reliability = np.full((len(annotators), len(items)), np.nan)
    table = np.zeros((len(items), len(labels)))
    for record_id, annotator, label in rows.select("record_id", "annotator", "label").iter_rows():
        reliability[ann_ix[annotator], item_ix[record_id]] = code[label]
        table[item_ix[record_id], code[label]] += 1
    report["krippendorff_alpha"] = _clean(krippendorff_alpha(reliability))
    report["fleiss_kappa"] = _clean(fleiss_kappa(table))

    kappas = []
    for a, b in combinations(range(len(annotators)), 2):
        both = ~np.isnan(reliability[a]) & ~np.isnan(reliability[b])
        if both.sum() >= min_common:
            k = _kappa(reliability[a, both], reliability[b, both], len(labels))
            if k is not None:
                kappas.append(k)
    report["cohen_kappa_mean"] = _clean(float(np.mean(kappas))) if kappas else None
    report["cohen_pairs"] = len(kappas)

    final_of = dict(final.select("record_id", "label").iter_rows())
    final_code = np.array([code.get(final_of.get(r), -1) for r in items])
    per_label = []
    for label, j in code.items():
        binary = np.stack([table[:, j], table.sum(axis=1) - table[:, j]], axis=1)
        in_label = final_code == j
        shares = table[in_label, j] / table[in_label].sum(axis=1) if in_label.any() else np.array([])
        per_label.append({"label": label, "annotations": int(table[:, j].sum()), "records": int(in_label.sum()),
                          "kappa": _clean(fleiss_kappa(binary)),
                          "mean_agreement": _clean(float(shares.mean())) if len(shares) else None})
    report["per_label"] = per_label

    confusion = np.zeros((len(labels), len(labels)), dtype=int)  # annotator label x final label
    per_annotator = []
    for annotator, a in ann_ix.items():
        seen = ~np.isnan(reliability[a]) & (final_code >= 0)
        given, truth = reliability[a, seen].astype(int), final_code[seen]
        np.add.at(confusion, (given, truth), 1)
        per_annotator.append({"annotator": annotator, "annotations": int((~np.isnan(reliability[a])).sum()),
                              "scored": int(seen.sum()),
                              "accuracy": _clean(float((given == truth).mean())) if seen.any() else None,
                              "kappa": _clean(_kappa(given, truth, len(labels))) if seen.any() else None})
    report["per_annotator"] = per_annotator
    report["confusion"] = {"labels": list(labels), "matrix": confusion.tolist()}
    return report


def _kappa(a: np.ndarray, b: np.ndarray, n_labels: int) -> float | None:
    if len(a) == 0 or (len(set(a.tolist())) == 1 and set(a.tolist()) == set(b.tolist())):
        return None  # both constant and equal: kappa is 0/0
    from sklearn.metrics import cohen_kappa_score  # here: scikit-learn and SciPy take a second to import, and
    # every Dagster step process imports this module

    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(a.astype(int), b.astype(int), labels=list(range(n_labels)))
    return value if math.isfinite(value) else None
