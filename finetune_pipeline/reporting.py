"""Everything the pipeline writes for people to read: the data card (`exports/report.md`), model cards,
evaluation tables (adapter against its baseline), the approach-comparison table and plot. Pure
functions from results to text or PNG bytes; callers decide where they go. Imports no dagster or torch.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

import polars as pl

from finetune_pipeline.records import SPLITS
from finetune_pipeline.tasks import task_named
from finetune_pipeline.training.results import ComparisonResult, TrainingResult

if TYPE_CHECKING:  # the cleaning package imports its text libraries: training, which renders cards, needs none
    from finetune_pipeline.cleaning.erasure import ErasureReport
    from finetune_pipeline.layout import DataRoot


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def reliability_markdown(rows: list[dict], labels: list[str], name=None) -> str:
    """Each annotator's Dawid-Skene reliability per label (P(answers the label | it is the true label)) and
    expected accuracy (labeling/routing.py). `name` maps an annotator to what is shown; default a pseudonym
    (A1, A2, ... in name order), so no card names a person."""
    name = name or {r["annotator"]: f"A{n}" for n, r in enumerate(rows, start=1)}.get
    return markdown_table(["annotator", "annotations", "expected accuracy", *labels],
                          [[name(r["annotator"]), r["annotations"], f"{r['accuracy']:.3f}",
                            *[f"{r['per_label'][lab]:.3f}" if lab in r["per_label"] else "" for lab in labels]]
                           for r in rows])


# ---- evaluation: a trained model against its baseline ---------------------------------------------------

def evaluation_rows(result: TrainingResult | dict) -> tuple[list[str], list[list[str]]]:
    """(headers, formatted rows): the trained model and its task's baseline on the test split."""
    result = TrainingResult.from_dict(result)
    task = task_named(result.task)
    headers = ["model", *(f"test {m.label}" for m in task.metrics), "trainable params"]
    rows = [[row["model"], *(m.format(row[m.key]) for m in task.metrics), f"{row['trainable_parameters']:,}"]
            for row in task.evaluation(result)]
    return headers, rows


def evaluation_markdown(result: TrainingResult | dict) -> str:
    return markdown_table(*evaluation_rows(result))


def evaluation_text(result: TrainingResult | dict) -> str:
    """The evaluation table in fixed-width columns, for a terminal."""
    headers, rows = evaluation_rows(result)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) + 2 for i in range(len(headers))]
    return "\n".join("".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                             enumerate(zip(r, widths))) for r in [headers, *rows])


# ---- the approach comparison ------------------------------------------------------------------------------

_HEADERS = {"approach": "approach", "trainable_parameters": "trainable params", "wall_time_s": "wall time (s)",
            "peak_memory_mb": "peak memory (MB)", "epochs_run": "epochs"}


def comparison_columns(task_name: str) -> list[str]:
    task = task_named(task_name)
    return ["approach", *(f"test_{m.key}" for m in task.metrics), "trainable_parameters", "wall_time_s",
            "peak_memory_mb", "epochs_run"]


def _fmt(value, column: str, task) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if column == "trainable_parameters":
        return f"{value:,}"
    if column.startswith("test_"):
        metric = next(m for m in task.metrics if f"test_{m.key}" == column)
        return f"{value:.{metric.comparison_digits}f}"
    if column == "wall_time_s":
        return f"{value:.1f}"
    if column == "peak_memory_mb":
        return f"{value:.0f}"
    return str(value)


def comparison_markdown(result: ComparisonResult | dict) -> str:
    """The comparison as a markdown table (plus the baseline row for classification)."""
    result = ComparisonResult.from_dict(result)
    task = task_named(result.task)
    columns = comparison_columns(task.name)
    headers = [_HEADERS.get(c) or f"test {next(m.label for m in task.metrics if f'test_{m.key}' == c)}"
               for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.column(c), c, task) for c in columns) + " |" for row in result.rows]
    if result.majority_baseline is not None:
        b = result.majority_baseline
        lines.append(f"| majority class | {b['accuracy']:.3f} | {b['macro_f1']:.3f} | 0 | - | - | - |")
    return "\n".join(lines)


