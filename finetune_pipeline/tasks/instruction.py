"""Instruction or chat conversations for a causal LM: `prompt` -> `response` (every turn in `messages`),
scored by loss and perplexity on response tokens and ROUGE-L F1 of greedy answers, against the untuned
base model."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from finetune_pipeline.records import SPLITS, StageResult
from finetune_pipeline.settings import Approach, DedupSettings, Settings, TrainingSettings
from finetune_pipeline.training.results import TrainingResult
from finetune_pipeline.tasks.base import Splits, Task, Metric


class InstructionTask(Task):
    name = "instruction"
    input_column, target_column = "prompt", "response"
    metrics = (Metric("loss", "loss", 4, False, 3), Metric("perplexity", "perplexity", 2, False, 1),
               Metric("rouge_l", "ROUGE-L F1", 3, True, 3))
    headline = metrics[1]
    baseline_name = "base model"
    evaluated_on = "test split: loss on response tokens, ROUGE-L F1 of greedy answers to sampled prompts"
    base_model_setting = "instruction.base_model"

    # ---- reading and cleaning

    content_columns = ("text", "messages", "prompt", "response")

    def read_rows(self, path: Path, source_type: str, settings: Settings,
                  notes: list[str]) -> tuple[list[dict], list[dict]]:
        """One conversation per row (`readers.read_conversations`); documents are refused."""
        from finetune_pipeline.sources import readers

        return readers.read_conversations(path, source_type, settings)

    def read_query_rows(self, rows: list[tuple[str, dict]], source, uri: str) -> tuple[list[dict], list[dict]]:
        from finetune_pipeline.sources import readers

        return readers.conversation_query_rows(rows, source)

    def record_columns(self, settings: Settings) -> dict[str, pl.DataType]:
        """`messages` (JSON array of turns), `prompt`, `response` and an optional `category`."""
        from finetune_pipeline.sources import readers

        return readers.INSTRUCTION_COLUMNS

    def text_units(self, row: dict) -> list[str]:
        """Every turn's content, in order."""
        return [turn["content"] for turn in json.loads(row["messages"])]

    def from_units(self, row: dict, units: list[str]) -> dict:
        """`messages`, `prompt`, `response` and `text` rebuilt from the cleaned turns."""
        from finetune_pipeline.sources.conversations import conversation_fields

        turns = json.loads(row["messages"])
        return conversation_fields([{**turn, "content": unit} for turn, unit in zip(turns, units)])

    def cleaning_filters(self, settings: Settings) -> list:
        """An empty turn, the SFT filters on the final answer, the quality filters (the repetition filters
        on each turn alone, rejecting on table rows too), then the too-long filter in the base model's tokens."""
        from finetune_pipeline.cleaning import filters

        return [filters.EmptyTurnFilter(), *filters.sft_filters(settings.cleaning),
                *filters.quality_filters(settings.cleaning, turns_alone=True), filters.TooLongFilter(settings)]

    def domain_texts(self, corpus: pl.DataFrame) -> list[str]:
        """A conversation's prompt (the last user turn)."""
        return corpus.select(pl.coalesce("prompt", "text").fill_null("")).to_series().to_list()

    # ---- dedup, labeling, augmentation, splits, exports

    def near_duplicate_texts(self, kept: pl.DataFrame) -> pl.Series | None:
        """None: near and semantic duplicates are found on the prompt, where the answers are compared
        (`duplicate_groups`); on the whole text a short diverging answer would pass for a duplicate."""
        return None

    def duplicate_groups(self, kept: pl.DataFrame, dedup: DedupSettings) -> StageResult:
        """Duplicate prompts, conflicting answers and prompt groups (dedup/conflicts.py)."""
        from finetune_pipeline.dedup.conflicts import prompt_dedup

        prompts = prompt_dedup(kept, dedup)
        return StageResult(prompts.kept, prompts.rejected, prompts.stats)

    def augment(self, train: pl.DataFrame, settings: Settings, generator, cache):
        """Prompt paraphrases and new instruction/answer pairs, never copies (augment/instructions.py)."""
        from finetune_pipeline.augment.instructions import augment_instruction_rows

        return augment_instruction_rows(train, settings, generator, cache)

    def augmented_counts(self, extra: pl.DataFrame) -> dict[str, int]:
        """By `category`, when the records carry one."""
        if "category" not in extra.columns:
            return {}
        return dict(extra.drop_nulls("category").group_by("category").len().sort("category").iter_rows())

    def export_texts(self, row: dict) -> list[tuple[str, str]]:
        """A conversation's `text` is left out: it is its turns, rendered."""
        texts = super().export_texts(row)
        return [(f, t) for f, t in texts if f != "text"] if isinstance(row.get("messages"), list) else texts

    # ---- training, evaluation, gate, cards

    def settings_problem(self, settings: Settings) -> str | None:
        """A causal LM to tune: training.instruction.base_model."""
        if not settings.training.instruction.base_model:
            return "task: instruction needs training.instruction.base_model (a local causal LM folder)"
        return None

    recipes = ("instruction",)
    adapter_approaches = ("instruction",)
    fold_metric = "loss"
    hub_categories = ("text-generation",)

    def train(self, approach: Approach, splits: Splits, labels: list[str], cfg: TrainingSettings,
              output_dir, data_snapshot: str = "", log=print) -> TrainingResult:
        """LoRA on the causal LM (training/instruction.py), on (conversation, response) pairs per split."""
        from finetune_pipeline.training.instruction import train_instruction

        pairs = {name: list(zip(*columns)) for name, columns in splits.items()}
        return train_instruction(pairs, cfg, output_dir, data_snapshot, log)

    def configured_base_model(self, training: TrainingSettings) -> str | None:
        return training.instruction.base_model

    def buildable_base_model(self, training: TrainingSettings) -> str | None:
        return training.instruction.base_model

    def untrained_model(self, entry: dict):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(entry["base"])

    def model_card(self, result: TrainingResult) -> str:
        from finetune_pipeline import reporting

        return reporting.instruction_card(result)

    def card_sections(self, splits: pl.DataFrame, agreement: dict) -> list[str]:
        return ["## Conversations", "",
                "Records are conversations (`messages`, with `prompt_messages` and `completion` for TRL's "
                "prompt-completion form); no labels.", ""]

    def approaches(self, training: TrainingSettings) -> list[Approach]:
        return ["instruction"]

    def trained_approach(self, training: TrainingSettings) -> Approach:
        return "instruction"

    def record_expectations(self, labels: list[str]) -> list | None:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        return validation.conversation_expectations()

    def stratify_column(self, frame: pl.DataFrame) -> str:
        """`category` when the records carry one, else `source_uri` (conversations from one file together)."""
        has_category = "category" in frame.columns and frame["category"].null_count() < frame.height
        return "category" if has_category else "source_uri"

    def baseline(self, result: TrainingResult) -> dict[str, float]:
        return result.base_model_test

    def baseline_gate(self, result: TrainingResult) -> tuple[pl.DataFrame, list, dict[str, float]]:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        loss, base_loss = result.test["loss"], self.baseline(result)["loss"]
        frame = pl.DataFrame({"nan_loss": [result.nan_loss], "test_loss": [loss]})
        return frame, validation.instruction_adapter_expectations(base_loss), {"test_loss": loss,
                                                                               "base_model_test_loss": base_loss}

    def model_name(self, result: TrainingResult) -> str:
        return f"{result.approach} (LoRA)"

    def training_splits(self, frame: pl.DataFrame) -> Splits:
        """Per split (the conversation's messages as a JSON array, the final response): every turn goes to
        training (training/instruction.py reads the JSON); a record without `messages` is [user prompt,
        assistant response]."""
        if frame.is_empty() or "messages" not in frame.columns:
            return super().training_splits(frame)
        frame = frame.with_columns(conversation_column(frame).alias("_conversation"))
        parts = {}
        for name in SPLITS:
            part = frame.filter(pl.col("split") == name)
            parts[name] = ([json.dumps(turns) for turns in part["_conversation"].to_list()],
                           part["response"].to_list())
        return parts

    def export_form(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Also in the two forms TRL's SFTTrainer takes as is: `messages` (every turn, as {role, content}
        structs) and conversational prompt-completion, `prompt_messages` (the turns before the final
        assistant turn) with `completion` ([the final assistant turn]). `prompt` stays the last user turn
        as a string (what `training.instruction.read_pairs` and older readers take), so for TRL's
        prompt-completion form select `prompt_messages` and `completion` and rename the first to `prompt`."""
        if frame.is_empty() or not {"prompt", "response"} <= set(frame.columns):
            return frame
        messages = conversation_column(frame)
        return frame.with_columns(
            messages.alias("messages"),
            messages.list.head(messages.list.len() - 1).alias("prompt_messages"),
            messages.list.tail(1).alias("completion"),
        )

    def metrics_summary(self, result: TrainingResult) -> dict[str, float]:
        test = result.test
        return {"test_loss": test["loss"], "test_perplexity": test["perplexity"],
                "test_rouge_l": test.get("rouge_l", float("nan"))}

    def comparison_scores(self, result: TrainingResult) -> dict[str, float]:
        return {**super().comparison_scores(result), "base_model_test_loss": result.base_model_test["loss"]}


MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


def conversation_column(frame: pl.DataFrame) -> pl.Expr:
    """Each instruction record's turns as a list of {role, content}: its `messages` (a JSON array, or
    already a list), or [user prompt, assistant response] for records without them."""
    pair = pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")),
                          pl.struct(pl.lit("assistant").alias("role"), pl.col("response").alias("content")))
    if "messages" not in frame.columns or frame["messages"].null_count() == frame.height:
        return pair
    given = pl.col("messages")
    if frame.schema["messages"] == pl.String:
        given = given.str.json_decode(pl.List(MESSAGE))
    return pl.when(pl.col("messages").is_not_null()).then(given).otherwise(pair)
