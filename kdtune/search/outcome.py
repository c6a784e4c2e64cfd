"""The report stage: what a search comes to. Every trial diagnosed against the search's best
(the search report, :mod:`kdtune.diagnose`), the guidance's next points written as a ready
search-space file, MLflow's links; :class:`SearchOutcome` is what ``kdtune search`` prints."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from kdtune.results import NEXT_POINTS_FILE
from kdtune.search.records import Prepared, Tracked


@dataclass
class SearchOutcome:
    result: Any  # kdtune.results.SearchResult
    report: Any  # kdtune.diagnose.SearchReport
    tracking_uri: str
    next_space: Path | None  # the guidance's next points as a ready search-space file
    teacher_ap: float | None = None  # the level's teacher on the validation split
    links: dict[str, Any] | None = None  # MLflow UI links: runs, compare view (kdtune ui's address)
    tracking_lag: str | None = None  # one line when MLflow lagged behind the search

    def teacher_warning(self) -> str | None:
        """Why this search cannot speak to distillation, if its teacher is no better than its
        best student; None otherwise."""
        result = self.result
        if result.teacher_val_ap is None and self.teacher_ap is not None:
            result = replace(result, teacher_val_ap=self.teacher_ap)
        return result.withheld


def report(prepared: Prepared, tracked: Tracked) -> SearchOutcome:
    """The search report, its next points as a space file, MLflow's links (none while MLflow
    lags)."""
    space = prepared.space
    found = report_of(tracked.result)
    next_space = write_guided_space(
        prepared.space_file, space, found.next_points, prepared.folder / NEXT_POINTS_FILE
    )
    links = _links(prepared.uri, space.name) if tracked.lag is None else None
    return SearchOutcome(
        tracked.result,
        found,
        prepared.uri,
        next_space,
        prepared.teacher_ap,
        links,
        tracking_lag=tracked.lag,
    )


def report_of(result: Any) -> Any:
    """The search report: every trial diagnosed against the search's best (what MLflow's
    tags say too, see :func:`kdtune.tracking.log_search_result`); checked against the answer
    and its next points taken around what the confirmation supports, where there is one."""
    from kdtune.answer import supported
    from kdtune.diagnose import TrialSummary, diagnose_trial, search_report

    best = result.best
    best_ap = best.value(result.metric) if best is not None else None

    def summary(record: Any) -> Any:
        return TrialSummary(
            record.trial_id,
            record.reported_schedule,
            record.state,
            record.value(),
            diagnose_trial(record, best_ap),
        )

    backed = None if result.withheld else supported(result)
    return search_report(
        [summary(record) for record in result.trials],
        supported=backed,
        supported_runs=[summary(run) for run in result.confirmations] if backed else (),
    )


def write_guided_space(space_file: Path, space: Any, points: list[str], out: Path) -> Path | None:
    """A grid search over ``points`` (β schedule specs) with the settings of ``space_file``;
    None where there is nothing to try (or for a chain, whose guidance is per level)."""
    from kdtune.answer import grid_point
    from kdtune.yamlfile import load_yaml_mapping

    if not points or space.level == "chain":
        return None
    raw = load_yaml_mapping(Path(space_file), "space")
    raw["name"] = f"{space.name}-guided"
    raw["data"] = space.data  # resolved: the new file lives elsewhere
    if isinstance(raw.get("teacher"), dict) and raw["teacher"].get("checkpoint"):
        raw["teacher"]["checkpoint"] = space.teacher.checkpoint
    raw["sampler"] = {"type": "grid", "seed": 0}
    raw.pop("warm_start", None)  # a grid runs its own points (the space refuses both)
    budget = dict(raw.get("budget") or {})
    budget.pop("num_samples", None)
    raw["budget"] = budget
    raw["search"] = {"grid": [grid_point(p, alpha=_uses_alpha(space)) for p in points]}
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# The tuning guidance's next points after search {space.name!r}, as a grid.\n"
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return out


def _uses_alpha(space: Any) -> bool:
    """Whether the space's dimensions name the weighting by α (a fixed ratio searched as
    ``alpha``, or grid points given as ``alpha``), so that its next points are written so too."""
    grid = getattr(space, "grid", None) or ()
    if grid:
        return any("alpha" in point.raw for point in grid)
    weightings = getattr(space, "weightings", None) or {}
    return any(getattr(w, "alpha", None) is not None for w in weightings.values())


def _links(uri: str, search: str) -> dict[str, Any] | None:
    """The search's MLflow UI links: on its server, or where ``kdtune ui`` serves a local store."""
    from kdtune.tracking import search_link

    return search_link(uri, search)