def cross_validation_markdown(result: ComparisonResult | dict) -> str:
    """The cross-validated comparison (`result.cross_validation`): mean ± std of the fold metric per
    approach, LoRA against each other approach paired by fold, the rule, and LoRA's chosen settings."""
    result = ComparisonResult.from_dict(result)
    cv = result.cross_validation
    metric = next(m for m in task_named(result.task).metrics if m.key == cv.metric)
    name = metric.label + ("" if cv.higher_is_better else " (lower is better)")
    held_out = ", ".join(map(str, cv.fold_sizes))
    lines = [f"{cv.folds} folds of train + validation (stratified, group-aware; {held_out} records held out "
             f"per fold; the test split never used); {name} on each fold's held-out records.", "",
             markdown_table(["approach", f"mean ± std {metric.label}", "per fold", "wall time, all folds (s)"],
                            [[r["approach"], f"{r['mean']:.3f} ± {r['std']:.3f}",
                              ", ".join(f"{x:.3f}" for x in r["scores"]),
                              "in the search" if cv.lora_search is not None and r["approach"] == "lora"
                              else f"{r['wall_time_s']:.1f}"] for r in cv.rows])]
    if cv.lora_versus:
        lines += ["", markdown_table(
            ["LoRA against", "mean difference (LoRA - other)", "std of the differences", "larger than the spread",
             "better", "paired t-test p"],
            [[v["approach"], f"{v['mean_difference']:+.3f}", f"{v['std_difference']:.3f}",
              "yes" if v["larger_than_spread"] else "no", v["better"], f"{v['p_value']:.3f}"]
             for v in cv.lora_versus]), "", f"Rule: {cv.rule}."]
    search = cv.lora_search
    if search:
        chosen = search["chosen"]
        lines += ["", f"LoRA settings chosen on the validation folds (never the test split; {len(search['tried'])} "
                      f"settings tried, {search['wall_time_s']:.1f} s): r {chosen['lora_r']} (alpha "
                      f"{search['lora_alpha']}), learning rate {chosen['learning_rate']:g}, epochs {chosen['epochs']}, "
                      f"target modules {', '.join(chosen['target_modules'])}; mean fold macro-F1 {search['mean']:.3f}. "
                      "The LoRA rows above use them."]
    return "\n".join(lines)


def comparison_plot_png(result: ComparisonResult | dict) -> bytes:
    """Bar charts: the test headline metric and the wall time per approach (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = ComparisonResult.from_dict(result)
    task = task_named(result.task)
    metric = f"test_{task.headline.key}"
    label = f"test {task.headline.label}" + ("" if task.headline.higher_is_better else " (lower is better)")
    names = [r.approach for r in result.rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.bar(names, [r.column(metric) for r in result.rows], color="#4c72b0")
    left.set_title(label)
    if result.majority_baseline is not None:
        left.axhline(result.majority_baseline["macro_f1"], color="grey", linestyle="--", label="majority class")
        left.legend(loc="lower right", fontsize=8)
    right.bar(names, [r.wall_time_s for r in result.rows], color="#dd8452")
    right.set_title("wall time (s)")
    fig.tight_layout()
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# ---- model cards ------------------------------------------------------------------------------------------

def model_card(result: TrainingResult | dict) -> str:
    """The README.md saved beside a trained model: Hugging Face card header, data, scores, how to load."""
    result = TrainingResult.from_dict(result)
    return task_named(result.task).model_card(result)


# The training data as the card names it: the published export (exports/splits, whose README.md is the
# dataset card), at the data snapshot the model was trained on (the model-index's dataset revision).
TRAINING_DATA = "exports/splits"


def _card_header(result: TrainingResult, *, library_name: str, pipeline_tag: str, tags: list[str],
                 results: list[tuple[str, str, float | None]]) -> str:
    """The YAML header, written by huggingface_hub's ModelCardData so the Hub and `ModelCard.load` read it:
    base model, training data, pipeline tag, tags, and a model-index of the test `results`
    ((metric type, metric name, value); a missing or NaN value is left out)."""
    from huggingface_hub import EvalResult, ModelCardData

    snapshot = result.data_snapshot
    evaluations = [EvalResult(task_type=pipeline_tag, dataset_type=TRAINING_DATA, dataset_split="test",
                              dataset_name=f"{TRAINING_DATA} (snapshot {snapshot})", dataset_revision=str(snapshot),
                              metric_type=kind, metric_name=name, metric_value=float(value))
                   for kind, name, value in results if value is not None and value == value]
    data = ModelCardData(library_name=library_name, base_model=result.base_model.split(" (")[0],
                         datasets=[TRAINING_DATA], pipeline_tag=pipeline_tag, tags=tags,
                         model_name=f"{result.approach}-{pipeline_tag}", eval_results=evaluations or None)
    return f"---\n{data.to_yaml()}\n---"


def classifier_card(result: TrainingResult) -> str:
    sizes = result.split_sizes
    test, base = result.test, result.majority_baseline
    lora = result.approach == "lora"
    title = "LoRA adapter" if lora else "Fully fine-tuned model"
    how = ("`finetune_pipeline.training.lora.load_adapter(path)` or with PEFT:\n"
           "`PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=...), path)`"
           if lora else "`AutoModelForSequenceClassification.from_pretrained(path)`")
    header = _card_header(result, library_name="peft" if lora else "transformers", pipeline_tag="text-classification",
                          tags=[*(["lora"] if lora else []), "text-classification", "finetune-pipeline"],
                          results=[("accuracy", "Accuracy", test["accuracy"]), ("f1", "Macro F1", test["macro_f1"])])
    return f"""{header}
