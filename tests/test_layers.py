"""The package's layers only look down: no module imports from a higher layer (lazy imports
inside functions count too), and nothing outside the CLI imports it."""

import ast
from pathlib import Path

import atat_cli

PACKAGE = Path(atat_cli.__file__).parent

# The table of atat_cli/__init__.py's docstring.
LAYERS = {
    "errors": 0, "paths": 0, "config": 0, "device": 0, "progress": 0,
    "models": 1, "diffusion": 1, "data": 1, "atat": 1,
    "objectives": 2, "evaluation": 2,
    "training": 3, "sampling": 3, "runs": 3,
    "ablation": 4, "viz": 4,
    "cli": 5,
}


def _unit(module: str) -> str:
    """'atat_cli.training.trainer' -> 'training'."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("atat_cli."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("atat_cli."))
    return found


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units == set(LAYERS)


def test_imports_only_look_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if here == "__init__":
            continue
        for module in _imports(path):
            if LAYERS[_unit(module)] > LAYERS[here]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert upward == []
