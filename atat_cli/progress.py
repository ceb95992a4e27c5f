"""One Rich progress bar on stderr, shared by training, evaluation and sampling; stdout stays
clean for results."""

from __future__ import annotations

import contextlib


class ProgressBar:
    """label, bar, done/total, an info text, ETA. Disabled, it draws nothing and `note` logs."""

    def __init__(self, label: str, total: int, *, start: int = 0, enabled: bool = True, transient: bool = True,
                 log=print):
        self.enabled = enabled
        self.log = log
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=transient)
            self.task = self.progress.add_task(label, total=total, completed=start, info="")

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, done: int, info: str | None = None) -> None:
        if self.enabled:
            fields = {} if info is None else {"info": info}
            self.progress.update(self.task, completed=done, **fields)

    def note(self, message: str) -> None:
        """A line above the bar (through the bar's console, so the bar is not torn)."""
        if self.enabled:
            self.progress.console.print(message)
        else:
            self.log(message)


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True):
    """A transient bar for a loop: yields `update(done, *_)`, or None when disabled."""
    if not enabled:
        yield None
        return
    with ProgressBar(label, total) as bar:
        yield lambda done, *_: bar.update(done)
