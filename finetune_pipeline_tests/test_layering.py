"""The plain library imports no dagster, and transformers/peft import beside the installed torch
(a torchvision from PyPI would break them: see README, Dependencies)."""

import subprocess
import sys

LIBRARY_MODULES = [
    "finetune_pipeline.settings", "finetune_pipeline.records", "finetune_pipeline.sources",
    "finetune_pipeline.cleaning", "finetune_pipeline.cleaning.bias", "finetune_pipeline.dedup", "finetune_pipeline.labeling", "finetune_pipeline.labeling.zero_shot",
    "finetune_pipeline.labeling.consensus", "finetune_pipeline.labeling.agreement", "finetune_pipeline.labeling.annotations",
    "finetune_pipeline.labeling.review",
    "finetune_pipeline.augment", "finetune_pipeline.splits", "finetune_pipeline.validation",
    "finetune_pipeline.exports", "finetune_pipeline.raw_inventory", "finetune_pipeline.training.lora",
    "finetune_pipeline.training.classify", "finetune_pipeline.training.feature",
    "finetune_pipeline.training.instruction", "finetune_pipeline.training.registry",
    "finetune_pipeline.training.compare",
]


def test_library_imports_no_dagster():
    code = "import sys\n" + "".join(f"import {m}\n" for m in LIBRARY_MODULES) + \
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_transformers_and_peft_import():
    out = subprocess.run([sys.executable, "-c", "import transformers, peft, torch; print('ok')"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_unpickling_and_no_remote_code():
    """Nothing in the package unpickles data or runs a model repository's code."""
    import ast
    from pathlib import Path

    import finetune_pipeline

    problems = []
    for path in Path(finetune_pipeline.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib") for n in names):
                    problems.append(f"{path.name}:{node.lineno} imports a pickle library")
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code" and \
                    not (isinstance(node.value, ast.Constant) and node.value.value is False):
                problems.append(f"{path.name}:{node.lineno} trust_remote_code")
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("read_pickle", "load_pickle"):
                    problems.append(f"{path.name}:{node.lineno} {name}")
                if name == "load" and getattr(getattr(node.func, "value", None), "id", "") == "torch" and not any(
                        k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords):
                    problems.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
    assert problems == []
