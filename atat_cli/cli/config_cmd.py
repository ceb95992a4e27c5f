"""`atat config list|show|copy`: the shipped presets, with every key's help text."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from atat_cli.cli import options
from atat_cli.cli.output import out


def list_presets():
    """List the shipped presets (size presets are used by `atat train --size`).

    Example: atat config list
    """
    from atat_cli.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out.print(f"{path.relative_to(CONFIG_DIR).with_suffix('')}  [dim]{first.lstrip('# ')}[/]", highlight=False)


def show(
    name: Annotated[str, typer.Argument(help="Size preset (tiny), shipped preset (atat/seed) or path of a config file.")] = "tiny",
    method: options.MethodOpt = None,
    overrides: options.OverridesOpt = None,
):
    """Print the fully resolved config for a preset, one key per line with its help text.

    Example: atat config show tiny --set optim.lr=1e-3
    """
    import yaml

    from atat_cli.config import describe, load_config, preset_names

    is_size = name in preset_names("sizes")
    cfg = load_config(size=name if is_size else None, method=method, config_file=None if is_size else name,
                      overrides=overrides or [])
    if cfg.method == "atat":
        from atat_cli.config import OBJECTIVE_KINDS

        kind = cfg.atat.kind()
        out.print(f"# objective: {kind}: {OBJECTIVE_KINDS[kind]}", highlight=False)
    section = None
    for key, value, help_text in describe(cfg):
        head, _, leaf = key.rpartition(".")
        if head != section:
            section = head
            if head:
                out.print(f"{head}:", highlight=False)
        indent = "  " if head else ""
        rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        out.print(f"{indent}{leaf}: {rendered}  [dim]# {help_text}[/]", highlight=False)


def copy(
    name: Annotated[str, typer.Argument(help="Preset to copy, e.g. sizes/tiny (see `atat config list`).")],
    dest: Annotated[Path, typer.Argument(help="Where to write the YAML file.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
):
    """Copy a shipped preset to edit it, then train with --config.

    Example: atat config copy sizes/tiny my.yaml && atat train --config my.yaml
    """
    from atat_cli.config import shipped_preset
    from atat_cli.errors import AtatError, require

    src = shipped_preset(name)
    require(not dest.is_dir(), f"{dest} is a folder", "give a file name, e.g. my.yaml")
    require(dest.parent.is_dir(), f"cannot write {dest}: {dest.parent} is not a folder", "create it first")
    if dest.exists() and not force:
        raise AtatError(f"{dest} exists", "pass --force to overwrite it")
    shutil.copyfile(src, dest)
    out.print(f"Wrote {dest}")
