"""Where kdtune writes: the results folder (``--results``, ``KDTUNE_RESULTS``, else ./results)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_RESULTS = "KDTUNE_RESULTS"


def results_dir(override: str | Path | None = None) -> Path:
    """The results folder: an explicit path, else ``$KDTUNE_RESULTS``, else ``./results``."""
    path = Path(override) if override else Path(os.environ.get(ENV_RESULTS) or "results")
    return path.resolve()


def cache_dir(results: Path | None = None) -> Path:
    """Decoded data sets and trained teachers, shared by every run using the same results folder."""
    return (results or results_dir()) / "cache"
