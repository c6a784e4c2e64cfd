"""Where kdtune writes: the results folder (``--results``, ``KDTUNE_RESULTS``, else ./results)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

ENV_RESULTS = "KDTUNE_RESULTS"


def results_dir(override: str | Path | None = None) -> Path:
    """The results folder: an explicit path, else ``$KDTUNE_RESULTS``, else ``./results``."""
    path = Path(override) if override else Path(os.environ.get(ENV_RESULTS) or "results")
    return path.resolve()


def cache_dir(results: Path | None = None) -> Path:
    """Decoded data sets and trained teachers, shared by every run using the same results folder."""
    return (results or results_dir()) / "cache"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): one builder of a cache entry at a
    time, across processes and Ray workers."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
