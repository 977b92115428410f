import pytest

from finetune_pipeline.tasks import task_for
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
    with pytest.raises(SettingsError, match="training.instruction.base_model"):
        task_for(load_settings(tmp_path))  # the kind checks the settings it needs
    (tmp_path / "finetune.yaml").write_text("training:\n  compare: [lora, instruction]\n")
    with pytest.raises(SettingsError, match="needs task: instruction"):
        task_for(load_settings(tmp_path))
    (tmp_path / "finetune.yaml").write_text("training:\n  approach: sgd\n")
    with pytest.raises(SettingsError, match="training.approach"):
        load_settings(tmp_path)
    (tmp_path / "finetune.yaml").write_text("task: instruction\ntraining:\n  instruction:\n    base_model: /m\n")
    assert load_settings(tmp_path).training.instruction.packing


def test_an_old_flat_training_field_names_its_new_place(tmp_path):
    """finetune.yaml written before the per-method sections: each flat field is refused naming where it went."""
    from finetune_pipeline.settings import MOVED_TRAINING_FIELDS, TrainingSettings

    (tmp_path / "finetune.yaml").write_text("training:\n  lora_r: 16\n")
    with pytest.raises(SettingsError, match=r"training\.lora_r moved to training\.lora\.r"):
        load_settings(tmp_path)
    (tmp_path / "finetune.yaml").write_text("task: instruction\ntraining:\n  instruction_base_model: /m\n"
                                            "  full_learning_rate: 0.001\n")
    with pytest.raises(SettingsError) as error:
        load_settings(tmp_path)
    assert "training.instruction_base_model moved to training.instruction.base_model" in str(error.value)
    assert "training.full_learning_rate moved to training.full.learning_rate" in str(error.value)
    for old, new in MOVED_TRAINING_FIELDS.items():  # every new place exists; no old name is left
        section, field = new.split(".")
        assert field in type(getattr(TrainingSettings(), section)).model_fields, new
        assert old not in TrainingSettings.model_fields, old
    (tmp_path / "finetune.yaml").write_text("training:\n  lora:\n    r: 16\n  full:\n    learning_rate: 0.001\n")
    training = load_settings(tmp_path).training
    assert (training.lora.r, training.lora.alpha, training.full.learning_rate) == (16, 16, 0.001)
