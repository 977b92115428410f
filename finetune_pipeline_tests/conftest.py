import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "data"


OUTPUTS = {"exports", "models", ".pipeline"}


def copy_sample_data(dest: Path) -> Path:
    """Copy the committed sample data root to `dest`, without the pipeline's outputs at its top level
    (raw/exports/ holds inputs and must come along)."""
    shutil.copytree(SAMPLE_DATA, dest,
                    ignore=lambda folder, names: OUTPUTS & set(names) if Path(folder) == SAMPLE_DATA else set())
    return dest

