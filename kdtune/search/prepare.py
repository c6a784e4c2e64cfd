"""The prepare stage: the space file read and checked, every refusal before any work (a
search that exists, a resume of none or of a changed file, an MLflow store that does not
answer, a trial larger than this machine), then the data decoded, the teacher found (or
trained) and its bank built, once, on the driver: every trial then reads the same
memory-mapped bank."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from kdtune.config import TrainConfig
from kdtune.results import SEARCH_FILE, SearchResult
from kdtune.search.records import Prepared, SearchRequest


def prepare(request: SearchRequest) -> Prepared:
    """Check everything, then make the data, the teacher and its bank ready."""
    from kdtune.paths import results_dir
    from kdtune.space import check_paths, load_space
    from kdtune.tracking import check_tracking, resolve_tracking_uri
    from kdtune.tune import check_start

    space = load_space(request.space_file)
    check_paths(space)
    root = results_dir(request.results)
    uri = resolve_tracking_uri(request.tracking_uri, root)
    check_tracking(uri)  # before any work: an unreachable server is refused at once
    check_start(root / space.name, space, request.resume)  # refuse or resume early
    if request.address is None and not os.environ.get("RAY_ADDRESS"):
        _check_local_resources(space)
    base = TrainConfig.from_dict(space.trial_config(), where=str(request.space_file))
    request.say(
        f"preparing data and the {base.level} level's teacher (cached under {root / 'cache'})"
    )
    teacher_ap = teacher_and_bank(base, root, request.say)
    return Prepared(
        request,
        space,
        root,
        uri,
        search_id=_search_id(root / space.name, request.resume),
        teacher_ap=teacher_ap,
        settings={**space_settings(space), "teacher_val_ap": teacher_ap},
    )


def teacher_and_bank(base: TrainConfig, root: Path, say: Callable[[str], None]) -> float | None:
    """Decode the data, then settle the teacher on the driver, once, before any trial
    (:func:`kdtune.teachers.runs.prepare_for_search`: found, shipped or trained, its bank built):
    every trial then reads the same memory-mapped bank. Returns the teacher's val AP (None for a
    level without an outside teacher's maps to compare)."""
    from kdtune.data.sources import resolve_data
    from kdtune.teachers.runs import prepare_for_search
    from kdtune.train import fit

    splits = {}
    for split in ("train", base.val_split):
        limit = base.max_train_images if split == "train" else base.max_val_images
        carve = base.holdout_fraction if split == "train" else 0.0  # trials never see it
        splits[split] = resolve_data(base.data, split, base.input_size, root, limit, carve)
    return prepare_for_search(base, splits, root, say, fit=fit)


def space_settings(space: Any) -> dict[str, Any]:
    """The search's settings as MLflow's parent run records them."""

    def plain(value: Any) -> Any:
        return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value

    budget = plain(space.budget)
    if isinstance(budget, dict) and budget.get("population", 1) == 1:
        budget.pop("population", None)  # the default: recorded as before budget.population
    return {
        "level": space.level,
        "data": space.data,
        "metric": space.metric,
        "mode": space.mode,
        "sampler": plain(space.sampler),
        "pruner": plain(space.pruner),
        "budget": budget,
        "resources": plain(space.resources),
    }


def _check_local_resources(space: Any) -> None:
    """A local Ray has this machine's CPUs and GPUs: a trial asking for more is refused."""
    import torch

    from kdtune.tune import check_resources

    here = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    check_resources(space.resources, here)


def _search_id(folder: Path, resume: bool) -> str:
    """A resumed search's own id (none for one started before ids), else a new one: a new
    search (even under a name used before) gets a new MLflow parent run."""
    if not resume:
        return uuid.uuid4().hex
    try:
        return SearchResult.load(folder / SEARCH_FILE).search_id
    except (OSError, ValueError, TypeError, KeyError):
        return ""
