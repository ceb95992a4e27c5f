"""One transient Rich progress bar on stderr, shared by evaluation and sampling."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True):
    """Yields `update(done, *_)` (or None when disabled); stdout stays clean for results."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, *_: bar.update(task, completed=done)
