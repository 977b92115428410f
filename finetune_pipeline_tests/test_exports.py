"""Exports loaded back as users load them: datasets.load_from_disk, JSONL, and TRL's SFTTrainer for chat."""

import json

import polars as pl

from finetune_pipeline import exports, validation as v
from finetune_pipeline.tasks import task_named
from finetune_pipeline.records import sha256_text

PAIRS = [("How do I reset my password?", "Use the Forgot password link on the sign-in page."),
         ("Where is my parcel?", "Track it with the link in your shipping e-mail."),
         ("Can I change my plan?", "Yes, under Settings, Billing, Change plan.")]


def _instruction_splits() -> pl.DataFrame:
    rows = []
    for i in range(12):
        prompt, response = PAIRS[i % 3]
        prompt = f"{prompt} (case {i})"
        text = f"{prompt}\n\n{response}"
        rows.append({"record_id": f"r{i:02d}", "text": text, "prompt": prompt, "response": response,
                     "label": None, "split": ["train", "train", "validation", "test"][i % 4], "group_id": f"r{i:02d}",
                     "source_uri": "raw/pairs.jsonl", "source_type": "jsonl", "locator": f"line {i + 1}",
                     "content_sha256": sha256_text(text), "augmented_from": None, "augmentation": None})
    return pl.DataFrame(rows, schema_overrides={"label": pl.String, "augmented_from": pl.String,
                                                "augmentation": pl.String})


def _chat_tokenizer_and_model(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [p + " " + r for p, r in PAIRS] + ["user assistant case"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}"
                               "{% generation %}{{ m['content'] }}</s>{% endgeneration %}{% else %}"
                               "{{ m['content'] }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=3, bos_token_id=1, eos_token_id=2))
    return tokenizer, model


def test_instruction_exports_have_chat_messages_that_trl_accepts(tmp_path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    target = exports.export_splits(_instruction_splits(), tmp_path / "exports" / "splits", task_named("instruction"))
    loaded = datasets.load_from_disk(str(target))
    assert set(loaded) == {"train", "validation", "test"} and loaded["train"].num_rows == 6
    first = loaded["train"][0]
    assert first["messages"] == [{"role": "user", "content": first["prompt"]},
                                 {"role": "assistant", "content": first["response"]}]
    line = json.loads((target / "train.jsonl").read_text().splitlines()[0])
    assert line["messages"][1]["role"] == "assistant"

    tokenizer, model = _chat_tokenizer_and_model(tmp_path / "tiny")
    train = loaded["train"].select_columns(["messages"])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train,
                         args=SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                                        report_to=[], use_cpu=True, assistant_only_loss=True, max_length=64))
    prepared = trainer.train_dataset
    assert prepared.num_rows == 6 and "input_ids" in prepared.column_names
    labels = prepared[0]["labels"]  # loss on the assistant turn only: the prompt is masked with -100
    assert -100 in labels and any(t != -100 for t in labels)
    trainer.train()  # one real optimisation step on the exported chat data


def test_classification_exports_have_no_chat_columns(tmp_path):
    frame = _instruction_splits().drop("prompt", "response").with_columns(pl.lit("billing").alias("label"))
    target = exports.export_splits(frame, tmp_path / "exports" / "splits", task_named("classification"))
    import datasets

    assert "messages" not in datasets.load_from_disk(str(target))["train"].column_names


def test_proportion_check_fails_on_a_skewed_split():
    rows = [{"record_id": f"r{i}", "label": "a" if i < 50 else "b", "augmented_from": None,
             "split": "validation" if i < 10 else ("test" if 50 <= i < 60 else "train")} for i in range(100)]
    frame = pl.DataFrame(rows, schema_overrides={"augmented_from": pl.String})
    table = v.proportion_frame(frame, 0.1)
    assert not v.validate(table, "p", v.proportion_expectations()).passed  # validation holds only label a
    balanced = frame.with_columns(pl.when(pl.col("record_id").is_in([f"r{i}" for i in range(5)] + [f"r{i}" for i in range(55, 60)]))
                                  .then(pl.lit("train")).otherwise(pl.col("split")).alias("split"))
    balanced = balanced.with_columns(pl.when(pl.col("record_id").is_in([f"r{i}" for i in range(90, 95)]))
                                     .then(pl.lit("validation")).otherwise(pl.col("split")).alias("split"))
    balanced = balanced.with_columns(pl.when(pl.col("record_id").is_in([f"r{i}" for i in range(45, 50)]))
                                     .then(pl.lit("test")).otherwise(pl.col("split")).alias("split"))
    assert v.validate(v.proportion_frame(balanced, 0.1), "p", v.proportion_expectations()).passed


