"""Search-space files: parse and validate a YAML space, then sample trials from it.

A search space says which level is trained, on which data, with which sampler, pruner, budget
and per-trial resources, and which dimensions are searched: the distillation weighting (a fixed
ratio α or an adaptive β schedule), optionally the learning rate and the batch size, or an
explicit list of grid points. The format is documented in ``docs/search-spaces.md``.

Every problem with a file raises :class:`~kdtune.errors.KdtuneError` with one line naming the
file, the key path (``search.weighting.fixed.alpha.low``) and the bad value.

Sampling is define-by-run: :meth:`SearchSpace.suggest` asks an Optuna trial for the parameters
and returns :class:`~kdtune.config.TrainConfig` overrides (``schedule``, ``schedule_second``,
``lr``, ``batch_size``); a shape's parameters are asked for only when that shape is chosen.

The modules inside are private; everything public is imported from here:

- ``parse``: the :class:`SearchSpace` record, reading and validating a file, suggest/trial_config;
  :func:`make_sampler`, :func:`make_pruner`, :func:`check_paths`
- ``dimensions``: constants, ranges, choices, the weighting of a level, grid points
- ``optuna_objects``: sampler and pruner specs, their options checked against Optuna's
  constructors, the Optuna objects built from them
- ``description``: :func:`describe`, the summary ``kdtune search --dry-run`` prints
"""

from __future__ import annotations

from kdtune.space.description import LEVEL_TEXT, describe
from kdtune.space.dimensions import (
    ADAPTIVE_SHAPES,
    WARMUP_MAX,
    Choice,
    Const,
    Dimension,
    GridPoint,
    Range,
    Weighting,
)
from kdtune.space.optuna_objects import PRUNERS, SAMPLERS, PrunerSpec, SamplerSpec
from kdtune.space.parse import (
    METRICS,
    SPACE_LEVELS,
    Budget,
    Confirm,
    Resources,
    SearchSpace,
    TeacherSpec,
    check_paths,
    load_space,
    make_pruner,
    make_sampler,
    parse_space,
)

__all__ = [
    "ADAPTIVE_SHAPES",
    "LEVEL_TEXT",
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "SPACE_LEVELS",
    "WARMUP_MAX",
    "Budget",
    "Choice",
    "Confirm",
    "Const",
    "Dimension",
    "GridPoint",
    "PrunerSpec",
    "Range",
    "Resources",
    "SamplerSpec",
    "SearchSpace",
    "TeacherSpec",
    "Weighting",
    "check_paths",
    "describe",
    "load_space",
    "make_pruner",
    "make_sampler",
    "parse_space",
]