# {title}: text classification

- Base model: {result.base_model}
- Approach: {result.approach} (learning rate {result.learning_rate}, {result.epochs_run} epochs run)
- Labels: {', '.join(result.labels)}
- Data snapshot: `{result.data_snapshot}`
- Split sizes: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}
- Trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,}
{_lora_search_line(result.lora_search)}
| metric (test) | this model | majority-class baseline |
|---|---|---|
| accuracy | {test['accuracy']:.3f} | {base['accuracy']:.3f} |
| macro-F1 | {test['macro_f1']:.3f} | {base['macro_f1']:.3f} |

Load it with {how}.
"""


def _lora_search_line(search: dict | None) -> str:
    """The model card's line on LoRA settings chosen on validation folds (empty when they were configured)."""
    if not search:
        return ""
    chosen = search["chosen"]
    return (f"- LoRA settings chosen on {search['folds']} validation folds of train + validation (never the test "
            f"split; {search['settings_tried']} settings tried, mean fold macro-F1 "
            f"{search['mean_fold_macro_f1']:.3f}): "
            f"r {chosen['lora_r']}, alpha {search['lora_alpha']}, learning rate {chosen['learning_rate']:g}, "
            f"epochs {chosen['epochs']}, target modules {', '.join(chosen['target_modules'])}\n")


def instruction_card(result: TrainingResult) -> str:
    sizes, test, base = result.split_sizes, result.test, result.base_model_test
    header = _card_header(result, library_name="peft", pipeline_tag="text-generation",
                          tags=["lora", "instruction-tuning", "text-generation", "finetune-pipeline"],
                          results=[("loss", "Loss (response tokens)", test["loss"]),
                                   ("perplexity", "Perplexity (response tokens)", test["perplexity"]),
                                   ("rougeL", "ROUGE-L F1 (greedy answers)", test.get("rouge_l"))])
    return f"""{header}
# LoRA adapter: instruction tuning

- Base model: {result.base_model}
- Data snapshot: `{result.data_snapshot}`
- Split sizes (examples): {', '.join(f'{k} {v}' for k, v in sizes.items())}; packing {'on' if result.packing else 'off'}
- Loss on response tokens only (prompt and template tokens masked)
- Trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,}

| metric (test) | adapter | base model |
|---|---|---|
| loss (response tokens) | {test['loss']:.4f} | {base['loss']:.4f} |
| perplexity (response tokens) | {test['perplexity']:.2f} | {base['perplexity']:.2f} |
| ROUGE-L F1 (greedy answers) | {_number(test.get('rouge_l'))} | {_number(base.get('rouge_l'))} |
{_generation_section(result.generation)}
Load it with `finetune_pipeline.training.instruction.load_instruction_adapter(path)` or with PEFT:
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)`.
"""


def _number(value: float | None, digits: int = 3) -> str:
    return "nan" if value is None or value != value else f"{value:.{digits}f}"


def _quoted(text: str, limit: int = 400) -> str:
    """`text` as a markdown block quote, cut at `limit` characters."""
    text = text if len(text) <= limit else text[:limit].rstrip() + " [...]"
    return "\n".join("> " + line for line in (text or "(empty)").splitlines() or [""])