def _multi_turn_splits() -> pl.DataFrame:
    """The same records as conversations: a system turn, then three user/assistant exchanges."""
    frame = _instruction_splits()
    conversations = []
    for prompt, response in zip(frame["prompt"], frame["response"]):
        turns = [{"role": "system", "content": "You are a support agent."}]
        for k, (p, r) in enumerate(PAIRS[:2]):
            turns += [{"role": "user", "content": f"{p} (case {k})"}, {"role": "assistant", "content": r}]
        conversations.append(turns + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
    return frame.with_columns(pl.Series("messages", [json.dumps(c) for c in conversations]),
                              pl.lit(None, pl.String).alias("category"))


def _labelled_runs(labels: list[int]) -> int:
    """How many separate stretches of tokens carry loss."""
    return sum(1 for i, t in enumerate(labels) if t != -100 and (i == 0 or labels[i - 1] == -100))


def test_multi_turn_exports_keep_every_turn_in_both_trl_forms(tmp_path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    frame = _multi_turn_splits()
    target = exports.export_splits(frame, tmp_path / "exports" / "splits", task_named("instruction"))
    loaded = datasets.load_from_disk(str(target))
    first = loaded["train"][0]
    original = json.loads(frame.filter(pl.col("record_id") == first["record_id"])["messages"][0])
    assert first["messages"] == original and len(first["messages"]) == 7  # system + 3 exchanges
    assert first["prompt_messages"] == original[:-1] and first["completion"] == original[-1:]
    assert first["prompt"] == original[-2]["content"]  # still the last user turn, as a string
    line = json.loads((target / "train.jsonl").read_text().splitlines()[0])
    assert line["messages"] == original and line["completion"] == original[-1:]

    tokenizer, model = _chat_tokenizer_and_model(tmp_path / "tiny")
    config = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, max_length=128)
    chat = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=loaded["train"].select_columns(["messages"]),
                      args=SFTConfig(output_dir=str(tmp_path / "sft_chat"), assistant_only_loss=True, **config))
    assert _labelled_runs(chat.train_dataset[0]["labels"]) == 3  # loss on each of the three assistant turns
    chat.train()
    completion_form = loaded["train"].select_columns(["prompt_messages", "completion"]) \
        .rename_column("prompt_messages", "prompt")
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=completion_form,
                         args=SFTConfig(output_dir=str(tmp_path / "sft_completion"), **config))
    assert _labelled_runs(trainer.train_dataset[0]["labels"]) == 1  # loss on the final answer only
    trainer.train()


def test_an_export_written_split_by_split_from_a_scan_equals_the_frames_and_keeps_an_empty_split_typed(tmp_path):
    import datasets

    frame = _instruction_splits().filter(pl.col("split") != "test")  # no test record
    frame.write_parquet(tmp_path / "splits.parquet")
    eager = exports.export_splits(frame, tmp_path / "a", task_named("instruction"))
    lazy = exports.export_splits(pl.scan_parquet(tmp_path / "splits.parquet"), tmp_path / "b",
                                 task_named("instruction"))
    a, b = datasets.load_from_disk(str(eager)), datasets.load_from_disk(str(lazy))
    assert a["test"].num_rows == 0 and a["test"].features == a["train"].features  # the chat columns too
    assert "messages" in a["test"].column_names
    for name in ("train", "validation", "test"):
        assert a[name].features == b[name].features and a[name].to_list() == b[name].to_list()
        assert (eager / f"{name}.jsonl").read_bytes() == (lazy / f"{name}.jsonl").read_bytes()
        # the fingerprint follows the content: the same rows, the same fingerprint
        assert a[name]._fingerprint == b[name]._fingerprint
    assert a["train"]._fingerprint != a["validation"]._fingerprint
    assert [r["record_id"] for r in a["train"]] == sorted(r["record_id"] for r in a["train"])


