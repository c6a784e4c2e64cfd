"""Where kdtune writes: the results folder (``--results``, ``KDTUNE_RESULTS``, else ./results)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
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


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MB pieces."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_mismatch(file: Path, manifest: Path, called: str | None = None) -> str | None:
    """What is wrong with ``file`` against the ``{"bytes", "sha256"}`` record in ``manifest``,
    in words, the manifest called ``called`` (default: its file name); None when both match."""
    name = called or manifest.name
    try:
        meta = json.loads(manifest.read_text())
        want_bytes, want_digest = int(meta["bytes"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {name} is unreadable"
    size = file.stat().st_size
    if size != want_bytes:
        return f"{size} bytes, its {name} says {want_bytes}"
    if file_digest(file) != want_digest:
        return f"its SHA-256 differs from its {name}'s"
    return None
