"""The human description of a search space, as ``kdtune search --dry-run`` prints it.

Internal to :mod:`kdtune.space`, which re-exports :func:`describe`; import it from there.
"""

from __future__ import annotations

from typing import Any

from kdtune.config import REFERENCE_ALPHA, alpha_to_schedule
from kdtune.schedules import words
from kdtune.space.dimensions import SLOTS
from kdtune.space.optuna_objects import PrunerSpec
from kdtune.space.parse import SearchSpace

LEVEL_TEXT: dict[str, str] = {
    "first": "first (teacher -> med)",
    "second": "second (med -> tiny)",
    "chain": "chain (teacher -> med -> tiny)",
}


def _format_options(options: dict[str, Any]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, PrunerSpec):
            inner = _format_options(value.options)
            parts.append(f"{key}={value.type}" + (f"({inner})" if inner else ""))
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def describe(space: SearchSpace) -> str:
    """A readable multi-line summary of the space, for ``--dry-run``."""
    b, r, s, p = space.budget, space.resources, space.sampler, space.pruner
    seed = f", seed {s.seed}" if s.seed is not None else ", no seed"
    sampler = s.type + seed + (f", {_format_options(s.options)}" if s.options else "")
    pruner = p.type + (f", {_format_options(p.options)}" if p.options else "")
    if p.type == "hyperband" and "max_resource" not in p.options:
        pruner += f", max_resource={b.max_epochs} (max_epochs)"
    limit = f", time limit {b.time_limit_s:g} s" if b.time_limit_s else ""
    t = space.teacher
    trained = f"trained by kdtune ({t.recipe} recipe, {t.epochs} epochs, cached)"
    teacher = {
        "auto": f"kdtune's shipped teacher where it fits, else trained ({t.epochs} epochs, cached)",
        "shipped": "kdtune's shipped teacher",
    }.get(t.recipe, trained)
    if t.checkpoint:
        teacher = f"checkpoint {t.checkpoint}"
    lines = [
        f"search space {space.name!r}  ({space.file})",
        f"  level      {LEVEL_TEXT[space.level]}",
        f"  data       {space.data}",
        f"  metric     {space.metric} ({space.mode})",
        f"  sampler    {sampler}",
        f"  pruner     {pruner}" + ("   (steps are epochs)" if p.type != "none" else ""),
        f"  budget     {b.num_samples} trials x up to {b.max_epochs} epochs, "
        f"evaluated every {b.eval_every}, {b.max_concurrent} at a time{limit}"
        + ("" if b.population == 1 else f", {b.population} trials a Ray trial (populations)"),
        (
            "  resources  auto: the GPUs Ray sees shared by the trials; else 1 CPU per trial"
            if r.auto
            else f"  resources  {r.cpu:g} CPU, {r.gpu:g} GPU per trial"
        ),
        f"  teacher    {teacher}",
    ]
    if space.train:
        fixed = ", ".join(f"{k}={v}" for k, v in space.train.items())
        lines.append(f"  train      {fixed}")
    lines += _describe_dimensions(space)
    if space.warm_start:
        specs = [spec for spec, _ in space.warm_start_scenarios()]
        listed = "; ".join(map(words, specs)) if specs else "none of them is in this space"
        lines.append(f"  warm start the reference's named scenarios first: {listed}")
    lines.append(
        f"  trials     {b.num_samples} (at most {b.num_samples * b.max_epochs} epochs in all)"
    )
    if space.confirm is not None:
        c = space.confirm
        default = words(alpha_to_schedule(REFERENCE_ALPHA.get(space.level, 1.0)))
        configs = c.top_k + 2
        lines.append(
            f"  confirm    a race: the best {c.top_k} besides the seed default ({default}), "
            f"the default and α 1 / β 0, {c.seeds} further seeds each, then {c.round_seeds} more "
            f"a round for those still in, up to {c.max_seeds} seeds ({b.max_epochs} epochs a "
            f"run, at most {configs * c.max_seeds * b.max_epochs} epochs); stops when one "
            f"remains or the rest are equivalent within ±{c.margin:g} AP; a run is evaluated "
            + ("at its end" if c.eval_every is None else f"every {c.eval_every} epochs")
        )
        if c.population != 1:
            size = (
                "as many as fit the GPU (1 on a CPU)"
                if c.population == "auto"
                else f"up to {c.population}"
            )
            lines.append(f"             a round's runs of one seed train as populations of {size}")
    return "\n".join(lines)


def _describe_dimensions(space: SearchSpace) -> list[str]:
    if space.grid:
        how = "each once" if space.sampler.type == "grid" else f"sampled by {space.sampler.type}"
        lines = [f"  grid       {len(space.grid)} points ({how}), parameter 'point':"]
        width = max(len(point.label()) for point in space.grid)
        for i, point in enumerate(space.grid):
            sched = point.overrides.get("schedule")
            weight = f"   {words(sched)}" if sched else ""
            lines.append(f"    {i:>3}  {point.label():<{width}}{weight}".rstrip())
        return lines
    lines = ["  dimensions"]
    for key, weighting in space.weightings.items():
        lines.append(f"    {key}:")
        lines += [f"      {line}" for line in weighting.describe_lines(SLOTS[key][0])]
    if space.lr is not None:
        lines.append(f"    lr {space.lr.describe()}")
    if space.batch_size is not None:
        lines.append(f"    batch_size {space.batch_size.describe()}")
    return lines
