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
