"""Grids: YAML files of named variants, each a method, a config preset and --set overrides.

    baseline: mdlm
    variants:
      mdlm: {method: mdlm}
      atat_seed: {config: atat/seed}
      atat_t3: {config: atat/seed, set: [atat.masking.temperature=3.0]}

A grid may also `set` overrides for all its variants (command-line --set comes after them, a
variant's own after that), and a variant may train for `epochs` passes over the run's
data.unique_tokens instead of --tokens: the data-constrained study (grids/data_constrained.yaml).

Every variant is resolved into a full RunConfig when the grid is loaded, so an unknown key or
value is an error before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from atat_cli.config import CONFIG_DIR, RunConfig, load_config
from atat_cli.errors import AtatError

VARIANT_KEYS = {"method", "config", "set", "epochs"}


@dataclass
class Variant:
    name: str
    method: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    epochs: int | None = None  # passes over data.unique_tokens, the variant's budget (None: --tokens)

    def resolve(self, size: str, common: list[str]) -> RunConfig:
        try:
            return load_config(size, self.method, self.config, [*common, *self.overrides])
        except AtatError as e:
            raise AtatError(f"variant '{self.name}': {e.message}", e.hint) from e


@dataclass
class Grid:
    name: str
    baseline: str
    variants: list[Variant]
    overrides: list[str] = field(default_factory=list)  # the grid's `set`, before the command line's


def grid_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "grids").glob("*.yaml"))


def read_grid_file(name_or_path: str, kind: str = "grid") -> tuple[Path, dict]:
    """(path, parsed YAML) of a grid: a YAML file, or the name of a built-in one (configs/grids/)."""
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise AtatError(f"{kind} file not found: {path}", f"built-in grids: {', '.join(grid_names())}")
        path = CONFIG_DIR / "grids" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise AtatError(f"unknown {kind} '{name_or_path}'", f"built-in grids: {', '.join(grid_names())}; or pass a YAML file")
    try:
        return path, yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise AtatError(f"cannot parse {kind} file {path}: {str(e).splitlines()[0]}") from e


def load_grid(name_or_path: str, only: list[str] | None = None) -> Grid:
    path, data = read_grid_file(name_or_path)
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise AtatError(f"grid file {path} needs a 'variants' mapping of name -> {{method, config, set}}")
    unknown_top = set(data) - {"baseline", "variants", "set"}
    if unknown_top:
        raise AtatError(f"unknown grid key '{sorted(unknown_top)[0]}' in {path}", "a grid has 'baseline', 'variants' and 'set'")
    variants = []
    for name, spec in data["variants"].items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - VARIANT_KEYS:
            bad = sorted(set(spec) - VARIANT_KEYS) if isinstance(spec, dict) else spec
            raise AtatError(f"variant '{name}' has unknown key(s) {bad}", f"a variant takes {', '.join(sorted(VARIANT_KEYS))}")
        epochs = spec.get("epochs")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise AtatError(f"variant '{name}': epochs must be a whole number >= 1 (got {epochs!r})")
        variants.append(Variant(str(name), spec.get("method"), spec.get("config"), _overrides(spec), epochs))
    names = [v.name for v in variants]
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise AtatError(f"unknown variant '{missing[0]}' in grid '{path.stem}'", f"variants: {', '.join(names)}")
        variants = [v for v in variants if v.name in only]
    baseline = str(data.get("baseline", variants[0].name))
    if baseline not in names:
        raise AtatError(f"baseline '{baseline}' is not a variant of grid '{path.stem}'")
    return Grid(path.stem, baseline, variants, _overrides(data))


def _overrides(spec: dict) -> list[str]:
    """A grid's or a variant's `set`: one override or a list of them."""
    overrides = spec.get("set") or []
    return [str(o) for o in ([overrides] if isinstance(overrides, str) else overrides)]
