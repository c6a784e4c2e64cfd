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


class TeacherDiverged(KdtuneError):
    """The teacher kdtune trains for a run or a search diverged: the ``train:`` settings (its
    learning rate first) cannot train it. One line and exit code 2, as for bad input: the
    settings are the user's to change."""


class DiskFull(KdtuneError):
    """A cache or checkpoint could not be written for want of space (``ENOSPC``, ``EDQUOT``):
    the write was abandoned, what was there before is left as it was. One line, exit code 2."""


_FULL = {28, 122}  # errno ENOSPC, EDQUOT (Linux)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` saying the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def disk_full(what: str, where: object, kept: str, then: str = "run the command again") -> DiskFull:
    """The one line of a write that ran out of space: what was written, where, what is kept,
    what to do then."""
    return DiskFull(
        f"disk full: writing {what} to {where} ran out of space; {kept}; "
        f"free space there (or point --results elsewhere)" + (f" and {then}" if then else "")
    )
