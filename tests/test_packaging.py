"""The wheel built from the repository: every preset YAML and every module of the package, and
nothing else (a few seconds, offline). Installing it into a fresh venv and running the CLI is
tools/wheel_check.sh, too slow for the unit suite."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The working tree's files that git tracks or would track (new files too, ignored ones not),
    copied with links kept as links. Building in a copy keeps setuptools' build/ folder, whose
    stale files would end up in a later wheel, out of the repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    for name in sorted({n for n in listed.decode().split("\0") if n}):
        source, target = REPO / name, dest / name
        if not os.path.lexists(source):  # deleted in the working tree, not committed yet
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git repository (its file list says what a build sees)")
    tmp = tmp_path_factory.mktemp("wheel")
    source = _source_copy(tmp / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (tmp / "dist").glob("atat-*.whl")
    return path


def test_wheel_ships_every_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.relative_to(REPO).as_posix() for p in (REPO / "atat_cli" / "configs").rglob("*.yaml")}
    assert {"atat_cli/configs/sizes/test.yaml", "atat_cli/configs/grids/atat.yaml",
            "atat_cli/configs/atat/seed.yaml"} <= presets  # sizes/, grids/ and atat/ are all there
    assert presets <= names, sorted(presets - names)
    # `configs` at the top of the repository is a link to atat_cli/configs, not a second package
    assert (REPO / "configs").resolve() == (REPO / "atat_cli" / "configs").resolve()
    assert not any(n.startswith("configs/") for n in names)


def test_wheel_ships_the_package_and_only_it(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "atat_cli").rglob("*.py")}
    shipped = {n for n in names if n.endswith(".py")}
    assert shipped == modules, (sorted(modules - shipped), sorted(shipped - modules))
    top = {n.split("/")[0] for n in names}
    assert top == {"atat_cli", next(n for n in top if n.endswith(".dist-info"))}  # no tests/, benchmarks/


def test_wheel_metadata(wheel):
    archive = zipfile.ZipFile(wheel)
    info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "atat = atat_cli.cli.app:run" in entry_points
    metadata = archive.read(f"{info}/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("torch") for r in requires) and any(r.startswith("typer") for r in requires)
    assert any("tensorboard" in r and 'extra == "tracking"' in r for r in requires)
