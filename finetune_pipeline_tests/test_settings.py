import pytest

from finetune_pipeline.settings import Settings, SettingsError, load_settings


def test_missing_file_gives_defaults(tmp_path):
    settings = load_settings(tmp_path)
    assert settings == Settings()
    assert (settings.splits.train, settings.splits.validation, settings.splits.test) == (0.8, 0.1, 0.1)


def test_wrong_type_names_the_field(tmp_path):
    (tmp_path / "finetune.yaml").write_text("splits:\n  train: lots\ncleaning:\n  min_chars: -3\n")
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path)
    message = str(err.value)
    assert "splits.train" in message and "cleaning.min_chars" in message and "finetune.yaml" in message


def test_unknown_key_is_an_error(tmp_path):
    (tmp_path / "finetune.yaml").write_text("dedupe:\n  threshold: 0.8\n")
    with pytest.raises(SettingsError, match="dedupe"):
        load_settings(tmp_path)


def test_ratios_must_sum_to_one(tmp_path):
    (tmp_path / "finetune.yaml").write_text("splits: {train: 0.7, validation: 0.1, test: 0.1}\n")
    with pytest.raises(SettingsError, match="must be 1.0"):
        load_settings(tmp_path)


def test_bad_yaml_syntax(tmp_path):
    (tmp_path / "finetune.yaml").write_text("labels: [a, b\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(tmp_path)


def test_sample_settings_are_valid():
    from finetune_pipeline_tests.conftest import SAMPLE_DATA

    assert load_settings(SAMPLE_DATA).labels


def test_instruction_task_needs_a_causal_lm_and_classification_refuses_instruction(tmp_path):
    (tmp_path / "finetune.yaml").write_text("task: instruction\n")
    with pytest.raises(SettingsError, match="instruction_base_model"):
        load_settings(tmp_path)
    (tmp_path / "finetune.yaml").write_text("training:\n  compare: [lora, instruction]\n")
    with pytest.raises(SettingsError, match="needs task: instruction"):
        load_settings(tmp_path)
    (tmp_path / "finetune.yaml").write_text("training:\n  approach: sgd\n")
    with pytest.raises(SettingsError, match="training.approach"):
        load_settings(tmp_path)
    (tmp_path / "finetune.yaml").write_text("task: instruction\ntraining:\n  instruction_base_model: /m\n")
    assert load_settings(tmp_path).training.packing
