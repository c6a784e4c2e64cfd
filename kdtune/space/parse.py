"""The search-space record, and reading it from YAML: the file's settings (level, data, metric,
budget, resources, teacher, the fixed ``train`` block), its ``search`` block, and the checks
that every trial it can sample is a valid :class:`~kdtune.config.TrainConfig`.

Internal to :mod:`kdtune.space`, which re-exports the public names; import them from there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from kdtune import checks
from kdtune.checks import Where
from kdtune.config import NAMED_SCENARIOS, TEACHER_RECIPES, TrainConfig
from kdtune.data.sources import DEFAULT_HOLDOUT_FRACTION, has_test_keypoints, parse_data
from kdtune.errors import KdtuneError
from kdtune.results import METRICS
from kdtune.space.dimensions import (
    BATCH,
    LR,
    SLOTS,
    Dimension,
    GridPoint,
    Weighting,
    parse_dimension,
    parse_grid,
    parse_schedule_spec,
    parse_weighting,
)
from kdtune.space.optuna_objects import (
    PrunerSpec,
    SamplerSpec,
    build_pruner,
    build_sampler,
    construct,
    parse_pruner,
    parse_sampler,
    pruner_for,
    sampler_for,
)
from kdtune.yamlfile import parse_yaml, read_text

SPACE_LEVELS: tuple[str, ...] = ("first", "second", "chain")
HOLDOUT_SPLIT = "test"  # what `kdtune export` checks the best configuration on, by default
# TrainConfig keys the space file sets elsewhere (key -> where).
_TRAIN_RESERVED: dict[str, str] = {
    "level": "level",
    "data": "data",
    "epochs": "budget.max_epochs",
    "eval_every": "budget.eval_every",
    "teacher_checkpoint": "teacher.checkpoint",
    "teacher_epochs": "teacher.epochs",
    "teacher_recipe": "teacher.recipe",
}
_TOP_KEYS: tuple[str, ...] = (
    "name",
    "level",
    "data",
    "metric",
    "mode",
    "sampler",
    "pruner",
    "budget",
    "resources",
    "teacher",
    "train",
    "search",
    "warm_start",
    "confirm",
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# ---------------------------------------------------------------------------------------------
# Budget, resources, teacher


@dataclass(frozen=True)
class Budget:
    """How much the search may spend. Optuna steps (what pruners count) are epochs."""

    num_samples: int
    max_epochs: int
    eval_every: int = 1
    max_concurrent: int = 1
    time_limit_s: float | None = None
    max_failures: int = 0  # Tune restarts a failed trial (a lost node) this often
    population: int | str = 1  # Optuna trials a Ray trial trains as a population, or "auto"


@dataclass(frozen=True)
class Resources:
    """What one trial reserves from Ray; fractions of a GPU let trials share one.

    ``resources: auto`` (``auto``): settled when Ray is up (:meth:`settle`) from what it sees:
    with GPUs, they are shared evenly by the concurrent trials (each at most one) and the CPUs
    too (at least one each); without a GPU (or with ``train.device: cpu``), the CPU fallback
    ``{cpu: 1, gpu: 0}``, the same as a CPU space file's. Until then it reads as that fallback.
    """

    cpu: float = 1.0
    gpu: float = 0.0
    auto: bool = False

    def settle(
        self, cluster: Mapping[str, float], concurrent: int, device: str = "auto"
    ) -> tuple[Resources, str]:
        """What a trial reserves on ``cluster`` (Ray's resource totals) with ``concurrent``
        trials at once, and the one line that says so (empty where nothing was automatic)."""
        if not self.auto:
            return self, ""
        gpus, cpus = float(cluster.get("GPU", 0.0)), float(cluster.get("CPU", 1.0))
        if gpus < 1 or device == "cpu":
            why = "train.device is cpu" if gpus >= 1 else "no GPU visible to Ray"
            return Resources(), f"resources: auto: {why}: each trial gets 1 CPU, no GPU"
        share = max(math.floor(min(1.0, gpus / concurrent) * 1e4) / 1e4, 1e-4)
        cpu = max(1.0, math.floor(cpus / concurrent))
        line = (
            f"resources: auto: {gpus:g} GPU(s) visible to Ray: each of {concurrent} trials at "
            f"once gets {share:g} GPU and {cpu:g} CPU(s) and trains on cuda"
        )
        return Resources(cpu, share), line


@dataclass(frozen=True)
class TeacherSpec:
    """The level's teacher: a checkpoint, or None for kdtune to train (and cache) one.

    ``recipe`` says how kdtune trains a missing teacher (see ``TrainConfig.teacher_recipe``).
    """

    checkpoint: str | None = None
    epochs: int = 20
    recipe: str = "auto"


@dataclass(frozen=True)
class Confirm:
    """The confirmation stage after the search, a race in rounds: the ``top_k`` best
    configurations other than the seed's default, the default and α = 1 (``fixed:0``), first
    trained at full budget with ``seeds`` further training seeds each; then, while the leader
    has neither beaten nor been found equivalent within ±``margin`` AP to every other
    candidate, ``round_seeds`` more seeds for those still in, up to ``max_seeds`` in all.
    A confirmation run is judged by its final AP alone, so by default it evaluates (and
    checkpoints) once, at its end; ``eval_every`` evaluates it every that many epochs, each
    evaluation a checkpoint that a resumed search continues from (worth it where one run is
    long, not where it takes a minute). ``population`` (P > 1, or ``auto``) trains each round's
    runs of one seed in populations of up to P members, one Ray trial each
    (:func:`kdtune.population_fit.fit_population`); ``auto``: on a GPU as many as fit its free
    memory, on a CPU 1 (a population does not pay there). 1, the default: one trial a run.
    ``pick`` says how candidates and the recommendation are chosen: ``pooled`` (the default),
    by the pooled model of every full-budget run (:mod:`kdtune.pooled`) where the runs differ
    only in weighting and seed; ``mean``, by the best search trial and the race's mean alone."""

    top_k: int = 3
    seeds: int = 3
    margin: float = 0.005
    max_seeds: int = 6
    round_seeds: int = 1
    eval_every: int | None = None
    population: int | str = 1  # members a population at most, or "auto"
    pick: str = "pooled"  # or "mean"

    @property
    def max_rounds(self) -> int:
        """The most rounds the race can take (the first, then ``round_seeds`` at a time)."""
        return 1 + -(-(self.max_seeds - self.seeds) // self.round_seeds)

    def round_of(self, seeds_so_far: int) -> int:
        """How many seeds the next round adds after ``seeds_so_far`` (none: the race is over)."""
        if seeds_so_far == 0:
            return self.seeds
        return max(0, min(self.round_seeds, self.max_seeds - seeds_so_far))


_CONFIRM_KEYS = (
    "top_k",
    "seeds",
    "margin",
    "max_seeds",
    "round_seeds",
    "eval_every",
    "population",
    "pick",
)
POPULATION_AUTO = "auto"
PICKS = ("pooled", "mean")


def _confirm(raw: Any, where: Where, level: str, metric: str) -> Confirm | None:
    if raw is None or raw is False:
        return None
    if level == "chain":
        where.fail("applies to a search of one level (a chain weights two)", raw)
    if metric != "val/ap":
        where.fail(f"pairs validation AP image by image; the space's metric is {metric}", raw)
    if raw is True:
        return Confirm()
    checks.mapping(raw, where, _CONFIRM_KEYS)
    seeds = checks.integer(raw.get("seeds", 3), where.at("seeds"), low=1, high=100)
    max_seeds = checks.integer(
        raw.get("max_seeds", max(seeds, Confirm.max_seeds)), where.at("max_seeds"), high=100
    )
    if max_seeds < seeds:
        where.at("max_seeds").fail(
            f"must be at least the first round's seeds ({seeds}): it caps the seeds in all",
            max_seeds,
        )
    return Confirm(
        top_k=checks.integer(raw.get("top_k", 3), where.at("top_k"), low=1, high=50),
        seeds=seeds,
        margin=checks.number(
            raw.get("margin", Confirm.margin), where.at("margin"), low=0.0, high=1.0, low_open=True
        ),
        max_seeds=max_seeds,
        round_seeds=checks.integer(
            raw.get("round_seeds", Confirm.round_seeds), where.at("round_seeds"), low=1, high=100
        ),
        eval_every=None
        if raw.get("eval_every") is None
        else checks.integer(raw["eval_every"], where.at("eval_every"), low=1, high=100_000),
        population=_population(raw.get("population", 1), where.at("population")),
        pick=checks.string(raw.get("pick", Confirm.pick), where.at("pick"), PICKS),
    )


def _population(value: Any, where: Where) -> int | str:
    """``confirm.population``, ``budget.population``: an integer of at least 1, or ``auto``."""
    if value == POPULATION_AUTO and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where.fail(f"must be an integer of at least 1 or {POPULATION_AUTO}", value)
    return checks.integer(value, where, low=1, high=1024)


def _budget(raw: Any, where: Where, grid_size: int | None, sampler: str) -> Budget:
    required = ("max_epochs",) if grid_size is not None else ("num_samples", "max_epochs")
    allowed = (
        "num_samples",
        "max_epochs",
        "eval_every",
        "max_concurrent",
        "time_limit_s",
        "max_failures",
        "population",
    )
    checks.mapping(raw, where, allowed, required)
    if "num_samples" in raw:
        num_samples = checks.integer(
            raw["num_samples"], where.at("num_samples"), low=1, high=100_000
        )
    else:
        assert grid_size is not None
        num_samples = grid_size
    if sampler == "grid" and grid_size is not None and num_samples > grid_size:
        where.at("num_samples").fail(f"more trials than the {grid_size} grid points", num_samples)
    max_epochs = checks.integer(raw["max_epochs"], where.at("max_epochs"), low=1, high=100_000)
    eval_every = checks.integer(
        raw.get("eval_every", 1), where.at("eval_every"), low=1, high=max_epochs
    )
    max_concurrent = checks.integer(
        raw.get("max_concurrent", 1), where.at("max_concurrent"), low=1, high=10_000
    )
    limit = raw.get("time_limit_s")
    if limit is not None:
        limit = checks.number(limit, where.at("time_limit_s"), low=0.0, low_open=True)
    failures = checks.integer(raw.get("max_failures", 0), where.at("max_failures"), low=0, high=100)
    population = _population(raw.get("population", 1), where.at("population"))
    return Budget(num_samples, max_epochs, eval_every, max_concurrent, limit, failures, population)


def _resources(raw: Any, where: Where) -> Resources:
    if raw is None:
        return Resources()
    if raw == "auto":
        return Resources(auto=True)
    if not isinstance(raw, dict):
        where.fail("auto, or a mapping {cpu: N, gpu: N}", raw)
    checks.mapping(raw, where, ("cpu", "gpu"))
    cpu = checks.number(raw.get("cpu", 1.0), where.at("cpu"), low=0.0, low_open=True, high=4096)
    gpu = checks.number(raw.get("gpu", 0.0), where.at("gpu"), low=0.0, high=1024)
    for key, value in (("cpu", cpu), ("gpu", gpu)):
        if 0 < value < 1e-4:
            where.at(key).fail("Ray's smallest share is 0.0001", value)
    if gpu > 1 and not gpu.is_integer():
        where.at("gpu").fail("a fraction below 1 or a whole number of GPUs", raw.get("gpu"))
    return Resources(cpu, gpu)


def _teacher(raw: Any, where: Where, base: Path) -> TeacherSpec:
    if raw is None:
        return TeacherSpec()
    checks.mapping(raw, where, ("checkpoint", "epochs", "recipe"))
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None:
        checkpoint = _resolve(base, checks.string(checkpoint, where.at("checkpoint")))
    epochs = checks.integer(
        raw.get("epochs", TeacherSpec.epochs), where.at("epochs"), low=1, high=100_000
    )
    recipe = checks.string(
        raw.get("recipe", TeacherSpec.recipe), where.at("recipe"), TEACHER_RECIPES
    )
    return TeacherSpec(checkpoint, epochs, recipe)


def _resolve(base: Path, text: str) -> str:
    """``~`` and ``$VARS`` expanded; a relative path taken from the space file's folder."""
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return str(path if path.is_absolute() else (base / path).resolve())


# ---------------------------------------------------------------------------------------------
# The train block: fixed TrainConfig keys


def _train(raw: Any, where: Where, controlled: set[str]) -> dict[str, Any]:
    """The fixed TrainConfig settings, checked key by key so that errors name ``train.KEY``."""
    if raw is None:
        return {}
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    allowed = [n for n in names if n not in _TRAIN_RESERVED] + ["alpha", "alpha_second"]
    if not isinstance(raw, dict):
        where.fail("expected a mapping", raw)
    for key, value in raw.items():
        if isinstance(key, str) and key in _TRAIN_RESERVED:
            where.at(key).fail(f"set by {_TRAIN_RESERVED[key]}, not in train")
        checks.mapping({key: value}, where, allowed)
        target = {"alpha": "schedule", "alpha_second": "schedule_second"}.get(key, key)
        if target in controlled:
            where.at(key).fail("is searched (under search:), so it cannot be fixed here")
        _train_value(key, value, where.at(key))
        if key == "val_split" and value == HOLDOUT_SPLIT:
            where.at(key).fail(
                f"{HOLDOUT_SPLIT!r} is the split kdtune export holds out to check the best "
                "configuration; select on another split",
                value,
            )
    return dict(raw)


def _train_value(key: str, value: Any, where: Where) -> None:
    if key in ("schedule", "schedule_second"):  # checked even where the level does not use it
        parse_schedule_spec(value, where)
    marker = "\x00"
    try:
        TrainConfig.from_dict({key: value}, where=marker)
    except KdtuneError as exc:
        message = str(exc).removeprefix(f"{marker}: ").removeprefix(f"{key}: ")
        where.fail(message, *(() if "got" in message else (value,)))
    except (ArithmeticError, ValueError, TypeError) as exc:
        where.fail(f"invalid value ({type(exc).__name__})", value)


def _config(raw: dict[str, Any], where: Where) -> dict[str, Any]:
    """A validated full TrainConfig dict."""
    try:
        return TrainConfig.from_dict(raw, where=where.label).to_dict()
    except (ArithmeticError, ValueError, TypeError) as exc:
        where.fail(f"invalid configuration ({type(exc).__name__}: {exc})")


# ---------------------------------------------------------------------------------------------
# The space


@dataclass
class SearchSpace:
    """A parsed, validated search-space file."""

    name: str
    level: str
    data: str
    metric: str
    mode: str
    sampler: SamplerSpec
    pruner: PrunerSpec
    budget: Budget
    resources: Resources
    teacher: TeacherSpec
    train: dict[str, Any]
    weightings: dict[str, Weighting]  # keyed by search key: weighting | weighting_first/_second
    lr: Dimension | None = None
    batch_size: Dimension | None = None
    grid: tuple[GridPoint, ...] = ()
    file: str = "<string>"
    source_text: str = ""
    warm_start: bool = False  # measure the named scenarios this space contains first
    confirm: Confirm | None = None  # the confirmation stage; None: the search's best stands

    def warm_start_scenarios(self) -> list[tuple[str, dict[str, Any]]]:
        """The reference's named scenarios that this space contains, in their order, each
        with the Optuna parameters that give it; none without ``warm_start``."""
        weighting = self.weightings.get("weighting")
        if not self.warm_start or weighting is None:
            return []
        found = ((spec, weighting.params_for(spec)) for spec in NAMED_SCENARIOS)
        return [(spec, params) for spec, params in found if params is not None]

    def warm_start_points(self) -> list[dict[str, Any]]:
        """What a search enqueues as its first trials (see :meth:`warm_start_scenarios`)."""
        return [params for _, params in self.warm_start_scenarios()]

    @property
    def num_trials(self) -> int:
        return self.budget.num_samples

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one trial (define-by-run) and return its TrainConfig overrides."""
        if self.grid:
            index = trial.suggest_categorical("point", list(range(len(self.grid))))
            return dict(self.grid[int(index)].overrides)
        overrides: dict[str, Any] = {}
        for key, weighting in self.weightings.items():
            suffix, target = SLOTS[key]
            overrides[target] = weighting.suggest(trial, suffix)
        if self.lr is not None:
            overrides["lr"] = float(self.lr.suggest(trial, "lr"))
        if self.batch_size is not None:
            overrides["batch_size"] = int(self.batch_size.suggest(trial, "batch_size"))
        return overrides

    def trial_config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full, validated TrainConfig dict of a trial with these overrides."""
        raw = self._base_config()
        raw.update(overrides or {})
        return _config(raw, Where(self.file, "trial"))

    def _base_config(self) -> dict[str, Any]:
        """The fixed settings of every trial, before any overrides."""
        raw = dict(self.train)
        raw.update(
            level=self.level,
            data=self.data,
            epochs=self.budget.max_epochs,
            eval_every=self.budget.eval_every,
            teacher_checkpoint=self.teacher.checkpoint,
            teacher_epochs=self.teacher.epochs,
            teacher_recipe=self.teacher.recipe,
        )
        return with_default_carve(raw)


def with_default_carve(raw: dict[str, Any]) -> dict[str, Any]:
    """A trial's settings with the held-out carve applied: data without test keypoints (COCO
    publishes none) keeps ``DEFAULT_HOLDOUT_FRACTION`` of its train split out of every trial
    unless ``train.holdout_fraction`` says otherwise, so that export's held-out check
    (:func:`kdtune.data.sources.carve`) judges on images no trial trained on."""
    if "holdout_fraction" in raw or has_test_keypoints(str(raw["data"])):
        return raw
    return {**raw, "holdout_fraction": DEFAULT_HOLDOUT_FRACTION}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; relative paths in it resolve from its folder."""
    path = Path(path)
    text = read_text(path, "search-space")
    return parse_space(text, file=path, base_dir=path.resolve().parent)


def parse_space(
    text: str, *, file: str | Path = "<string>", base_dir: str | Path | None = None
) -> SearchSpace:
    """Validate search-space YAML text; ``file`` names it in errors, ``base_dir`` anchors paths."""
    top = Where(str(file))
    if not isinstance(text, str):
        top.fail("expected YAML text", text)
    raw = parse_yaml(text, top.source)
    if raw is None:
        top.fail("empty file (expected a mapping with level, budget and search)")
    checks.mapping(raw, top, _TOP_KEYS, required=("level", "budget", "search"))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    default_name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(file)).stem).lstrip("._-") or "search"
    name = raw.get("name", default_name[:100])
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        top.at("name").fail(
            "letters, digits, '.', '_' or '-' (at most 100), used as a folder name", name
        )
    level = checks.string(raw["level"], top.at("level"), SPACE_LEVELS)
    data = checks.string(raw.get("data", "synthetic"), top.at("data"))
    data = data if parse_data(data) is not None else _resolve(base, data)  # a source, or a path
    metric = checks.string(raw.get("metric", "val/ap"), top.at("metric"), METRICS)
    default_mode = "min" if metric.endswith("loss") else "max"
    mode = checks.string(raw.get("mode", default_mode), top.at("mode"), ("max", "min"))
    sampler = parse_sampler(raw.get("sampler"), top.at("sampler"))
    pruner = parse_pruner(raw.get("pruner"), top.at("pruner"))
    weightings, lr, batch, grid = _search(raw["search"], top, level, sampler.type)
    budget = _budget(raw["budget"], top.at("budget"), len(grid) if grid else None, sampler.type)
    warm_start = checks.boolean(raw.get("warm_start", False), top.at("warm_start"))
    if warm_start and (sampler.type == "grid" or level == "chain"):
        why = (
            "a grid runs its own points" if sampler.type == "grid" else "a chain weights two levels"
        )
        top.at("warm_start").fail(f"applies to a sampled search of one level; {why}")
    space = SearchSpace(
        name=name,
        level=level,
        data=data,
        metric=metric,
        mode=mode,
        sampler=sampler,
        pruner=pruner,
        budget=budget,
        resources=_resources(raw.get("resources"), top.at("resources")),
        teacher=_teacher(raw.get("teacher"), top.at("teacher"), base),
        train=_train(raw.get("train"), top.at("train"), _controlled(weightings, lr, batch)),
        weightings=weightings,
        lr=lr,
        batch_size=batch,
        grid=grid,
        file=str(file),
        source_text=text,
        warm_start=warm_start,
        confirm=_confirm(raw.get("confirm"), top.at("confirm"), level, metric),
    )
    construct(top.at("sampler.options"), lambda: build_sampler(sampler, len(grid)))
    construct(top.at("pruner.options"), lambda: build_pruner(pruner, budget.max_epochs))
    _check_trials(space, top)
    return space


def _search(
    raw: Any, top: Where, level: str, sampler: str
) -> tuple[dict[str, Weighting], Dimension | None, Dimension | None, tuple[GridPoint, ...]]:
    where = top.at("search")
    slots = ("weighting_first", "weighting_second") if level == "chain" else ("weighting",)
    other = ("weighting",) if level == "chain" else ("weighting_first", "weighting_second")
    checks.mapping(raw, where, (*slots, *other, "lr", "batch_size", "grid"))
    for key in other:
        if key in raw:
            where.at(key).fail(f"level {level} searches {' and '.join(slots)}")
    if "grid" in raw:
        for key in raw:
            if key != "grid":
                where.at(key).fail("not allowed beside search.grid: set it in each point")
        return {}, None, None, parse_grid(raw["grid"], where.at("grid"), level)
    if sampler == "grid":
        top.at("sampler.type").fail(
            "the grid sampler needs an explicit list of points in search.grid"
        )
    if level == "chain":
        for key in slots:
            if key not in raw:
                where.at(key).fail("missing: a chain searches both levels' weightings")
    weightings = {key: parse_weighting(raw[key], where.at(key)) for key in slots if key in raw}
    lr = parse_dimension(raw["lr"], where.at("lr"), LR) if "lr" in raw else None
    batch = (
        parse_dimension(raw["batch_size"], where.at("batch_size"), BATCH)
        if "batch_size" in raw
        else None
    )
    if not weightings and lr is None and batch is None:
        where.fail("nothing to search: give weighting, lr, batch_size or grid")
    return weightings, lr, batch, ()


def _controlled(weightings: dict[str, Weighting], lr: Any, batch: Any) -> set[str]:
    """TrainConfig keys that the search sets on every trial."""
    keys = {SLOTS[k][1] for k in weightings}
    keys |= {"lr"} if lr is not None else set()
    keys |= {"batch_size"} if batch is not None else set()
    return keys


def _check_trials(space: SearchSpace, top: Where) -> None:
    """The fixed settings must form a valid TrainConfig, and so must every grid point."""
    base = space._base_config()
    _config(base, top.at("train"))
    for i, point in enumerate(space.grid):
        _config({**base, **point.overrides}, top.at("search.grid").item(i))
    _check_population(space, base, top.at("budget.population"))


# what the members of one population may differ in (kdtune.population_fit.MEMBER_KEYS, less the
# seed, which a search does not vary): the rest of a search's trial config must be shared
_MEMBER_OVERRIDES = ("schedule", "lr")


def _check_population(space: SearchSpace, base: dict[str, Any], where: Where) -> None:
    """``budget.population`` other than 1: the search's trials must be able to train as one
    population (:func:`kdtune.population_fit.check_members`): refused here, in one line, when
    they cannot (a chain, a moving average, a searched batch size or grid points that set
    anything besides the weighting and lr)."""
    population = space.budget.population
    if population == 1:
        return
    why = ""
    if space.level not in ("first", "second"):
        why = f"level {space.level} does not train as a population (only first and second)"
    elif float(base.get("ema_decay", 0) or 0) > 0:
        why = "train.ema_decay: members keep no moving average (set it to 0)"
    elif space.batch_size is not None:
        why = "search.batch_size: members share their batches (search only weighting and lr)"
    else:
        for point in space.grid:
            other = sorted(k for k in point.overrides if k not in _MEMBER_OVERRIDES)
            if other:
                why = f"a grid point sets {', '.join(other)} (members differ only in weighting, lr)"
                break
    if why:
        where.fail(f"trials cannot train as a population: {why}", population)


def check_paths(space: SearchSpace) -> None:
    """Raise if the data folder or the teacher checkpoint named by the file does not exist."""
    top = Where(space.file)
    if parse_data(space.data) is None and not Path(space.data).is_dir():
        top.at("data").fail("no such folder", space.data)
    if space.teacher.checkpoint is not None and not Path(space.teacher.checkpoint).is_file():
        top.at("teacher.checkpoint").fail("no such file", space.teacher.checkpoint)


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the file asks for (a grid sampler walks the ``point`` index).

    TPE with trials running at once (``max_concurrent`` or ``population`` above 1) gets
    ``constant_liar`` unless the file says otherwise (optuna 5.0 defaults to it; older versions
    did not): without it, every free worker is proposed the same region while the others still
    run."""
    spec = space.sampler
    running = space.budget.max_concurrent > 1 or space.budget.population != 1  # members too
    if spec.type == "tpe" and running:
        spec = dataclasses.replace(spec, options={"constant_liar": True, **spec.options})
    return sampler_for(spec, len(space.grid), space.file)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The Optuna pruner the file asks for; its steps are epochs."""
    return pruner_for(space.pruner, space.budget.max_epochs, space.file)
