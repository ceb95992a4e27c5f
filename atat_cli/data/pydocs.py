"""`pydocs`: the offline default corpus, built from documentation that ships with CPython.

Every Python installation carries about 1 MB of English reference text: the language
reference topics behind `help('if')` (`pydoc_data.topics`) and the docstrings of the standard
library. Using it as the default corpus means `atat train` works on a machine with no network.

Docstrings are read with `ast` from the stdlib *source files* rather than by importing the
modules: importing e.g. `antigravity`, `this` or `tkinter` has side effects, is slow, and depends
on what optional C extensions happen to be built.

The result is deterministic for a given Python version: topics in sorted key order, then files in
sorted path order, definitions in source order, exact duplicates dropped.
"""

import ast
import sys
import sysconfig
from pathlib import Path

# Top-level stdlib packages/modules left out: tests, demos, the IDE, vendored or deprecated code,
# the Tk GUI bindings and codec tables. They are large and mostly not reference prose; leaving them
# out keeps the corpus near 1.5 MB of documentation-style English.
SKIP_TOP = {
    "test", "idlelib", "turtledemo", "lib2to3", "ensurepip", "site-packages", "dist-packages",
    "distutils", "tkinter", "turtle", "encodings",
}
# Folder names skipped at any depth (package-internal test suites).
SKIP_ANYWHERE = {"test", "tests", "idle_test", "__pycache__"}
# Docstrings shorter than this are mostly one-liners like "Return self." that add nothing.
MIN_DOC_CHARS = 40


def source() -> str:
    """Where the text comes from, for meta.json (the corpus changes with the Python version)."""
    return f"pydoc_data.topics + stdlib docstrings of CPython {sys.version.split()[0]}"


def _topic_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key].strip() for key in sorted(topics)]


def _stdlib_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = path.relative_to(stdlib).with_suffix("").parts
        if parts[0] in SKIP_TOP or parts[0].startswith("config-"):  # config-3.x-<platform>/
            continue
        if any(p in SKIP_ANYWHERE for p in parts[:-1]):
            continue
        # Private modules (_pydecimal, _pyio, ...) duplicate public docs or are internals.
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        files.append(path)
    return files


def _module_name(path: Path, stdlib: Path) -> str:
    parts = list(path.relative_to(stdlib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _docstrings(tree: ast.Module, module: str) -> list[str]:
    """Module, public class and public function docstrings, each headed by its dotted name."""
    docs = []
    doc = ast.get_docstring(tree)
    if doc:
        docs.append(f"{module}\n\n{doc}")

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.name.startswith("_"):
                    continue  # private helpers document implementation details, not the API
                qualname = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    docs.append(f"{qualname}\n\n{doc}")
                if isinstance(child, ast.ClassDef):
                    visit(child, qualname)

    visit(tree, module)
    return docs


def documents() -> list[str]:
    """All pydocs documents, one per topic or docstring, in a deterministic order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = _topic_documents()
    for path in _stdlib_files():
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue  # a few stdlib files are deliberately broken (bad encodings, syntax tests)
        docs.extend(_docstrings(tree, _module_name(path, stdlib)))
    # Drop short and duplicate documents (many re-exported or overridden methods repeat a
    # docstring verbatim); keep the first occurrence so the order stays deterministic.
    seen, unique = set(), []
    for doc in docs:
        if len(doc) >= MIN_DOC_CHARS and doc not in seen:
            seen.add(doc)
            unique.append(doc)
    return unique
