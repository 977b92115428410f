import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "data"


OUTPUTS = {"exports", "models", ".pipeline"}
SAMPLE_RUN_FOLDS = 2  # cross-validation folds of the end-to-end run (`sample_run`)


def _files_of_the_end_to_end_run() -> set[str]:
    return {f"{Path(__file__).parent.name}/{path.name}" for path in Path(__file__).parent.glob("test_*.py")
            if "sample_run" in path.read_text(encoding="utf-8")}


# Seconds each heavy test file (or the end-to-end group) took on a worker of `make test` (2026-12-07, two
# cores, `pytest -n 2 --durations=0`; the Ray file with its two tests of that day added). The scheduler hands out
# the heaviest waiting file first, so the two long ones do not end up together at the tail of one worker (they
# did: 857 s against 643 s). Files not named count a second per test. Refresh when a file's time changes a lot;
# a stale figure costs balance, not tests.
# The files in HANDED_OUT_PER_TEST go a test at a time (no module fixture to share): `file[param]` there.
SECONDS_PER_FILE = {
    "sample_run": 580, "test_ray_backend.py": 350, "test_three_paths.py[sample]": 210,
    "test_three_paths.py[instruction]": 110, "test_sources.py": 93, "test_erasure.py": 48,
    "test_incremental.py": 38, "test_collection_asset.py": 37, "test_instruction_root.py": 33,
    "test_idempotence.py": 29, "test_domain.py": 28, "test_label_studio.py": 27, "test_preference_root.py": 25,
    "test_distributed.py": 22, "test_instruction.py": 20, "test_privacy.py": 18, "test_layering.py": 17,
    "test_gates.py": 14, "test_automation.py": 11, "test_embedding_cache.py": 10, "test_dedup_sharded.py": 9,
}
HANDED_OUT_PER_TEST = {"test_three_paths.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs the suite on two pytest-xdist workers (`-n 2`): one core sat idle while a test waited
    on a subprocess, a server or a Dagster run. Work is handed out a test file at a time, so a file's module
    fixtures (a Ray cluster) start once, and the files of the end-to-end run (`sample_run`, a session
    fixture) go together to one worker, so that run happens once. (xdist's own `--dist loadgroup` marks do
    not group under pytest 9, whose node ids xdist can no longer rename.) The heaviest waiting file goes
    first (SECONDS_PER_FILE): longest first is what keeps two workers finishing together."""
    from xdist.scheduler import LoadScopeScheduling

    together = _files_of_the_end_to_end_run()

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.rsplit("/", 1)[-1] in HANDED_OUT_PER_TEST:
                return nodeid
            return "sample_run" if path in together else path

        def _assign_work_unit(self, node) -> None:
            def seconds(scope: str) -> float:
                file, _, test = scope.rsplit("/", 1)[-1].partition("::")
                param = test[test.index("["):] if "[" in test else ""
                return SECONDS_PER_FILE.get(file + param, len(self.workqueue[scope]))

            self.workqueue.move_to_end(max(self.workqueue, key=seconds), last=False)
            super()._assign_work_unit(node)

    return ByFile(config, log)


def copy_sample_data(dest: Path) -> Path:
    """Copy the committed sample data root to `dest`, without the pipeline's outputs at its top level
    (raw/exports/ holds inputs and must come along)."""
    shutil.copytree(SAMPLE_DATA, dest,
                    ignore=lambda folder, names: OUTPUTS & set(names) if Path(folder) == SAMPLE_DATA else set())
    return dest



def write_tiny_bert(folder: Path, dropout: float = 0.1) -> str:
    """A 2-layer 32-wide random BERT (seed 0) with the MiniLM tokenizer, saved to `folder`: trains in
    seconds on a CPU. `dropout=0` makes runs deterministic."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from finetune_pipeline.training.base_model import default_base_model

    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The one real end-to-end run: the README's headless command (`dagster asset materialize --select '*'`)
    on a copy of the sample data root plus the bad inputs of bad_inputs.py, in its own DAGSTER_HOME.
    Returns (data root, DAGSTER_HOME, the finished process, what each bad input should become).

    The changes to the sample's settings are the test budget: `training.epochs: 1` (default 8, where
    early stopping ends LoRA after about 6; the first epoch already reaches validation macro-F1 1.0 on the
    sample) and `splits.cv_folds: 2` (default 3). Every model of the run (lora_adapter, and each approach on
    the test split and on the 2 cross-validation folds) trains one epoch (`make run`: up to 8); several
    epochs and resuming are exercised by test_crash_safety.py (a 2-epoch run of the same sample killed after
    its first checkpoint) and test_training.py (tiny models).
    `training.compare: [lora, feature]` (default lora, full, feature): full fine-tuning, the slowest arm, is
    trained and compared on a tiny encoder in test_training.py
    (`test_comparison_reports_every_configured_approach`), not again here. What the tests check (every
    stage, the comparison tables with mean ± std over the folds, the card) is the same."""
    from finetune_pipeline_tests.bad_inputs import add_bad_inputs

    base = tmp_path_factory.mktemp("e2e")
    root = base / "data"
    copy_sample_data(root)
    expected = add_bad_inputs(root)
    settings = root / "finetune.yaml"
    # the sample sets no training or splits section to merge with
    assert "\ntraining:" not in "\n" + settings.read_text() and "\nsplits:" not in "\n" + settings.read_text()
    settings.write_text(settings.read_text() + f"\ntraining:\n  epochs: 1\n  compare: [lora, feature]\n"
                        f"splits:\n  cv_folds: {SAMPLE_RUN_FOLDS}\n")
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "FINETUNE_DATA_DIR": str(root), "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster), "asset", "materialize", "-m", "finetune_pipeline.definitions",
                           "--select", "*"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    return root, home, proc, expected


LABEL_STUDIO_STATE = Path(os.environ.get("LABEL_STUDIO_STATE", "/tmp/finetune-pipeline-labelstudio-test"))


@pytest.fixture(scope="session")
def label_studio_server():
    """ONE real Label Studio server for the whole test run: (url, token). `scripts/label_studio.sh start`
    (installs label-studio into .venv-labelstudio/ when missing; CI runs it before pytest, so this finds the
    server running) with its state under LABEL_STUDIO_STATE. A server this fixture started is stopped at the
    end. Fails, never skips, when the server cannot be started."""
    env = {**os.environ, "LABEL_STUDIO_STATE": str(LABEL_STUDIO_STATE)}
    script = str(REPO / "scripts" / "label_studio.sh")
    was_running = subprocess.run([script, "url"], env=env, capture_output=True, text=True).returncode == 0
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"scripts/label_studio.sh start failed (exit {started.returncode}): {started.stderr[-2000:]}")
    url = started.stdout.strip().splitlines()[-1]
    token = subprocess.run([script, "token"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    yield url, token
    if not was_running:
        subprocess.run([script, "stop"], env=env, capture_output=True)