def _generation_section(generation: dict | None) -> str:
    """How the generation metric was computed, and a few examples (texts as cleaned: personal data redacted)."""
    if not generation or not generation.get("samples"):
        return "\nNo generation metric (no test split, or training.instruction.generation_samples is 0).\n"
    lines = ["", f"ROUGE-L F1: greedy answers to {generation['samples']} sampled test prompts (the conversation "
                 f"up to its final answer, through the chat template; at most {generation['max_new_tokens']} new "
                 "tokens) against the reference answers.", "", "## Examples (test split)", ""]
    for number, example in enumerate(generation.get("examples", []), start=1):
        lines += [f"**{number}. Prompt** (last user turn)", "", _quoted(example["prompt"]), "",
                  "Reference:", "", _quoted(example["reference"]), "", "Adapter:", "", _quoted(example["generated"]),
                  "", "Base model:", "", _quoted(example["base_model_generated"]), ""]
    return "\n".join(lines)


def feature_card(result: TrainingResult) -> str:
    labels, dim = result.labels, result.embedding_dim
    return (f"# Feature-based classifier\n\nFrozen {result.base_model} mean-pooled embeddings "
            f"({dim} dims, L2-normalised) + logistic regression (C={result.C}). `classifier.safetensors` holds "
            f"`weight` ({len(labels)} x {dim}) and `bias`; logits = embedding @ weight.T + bias.\n\n"
            f"Test accuracy {result.test['accuracy']:.3f}, macro-F1 {result.test['macro_f1']:.3f}.\n")


# ---- the data card ----------------------------------------------------------------------------------------

def _conflict_lines(rejects: pl.DataFrame) -> list[str]:
    """Conflicting instructions (conversations): per conflict its outcome and record ids, never text."""
    found = (rejects.with_columns(pl.col("detail").str.extract(r"^(conflict-[0-9a-f]{16})").alias("conflict"))
             .filter(pl.col("conflict").is_not_null()))
    if found.is_empty():
        return []
    lines = ["", "## Conflicting instructions (same prompt, answers disagree; ids only)", "",
             "| conflict | outcome | rejected records | kept record |", "|---|---|---|---|"]
    per = (found.group_by("conflict", maintain_order=True)
           .agg(pl.col("reason").first(), pl.col("record_id").sort(), pl.col("duplicate_of").drop_nulls().first()))
    for conflict, reason, records, kept in per.sort("conflict").iter_rows():
        outcome = "waiting for review" if reason == "in_review" else ("one answer kept" if kept else "all dropped")
        lines.append(f"| {conflict} | {outcome} | {', '.join(records)} | {kept or ''} |")
    return lines


def reject_share_summary(root: DataRoot, stage_counts: list[dict]) -> list[str]:
    """The run summary's lines on reject reasons that took more than `checks.max_reject_share` of a stage's
    input (`stage_counts`: rows in per stage, as `PipelineResource.stage_counts` gives them), read from
    each stage's rejects under `root`; none when no reason did."""
    from finetune_pipeline.records import reject_share_warnings
    from finetune_pipeline.settings import ChecksSettings, SettingsError, load_settings

    try:
        max_share = load_settings(root).checks.max_reject_share
    except SettingsError:
        max_share = ChecksSettings().max_reject_share
    from finetune_pipeline.stored import stored_rejects, with_datasets_url

    root = with_datasets_url(root)
    warnings = []
    for counts in stage_counts:
        warnings += reject_share_warnings(counts["stage"], counts["rows_in"], stored_rejects(root, counts["stage"]),
                                          max_share)
    return ["", "WARNING: one reason rejected a large share of a stage's input:",
            *(f"  {w.message()}" for w in warnings)] if warnings else []


def domain_summary(domain) -> str:
    """One sentence on the domain relevance filter (a `DomainStats`, or None when no domain is set)."""
    if domain is None:
        return "No domain relevance filter (finetune.yaml has no `domain`)."
    what = "rejected as off_domain" if domain.policy == "reject" else "flagged off_domain (kept)"
    unit = "probability of in-domain, classifier" if domain.method == "classifier" else "similarity to the domain"
    guard = f" {domain.guard[0].upper()}{domain.guard[1:]}." if domain.guard else ""
    if domain.calibration == "corpus":  # relevance in robust deviations from the corpus median
        return (f"{domain.off_domain} of {domain.scored} records {what}: relevance below {domain.threshold:g} "
                f"robust deviations from the corpus median, or in one of {domain.off_domain_sources} file(s) "
                f"whose median is below {domain.source_cut:g} (calibrated on the corpus; reference: {unit}; "
                f"{domain.in_domain_examples} in-domain and {domain.out_of_domain_examples} out-of-domain "
                f"examples).{guard}")
    return (f"{domain.off_domain} of {domain.scored} records {what}: relevance score below {domain.threshold} "
            f"({unit}; {domain.in_domain_examples} in-domain and {domain.out_of_domain_examples} out-of-domain "
            f"examples).{guard}")


