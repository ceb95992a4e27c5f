"""The one exception type the core raises for bad input.

The CLI turns it into `Error: ...` (+ `Hint: ...`) on stderr and a non-zero exit; library users
catch it like any other exception.
"""


class AtatError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def require(ok: bool, message: str, hint: str | None = None) -> None:
    """Validate once at the edge, one check after another, so a later check may rely on an
    earlier one: the first that fails raises."""
    if not ok:
        raise AtatError(message, hint)
