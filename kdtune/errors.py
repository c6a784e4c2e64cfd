"""The one exception type that means "the user gave bad input".

The CLI turns a :class:`KdtuneError` into a one-line message and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KdtuneError(Exception):
    """Bad input from the user: a missing path, a malformed file, an out-of-range value."""


class TrialDiverged(RuntimeError):
    """A trial's loss became NaN or infinite: it cannot go on. Raised by the trial
    (``kdtune.train``), caught by its type where trials run (``kdtune.tune``)."""


class SearchInterrupted(Exception):
    """A search stopped by SIGINT (Ctrl-C) or SIGTERM, its state saved so that ``--resume``
    continues it. The CLI prints its one line and exits with ``128 + signum`` (130, 143)."""

    def __init__(self, signum: int, message: str = "", result: object = None) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(message or f"search interrupted by {name}")
        self.signum = signum
        self.result = result  # the search's records as saved (a SearchResult), if known

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def line(self) -> str:
        """The one line the user sees."""
        return f"interrupted: {self}"
