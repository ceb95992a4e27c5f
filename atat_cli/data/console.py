"""Where data preparation reports: logs and progress bars on stderr.

stdout stays clean for results and --json; the data package does not import the CLI, hence its
own console.
"""

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def log(message: str) -> None:
    console.print(message, markup=False, highlight=False)
