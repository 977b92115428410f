import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "data"


@pytest.fixture
def sample_data_root(tmp_path: Path) -> Path:
    """A copy of the committed sample data root (raw/, annotations/, finetune.yaml), outputs excluded."""
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA, root, ignore=shutil.ignore_patterns("exports", "models", ".pipeline"))
    return root
