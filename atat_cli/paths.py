"""Where atat keeps prepared data and runs (overridable by environment, so tests stay hermetic)."""

import os
from pathlib import Path


def data_root() -> Path:
    """Prepared corpora: $ATAT_DATA_DIR, else ~/.cache/atat/data."""
    env = os.environ.get("ATAT_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "atat" / "data"


def runs_root() -> Path:
    """Training runs: $ATAT_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("ATAT_RUNS_DIR", "runs"))
