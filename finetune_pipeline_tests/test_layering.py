"""The plain library imports no dagster, and transformers/peft import beside the installed torch
(a torchvision from PyPI would break them: see README, Dependencies)."""

import subprocess
import sys


def library_modules() -> list[str]:
    """Every module of the package outside the Dagster layer (defs/, definitions.py), found by walking it."""
    import pkgutil

    import finetune_pipeline

    names = [m.name for m in pkgutil.walk_packages(finetune_pipeline.__path__, "finetune_pipeline.")]
    return sorted(n for n in names if not n.startswith("finetune_pipeline.defs") and n != "finetune_pipeline.definitions")


def test_the_walk_finds_the_library():
    modules = library_modules()
    assert {"finetune_pipeline.settings", "finetune_pipeline.tasks", "finetune_pipeline.training.compare",
            "finetune_pipeline.cleaning.privacy", "finetune_pipeline.sources.sql"} <= set(modules)
    assert not any(m.startswith("finetune_pipeline.defs") for m in modules)


def test_library_imports_no_dagster():
    code = "import sys\n" + "".join(f"import {m}\n" for m in library_modules()) + \
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, lazy imports included)."""
    import ast
    from pathlib import Path

    import finetune_pipeline

    root = Path(finetune_pipeline.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    """No module imports another that (directly or through others) imports it back; a package's
    `__init__` importing its own submodules does not count."""
    graph = _import_graph()

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == goal:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = []
    for module, targets in graph.items():
        for target in targets:
            if target.startswith(module + "."):  # a package importing its own parts
                continue
            back = reaches(target, module)
            if back and not any(b.startswith(a + ".") for a, b in zip(back, back[1:])):
                cycles.append(" -> ".join([module, *back]))
    assert cycles == [], cycles
