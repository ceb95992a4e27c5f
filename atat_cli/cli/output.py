"""Output conventions shared by every command: results on stdout, progress and logs on stderr."""

import json
import sys

from rich.console import Console

# Results (tables, texts, JSON) go to stdout so they can be piped; everything else to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_json(obj) -> None:
    """One JSON object on stdout, plain (no Rich markup), so `| jq` always works."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    err.print(message, highlight=False)
