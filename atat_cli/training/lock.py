"""One training per run folder: an advisory lock held for the life of the training."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from atat_cli.errors import AtatError


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None
        self.created_dir = False  # whether this lock's mkdir made the run folder (set on entry)

    def __enter__(self) -> RunLock:
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise AtatError(f"run folder {self.path.parent} is a file", "pass --out with a folder (new or empty)")
        self.path.parent.parent.mkdir(parents=True, exist_ok=True)
        try:  # mkdir is atomic: of two trainings started at once, exactly one creates the folder
            self.path.parent.mkdir()
            created = True
        except FileExistsError:
            created = False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AtatError(f"run folder {self.path.parent} is in use by another training",
                            "wait for it to finish, or pass a different --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        self.created_dir = created
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