def redaction_summary(redaction: dict) -> str:
    """One line on the redaction's fixed point and the allow and deny lists (`CleaningStats` figures)."""
    passes = redaction.get("pii_passes") or {}
    again = ", ".join(f"{n} a pass {k}" for k, n in sorted(passes.items())) or "none a second pass"
    return (f"Redaction ran until the detector found nothing more in its own output: of the records, {again}; "
            f"{redaction.get('pii_unresolved', 0)} rejected as still holding personal data after the last pass. "
            f"privacy.allow left {redaction.get('pii_allowed', 0)} findings in the text; privacy.deny redacted "
            f"{redaction.get('pii_denied', 0)} spans.")


def data_card(stage_counts: list[dict], rejects: pl.DataFrame, splits: pl.DataFrame | None,
              pii_by_type: dict[str, int], training: TrainingResult | dict | None,
              pii_policy: dict[str, str] | None = None, erasure: ErasureReport | None = None,
              comparison: ComparisonResult | dict | None = None, domain=None,
              agreement: dict | None = None, redaction: dict | None = None) -> str:
    """The run's data card (`report.md`): counts, rejects by reason, label distribution per split,
    PII counts by type and the action taken (never values), erasure requests honoured (request ids,
    never subjects), the evaluation and the approach comparison."""
    lines = ["# Data card", "", "## Rows per stage", "", "| stage | in | out | rejected | augmented rows added |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['rows_in']} | {s['rows_out']} | {s['rows_rejected']} | {s.get('augmented', 0)} |"
              for s in stage_counts]
    lines += ["", "## Rejects by stage and reason", "", "| stage | reason | count |", "|---|---|---|"]
    if not rejects.is_empty():
        for stage, reason, n in rejects.group_by("stage", "reason").len().sort("stage", "reason").iter_rows():
            lines.append(f"| {stage} | {reason} | {n} |")
    lines += _conflict_lines(rejects)
    lines += ["", "## Domain relevance", "", domain_summary(domain)]
    lines += ["", "## Personal data found (by type; values never shown)", ""]
    if pii_policy:
        lines += ["| type | found | action |", "|---|---|---|"]
        lines += [f"| {kind} | {pii_by_type.get(kind, 0)} | {action} |" for kind, action in pii_policy.items()]
        lines += [f"| {kind} | {n} | redact (privacy.deny) |" for kind, n in sorted(pii_by_type.items())
                  if kind not in pii_policy]
    else:
        lines += [f"- {kind}: {n}" for kind, n in sorted(pii_by_type.items())] or ["- none found"]
    if redaction is not None:
        lines += ["", redaction_summary(redaction)]
    if erasure is not None:
        removed = erasure.removed_by_request
        lines += ["", "## Erasure requests (right to erasure; subjects never shown)", ""]
        if removed:
            lines += ["| request | status | records removed |", "|---|---|---|"]
            lines += [f"| {request_id} | honoured | {n} |" for request_id, n in sorted(removed.items())]
        else:
            lines.append("- no requests in erasure_requests.csv")
    if splits is not None and not splits.is_empty():
        sizes = dict(splits.group_by("split").len().iter_rows())
        lines += ["", "## Split sizes", "", "| split | rows |", "|---|---|"]
        lines += [f"| {name} | {sizes.get(name, 0)} |" for name in SPLITS]
        lines += ["", "## Labels per split", "", "| split | label | originals | augmented |", "|---|---|---|---|"]
        table = (splits.with_columns(pl.col("augmented_from").is_not_null().alias("aug"))
                 .group_by("split", "label").agg((~pl.col("aug")).sum().alias("orig"), pl.col("aug").sum().alias("augm"))
                 .sort("split", "label"))
        lines += [f"| {s} | {label} | {o} | {a} |" for s, label, o, a in table.iter_rows()]
    if agreement and agreement.get("reliability"):
        lines += ["", "## Annotator reliability (Dawid-Skene, per label)", "",
                  reliability_markdown(agreement["reliability"], agreement["confusion"]["labels"])]
    if training:
        training = TrainingResult.from_dict(training)
        lines += ["", f"## Evaluation ({task_named(training.task).evaluated_on})", "",
                  evaluation_markdown(training)]
    if comparison:
        comparison = ComparisonResult.from_dict(comparison)
        device = comparison.rows[0].device if comparison.rows else "none"
        lines += ["", "## Approach comparison (same splits, test split)", "",
                  f"Device: {device}. Peak memory: on the CPU the process's resident memory while the approach "
                  "ran; on CUDA torch's peak allocation.", "", comparison_markdown(comparison)]
        if comparison.cross_validation:
            lines += ["", "## Approach comparison, cross-validated", "", cross_validation_markdown(comparison)]
    return "\n".join(lines) + "\n"


