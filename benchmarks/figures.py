"""What every benchmark does with its figures: print them as JSON, and write them to ``--json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(figures: Any, path: Path | None) -> None:
    """Write ``figures`` as indented JSON to ``path`` (its folder made), if a path is given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))


def emit(figures: Any, path: Path | None) -> None:
    """Print ``figures`` as indented JSON, and :func:`save` them to ``path``."""
    print(json.dumps(figures, indent=2))
    save(figures, path)