def test_an_export_from_a_sharded_dataset_is_written_a_batch_at_a_time_and_equals_the_frames(tmp_path, monkeypatch):
    """dataset_splits hands the export its sharded dataset: read a shard at a time (rows in split, record id
    order), batches of EXPORT_BATCH_ROWS rows that do not follow the shards, and the files equal the export
    of the collected frame byte for byte (JSONL, Arrow file, state.json with the fingerprint); a dataset in
    another order is exported one sorted split at a time, to the same files."""
    import datasets

    from finetune_pipeline import shards

    monkeypatch.setattr(exports, "EXPORT_BATCH_ROWS", 2)  # 4 train rows: 2 batches, across the 3-row shards
    order = pl.col("split").replace_strict({"train": 0, "validation": 1, "test": 2})  # as dataset_splits writes
    frame = _instruction_splits().sort(order, "record_id")
    shards.write_dataset(frame, tmp_path / "ordered", shard_rows=3)
    shards.write_dataset(frame.sort("record_id", descending=True), tmp_path / "shuffled", shard_rows=3)
    ordered, shuffled = shards.open_dataset(tmp_path / "ordered"), shards.open_dataset(tmp_path / "shuffled")
    assert exports._in_split_order(ordered) and not exports._in_split_order(shuffled)
    read = []
    real = ordered.iter_shards
    monkeypatch.setattr(type(ordered), "iter_shards", lambda self, columns=None: (read.append(columns) or
                                                                                  real.__func__(self, columns)))
    targets = [exports.export_splits(source, tmp_path / name, task_named("instruction"))
               for name, source in (("frame", frame), ("ordered", ordered), ("shuffled", shuffled))]
    # the ordered dataset: its order checked, then its shards read once per split; the other: its order checked
    assert read == [["split", "record_id"], None, None, None, ["split", "record_id"]]
    files = [{str(p.relative_to(t)): p.read_bytes() for p in sorted(t.rglob("*")) if p.is_file()} for t in targets]
    assert files[0] == files[1] == files[2]
    assert {"train/data-00000-of-00001.arrow", "train/state.json", "train.jsonl"} <= set(files[0])
    loaded = datasets.load_from_disk(str(targets[1]))
    for name in ("train", "validation", "test"):
        expected = frame.filter(pl.col("split") == name)["record_id"].to_list()
        assert loaded[name]["record_id"] == expected and len(expected) > 1


def test_the_published_record_columns_are_read_from_the_arrow_files_and_equal_the_jsonl(tmp_path, monkeypatch):
    """The drift warning's and the stability metadata's read of the last published export: the record columns
    from each split's Arrow file, batch by batch (never the texts), the same rows and values as the JSONL;
    from the JSONL where a split has no Arrow file; empty before any export."""
    monkeypatch.setattr(exports, "EXPORT_BATCH_ROWS", 2)  # several record batches per split
    frame = _instruction_splits().filter(pl.col("split") != "test")  # an empty split too
    target = exports.export_splits(frame, tmp_path / "splits", task_named("instruction"))
    wanted = ("record_id", "split", "label", "category", "no_such_column")
    from_jsonl = pl.concat([pl.read_ndjson(target / f"{name}.jsonl") for name in ("train", "validation")],
                           how="diagonal_relaxed")
    expected = from_jsonl.select([c for c in wanted if c in from_jsonl.columns]).sort("record_id")
    read = exports.published_columns(target, wanted)
    assert "text" not in read.columns and "messages" not in read.columns
    assert set(read.columns) == set(expected.columns) and read.height == frame.height > 2
    assert read.select(expected.columns).sort("record_id").equals(expected)
    (target / "train" / exports.DATA_FILE).unlink()  # a folder without its Arrow file: the JSONL read instead
    assert exports.published_columns(target, wanted).select(expected.columns).sort("record_id").equals(expected)
    assert exports.published_columns(tmp_path / "none", wanted).is_empty()