# ---- the dataset card (exports/splits/README.md) ----------------------------------------------------------

def _size_category(n: int) -> str:
    """Hugging Face's size_categories bucket for `n` records."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def dataset_card(settings, name: str, splits: pl.DataFrame, stage_counts: list[dict], rejects_by_reason: dict,
                 pii_by_type: dict[str, int], sources: dict[str, int], agreement: dict,
                 bias_findings: list[str], domain=None) -> str:
    """A Hugging Face dataset card: a YAML header (pretty name, task, languages, size, licence, one config
    whose data files are the split JSONL files) and sections on sources, collection, cleaning and personal
    data, labeling, splits, limitations and the bias report. Counts only, never record text."""
    import yaml

    task = task_named(settings.task)
    card = settings.card
    sizes = dict(splits.group_by("split").len().iter_rows())
    header = {
        "pretty_name": card.pretty_name or name,
        "license": card.license,
        "language": list(settings.cleaning.languages) or ["multilingual"],
        "task_categories": list(task.hub_categories),
        "size_categories": [_size_category(splits.height)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"{s}.jsonl"} for s in SPLITS]}],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {header['pretty_name']}", "", card.description or "(no description: set card.description)", ""]
    if card.intended_use:
        lines += ["## Intended use", "", card.intended_use, ""]
    lines += ["## Sources", "", markdown_table(["source type", "files or tables"], sorted(sources.items())), "",
              "## Collection and cleaning", "",
              markdown_table(["stage", "in", "out", "rejected"],
                             [[c["stage"], c["rows_in"], c["rows_out"], c["rows_rejected"]] for c in stage_counts]),
              "", "Rejects by reason: " + (", ".join(f"{r} {n}" for r, n in sorted(rejects_by_reason.items()))
                                           or "none") + ".", "", "Domain relevance: " + domain_summary(domain), "",
              "## Personal data", "",
              "Each text (every turn of a conversation) went through the PII policy; what was found, by type "
              "(values never shown), and what was done:", "",
              markdown_table(["type", "found", "action"],
                             [[k, pii_by_type.get(k, 0), a] for k, a in settings.privacy.policy.items()]), "",
              "The split export was scanned again before it was published and nothing of a redacted or dropped "
              "type was found (the dataset_splits_no_personal_data check).", ""]
    lines += task.card_sections(splits, agreement)
    lines += ["## Splits", "", markdown_table(["split", "records"], [[s, sizes.get(s, 0)] for s in SPLITS]), "",
              f"Stratified by {task.stratify_column(splits)}, seed {settings.splits.seed}; a group (near-duplicate "
              "cluster, near copies at MinHash Jaccard "
              f"{settings.splits.contamination_threshold}, prompt cluster) never straddles two splits; augmented "
              "rows stay in train.", "", "## Bias report", ""]
    lines += [f"- {f}" for f in bias_findings] or ["No demographic term group far over- or under-represented "
                                                   "(bias.max_group_share)."]
    limitations = list(card.limitations)
    small = [s for s in SPLITS if sizes.get(s, 0) < 100]
    if small:
        limitations.append(f"Small evaluation splits ({', '.join(f'{s}: {sizes.get(s, 0)}' for s in small)}): "
                           "scores measured on them carry a wide margin.")
    if bias_findings:
        limitations.append("The bias report above found imbalances; see it before training.")
    lines += ["", "## Known limitations", ""] + ([f"- {x}" for x in limitations] or ["- none recorded"])
    return "\n".join(lines) + "\n"
