"""The plain records the search pipeline's stages pass on: what was asked
(:class:`SearchRequest`), what the prepare stage made ready (:class:`Prepared`), what the
tracking stage says of MLflow (:class:`Tracked`). The trials and confirmation stages pass a
:class:`~kdtune.results.SearchResult`; the report stage returns a
:class:`~kdtune.search.outcome.SearchOutcome`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdtune.results import SearchResult


def _silent(_message: str) -> None:
    pass


@dataclass(frozen=True)
class SearchRequest:
    """``kdtune search``'s arguments: the space file, where results and MLflow go, Ray's
    address, whether to resume, the live view, and where progress lines go (``say``)."""

    space_file: Path
    results: Path | None = None
    address: str | None = None
    resume: bool = False
    tracking_uri: str | None = None
    progress: bool = True
    say: Callable[[str], None] = _silent

    @property
    def resume_command(self) -> str:
        """What an interrupted search tells the user to run."""
        where = f" --results {self.results}" if self.results is not None else ""
        return f"kdtune search {self.space_file} --resume{where}"


@dataclass
class Prepared:
    """A search ready for its trials: the space read and checked, the results folder, the
    MLflow store (answering), the search's id, the teacher's AP and the settings logged."""

    request: SearchRequest
    space: Any  # kdtune.space.SearchSpace
    root: Path  # the results folder
    uri: str  # the MLflow store
    search_id: str
    teacher_ap: float | None  # the level's teacher on the validation split, where it has one
    settings: dict[str, Any] = field(default_factory=dict)  # the search's settings as logged

    @property
    def folder(self) -> Path:
        return self.root / self.space.name

    @property
    def space_file(self) -> Path:
        return Path(self.request.space_file)


@dataclass
class Tracked:
    """The search's result once MLflow has its final logging; ``lag`` is one line when MLflow
    lagged behind the search (the search's own records are complete either way)."""

    result: SearchResult
    lag: str | None = None
