"""Search-space files: the provided ones load, sampling is define-by-run, bad files fail cleanly."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdtune.checks import Where
from kdtune.config import NAMED_SCENARIOS
from kdtune.errors import KdtuneError
from kdtune.schedules import parse_schedule
from kdtune.space import (
    PRUNERS,
    SAMPLERS,
    SearchSpace,
    check_paths,
    describe,
    load_space,
    make_pruner,
    make_sampler,
    parse_space,
)
from kdtune.space.optuna_objects import _options

if TYPE_CHECKING:  # as in Optuna's modules: not importable from the annotations at run time
    from collections.abc import Callable, Sequence

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
PROVIDED = (
    "quickstart",
    "seed_scenarios",
    "fixed_ratio",
    "adaptive_schedule",
    "first_level",
    "chain",
    "coco_first_level",
    "coco_second_level",
    "gpu",
)
# The reference's named alpha (ground-truth weight) ratios, as beta schedule specs, plus 0.9 -> 0.5.
SEED_SCHEDULES = {
    "fixed:0",
    "fixed:0.5",
    "fixed:0.6",
    "fixed:0.7",
    "fixed:0.75",
    "fixed:0.8",
    "fixed:0.85",
    "fixed:0.9",
    "fixed:1",
    "linear:0.9:0.5",
}


def minimal() -> dict[str, Any]:
    """The smallest valid space, as plain data."""
    return {
        "level": "second",
        "budget": {"num_samples": 4, "max_epochs": 3},
        "search": {"weighting": {"fixed": {"alpha": {"low": 0.0, "high": 1.0}}}},
    }


def both_kinds() -> dict[str, Any]:
    """A space with fixed ratios and all three adaptive shapes."""
    raw = minimal()
    raw["search"]["weighting"]["adaptive"] = {
        "shapes": ["linear", "cosine", "step"],
        "beta_start": {"low": 0.6, "high": 1.0},
        "beta_end": {"low": 0.0, "high": 0.6},
        "warmup": {"low": 0.0, "high": 0.3},
        "at": {"low": 0.2, "high": 0.8},
    }
    return raw


def parse(raw: dict[str, Any]) -> SearchSpace:
    return parse_space(yaml.safe_dump(raw), file="test.yaml")


def all_trials(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int) -> list[Any]:
    """Run ``n`` trials of an in-memory study; return (overrides, params) per trial."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen: list[Any] = []

    def objective(trial: optuna.Trial) -> float:
        overrides = space.suggest(trial)
        seen.append((overrides, dict(trial.params)))
        return 0.0

    study.optimize(objective, n_trials=n)
    return seen


# ---------------------------------------------------------------------------------------------
# The provided files


def test_every_provided_file_is_there() -> None:
    assert sorted(p.stem for p in SPACES.glob("*.yaml")) == sorted(PROVIDED)


@pytest.mark.parametrize("stem", PROVIDED)
def test_provided_file_loads_and_describes(stem: str) -> None:
    space = load_space(SPACES / f"{stem}.yaml")
    assert space.name == stem
    assert space.source_text == (SPACES / f"{stem}.yaml").read_text()
    text = describe(space)
    assert f"'{stem}'" in text and space.sampler.type in text and "trials" in text
    assert isinstance(make_sampler(space), optuna.samplers.BaseSampler)
    assert isinstance(make_pruner(space), optuna.pruners.BasePruner)
    for overrides, _ in all_trials(space, optuna.samplers.RandomSampler(seed=1), 5):
        config = space.trial_config(overrides)
        assert config["epochs"] == space.budget.max_epochs
        assert config["level"] == space.level
        parse_schedule(config["schedule"])


def test_quickstart_is_small_and_prunes() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert (space.level, space.data, space.sampler.type) == ("second", "synthetic-cocolike", "tpe")
    assert space.pruner.type != "none"
    # at most 12 x 12 trial epochs of 1024 images: measured at 5 min 20 s for the whole search,
    # from a fresh results folder, on a 2-core CPU (README, "Measured here")
    images = space.train["max_train_images"]
    assert space.budget.num_samples * space.budget.max_epochs * images <= 12 * 12 * 1024
    assert space.resources.cpu * space.budget.max_concurrent <= 2


def test_levels_of_the_provided_files() -> None:
    levels = {stem: load_space(SPACES / f"{stem}.yaml").level for stem in PROVIDED}
    assert levels["first_level"] == "first" and levels["chain"] == "chain"
    assert levels["seed_scenarios"] == "second"


def test_seed_scenarios_grid_enumerates_exactly_its_points() -> None:
    space = load_space(SPACES / "seed_scenarios.yaml")
    assert space.pruner.type == "none"
    assert space.num_trials == len(space.grid) == 10
    seen = all_trials(space, make_sampler(space), space.num_trials)
    schedules = [overrides["schedule"] for overrides, _ in seen]
    assert sorted(schedules) == sorted(SEED_SCHEDULES)
    assert all(set(params) == {"point"} for _, params in seen)


def test_describe_lists_grid_points_and_dimensions() -> None:
    grid = describe(load_space(SPACES / "seed_scenarios.yaml"))
    assert "10 points" in grid and "linear:0.9:0.5" in grid and "β 0.9 → 0.5 (linear)" in grid
    text = describe(parse(both_kinds()))
    for part in ("weighting in {fixed, adaptive}", "alpha in [0, 1]", "at in [0.2, 0.8]", "tpe"):
        assert part in text


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize(
    ("params", "schedule"),
    [
        ({"weighting": "fixed", "alpha": 0.25}, "fixed:0.75"),
        ({"weighting": "fixed", "alpha": 1.0}, "fixed:0"),
        (
            {
                "weighting": "adaptive",
                "shape": "linear",
                "beta_start": 0.9,
                "beta_end": 0.5,
                "warmup": 0.0,
            },
            "linear:0.9:0.5",
        ),
        (
            {
                "weighting": "adaptive",
                "shape": "cosine",
                "beta_start": 0.8,
                "beta_end": 0.2,
                "warmup": 0.1,
            },
            "cosine:0.8:0.2,warmup=0.1",
        ),
        (
            {
                "weighting": "adaptive",
                "shape": "step",
                "beta_start": 0.9,
                "beta_end": 0.5,
                "warmup": 0.1,
                "at": 0.4,
            },
            "step:0.9:0.5,warmup=0.1,at=0.4",
        ),
    ],
)
def test_fixed_trial_gives_golden_schedule(params: dict[str, Any], schedule: str) -> None:
    space = parse(both_kinds())
    assert space.suggest(optuna.trial.FixedTrial(params)) == {"schedule": schedule}


def test_conditional_params_appear_only_with_their_shape() -> None:
    space = parse(both_kinds())
    seen = all_trials(space, optuna.samplers.RandomSampler(seed=0), 60)
    shapes = set()
    for overrides, params in seen:
        sched = parse_schedule(overrides["schedule"])
        if params["weighting"] == "fixed":
            assert set(params) == {"weighting", "alpha"}
            assert sched.shape == "fixed" and sched.beta_start == pytest.approx(
                1 - params["alpha"], abs=1e-5
            )
            continue
        shapes.add(params["shape"])
        expected = {"weighting", "shape", "beta_start", "beta_end", "warmup"}
        assert set(params) == expected | ({"at"} if params["shape"] == "step" else set())
        assert sched.shape == params["shape"]
        assert sched.beta_start == pytest.approx(params["beta_start"], abs=1e-5)
    assert shapes == {"linear", "cosine", "step"}


def test_single_kind_and_constants_are_not_parameters() -> None:
    raw = minimal()
    raw["search"]["weighting"] = {
        "adaptive": {"shapes": ["linear"], "beta_start": 0.9, "beta_end": [0.5, 0.3]}
    }
    space = parse(raw)
    trial = optuna.trial.FixedTrial({"beta_end": 0.3})
    assert space.suggest(trial) == {"schedule": "linear:0.9:0.3"}
    assert trial.params == {"beta_end": 0.3}


def test_chain_params_carry_level_suffixes() -> None:
    space = load_space(SPACES / "chain.yaml")
    params = {
        "weighting_first": "fixed",
        "alpha_first": 0.3,
        "weighting_second": "adaptive",
        "shape_second": "cosine",
        "beta_start_second": 0.9,
        "beta_end_second": 0.5,
    }
    overrides = space.suggest(optuna.trial.FixedTrial(params))
    assert overrides == {"schedule": "fixed:0.7", "schedule_second": "cosine:0.9:0.5"}
    config = space.trial_config(overrides)
    assert (config["level"], config["schedule_second"]) == ("chain", "cosine:0.9:0.5")


def test_lr_and_batch_size() -> None:
    raw = minimal()
    raw["search"]["lr"] = {"low": 1e-4, "high": 1e-2, "log": True}
    raw["search"]["batch_size"] = [16, 32, 64]
    space = parse(raw)
    for overrides, params in all_trials(space, optuna.samplers.RandomSampler(seed=0), 10):
        assert 1e-4 <= overrides["lr"] <= 1e-2 and overrides["batch_size"] in (16, 32, 64)
        assert set(params) == {"alpha", "lr", "batch_size"}


def test_grid_with_lr_and_chain_points() -> None:
    raw = minimal()
    raw["level"] = "chain"
    raw["sampler"] = {"type": "grid"}
    raw["search"] = {
        "grid": [
            {"alpha_first": 0.3, "alpha_second": 0.25},
            {"alpha_first": 0.3, "schedule_second": "linear:0.9:0.5", "lr": 0.001},
        ]
    }
    del raw["budget"]["num_samples"]
    space = parse(raw)
    seen = all_trials(space, make_sampler(space), space.num_trials)
    assert sorted(o["schedule_second"] for o, _ in seen) == ["fixed:0.75", "linear:0.9:0.5"]
    assert space.trial_config(space.grid[1].overrides)["lr"] == 0.001


def test_trial_config_joins_all_parts(tmp_path: Path) -> None:
    raw = minimal()
    raw.update(
        data="coco",
        teacher={"checkpoint": "med.pt", "epochs": 3, "recipe": "ground_truth"},
        train={"max_train_images": 64, "sigma": 5},
    )
    raw["budget"]["eval_every"] = 3
    path = tmp_path / "sub" / "space.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    space = load_space(path)
    config = space.trial_config({"schedule": "fixed:0.75"})
    assert config["data"] == str(path.parent / "coco")
    assert config["teacher_checkpoint"] == str(path.parent / "med.pt")
    assert (config["epochs"], config["eval_every"], config["teacher_epochs"]) == (3, 3, 3)
    assert config["teacher_recipe"] == "ground_truth"
    assert (config["max_train_images"], config["sigma"], config["schedule"]) == (
        64,
        5.0,
        "fixed:0.75",
    )
    with pytest.raises(KdtuneError, match="data"):
        check_paths(space)
    (path.parent / "coco").mkdir()
    with pytest.raises(KdtuneError, match=r"teacher\.checkpoint"):
        check_paths(space)
    (path.parent / "med.pt").write_bytes(b"")
    check_paths(space)
    with pytest.raises(KdtuneError, match="unknown key 'bogus'"):
        space.trial_config({"bogus": 1})


# ---------------------------------------------------------------------------------------------
# Samplers and pruners


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_every_sampler_type_builds(kind: str) -> None:
    raw = minimal()
    raw["sampler"] = {"type": kind, "seed": 3}
    if kind == "grid":
        raw["search"] = {"grid": [{"alpha": 0.1}, {"alpha": 0.2}]}
        del raw["budget"]["num_samples"]
    space = parse(raw)
    if kind == "cmaes" and importlib.util.find_spec("cmaes") is None:
        with pytest.raises(KdtuneError, match=r"sampler\.type: cmaes needs the 'cmaes' package"):
            make_sampler(space)
        return
    assert type(make_sampler(space)).__name__ == SAMPLERS[kind]


PRUNER_OPTIONS: dict[str, dict[str, Any]] = {
    "median": {"n_warmup_steps": 2},
    "percentile": {"percentile": 25.0},
    "hyperband": {"min_resource": 1},
    "successive_halving": {"reduction_factor": 2},
    "wilcoxon": {"p_threshold": 0.05},
    "patient": {"patience": 2, "wrapped_pruner": {"type": "median"}},
    "threshold": {"lower": 0.01},
    "none": {},
}


@pytest.mark.parametrize("kind", sorted(PRUNERS))
def test_every_pruner_type_builds(kind: str) -> None:
    raw = minimal()
    raw["pruner"] = {"type": kind, "options": PRUNER_OPTIONS[kind]}
    pruner = make_pruner(parse(raw))
    assert type(pruner).__name__ == PRUNERS[kind]
    assert describe(parse(raw))


def test_patient_pruner_alone_or_nested() -> None:
    raw = minimal()
    raw["pruner"] = {"type": "patient", "options": {"patience": 1}}
    assert make_pruner(parse(raw))._wrapped_pruner is None  # type: ignore[attr-defined]
    raw["pruner"]["options"]["wrapped_pruner"] = {
        "type": "percentile",
        "options": {"percentile": 30},
    }
    wrapped = make_pruner(parse(raw))._wrapped_pruner  # type: ignore[attr-defined]
    assert isinstance(wrapped, optuna.pruners.PercentilePruner)


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """
level: chain
budget: {num_samples: 2, max_epochs: 2}
search:
  weighting_first: &w
    fixed: {alpha: [0.25, 0.5]}
  weighting_second:
    <<: *w
    adaptive: {shapes: [linear], beta_start: 0.9, beta_end: 0.5}
"""
    space = parse_space(text)
    params = {"alpha_first": 0.5, "weighting_second": "adaptive"}
    overrides = space.suggest(optuna.trial.FixedTrial(params))
    assert overrides == {"schedule": "fixed:0.5", "schedule_second": "linear:0.9:0.5"}


def test_hyperband_max_resource_defaults_to_max_epochs() -> None:
    raw = minimal()
    raw["pruner"] = {"type": "hyperband"}
    assert make_pruner(parse(raw))._max_resource == 3  # type: ignore[attr-defined]


class FakeSampler:
    """A constructor annotated as Optuna's are: postponed annotations, some of them naming
    types imported for type checking only."""

    def __init__(
        self,
        percentile: float,
        *,
        n: int = 1,
        mode: Literal["a", "b"] = "a",
        ratio: float | None = None,
        flags: dict[str, Any] | None = None,
        depth: Sequence[int] | int = 2,
        hook: Callable[[int], int] | None = None,
        **kwargs: Any,
    ) -> None:
        pass


def test_options_are_checked_by_the_constructors_types() -> None:
    where = Where("f.yaml", "sampler.options")
    raw = {"percentile": 3, "n": 2, "mode": "b", "ratio": None, "flags": {"x": 1}, "depth": 4}
    options = _options(raw, where, FakeSampler, {})
    assert options == {**raw, "percentile": 3.0} and isinstance(options["percentile"], float)
    bad = {
        "n": ("x", "sampler.options.n: must be an integer, got 'x'"),
        "ratio": ("x", "sampler.options.ratio: must be a number or null, got 'x'"),
        "depth": (1.5, "sampler.options.depth: must be an integer, got 1.5"),  # by its default
        "hook": (1, "sampler.options.hook: takes a Python object (Callable[[int], int] | None)"),
        "kwargs": ({}, "sampler.options.kwargs: unknown option for FakeSampler (expected one of:"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(KdtuneError) as info:
            _options({"percentile": 1.0, name: value}, where, FakeSampler, {})
        assert str(info.value).startswith(f"f.yaml: {message}"), str(info.value)
    with pytest.raises(KdtuneError, match="percentile: missing \\(required by FakeSampler\\)"):
        _options({}, where, FakeSampler, {})


# ---------------------------------------------------------------------------------------------
# Errors: one line naming the file, the key and the bad value


def mutate(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set (or, for value ``DELETE``, remove) the key at a dotted path, making parents."""
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = object()
ALPHA = "search.weighting.fixed.alpha"
BAD_VALUES = [
    ("budget.num_samples", "ten", "budget.num_samples", "'ten'"),
    ("budget.num_samples", 0, "budget.num_samples", "0"),
    ("budget.max_epochs", 2.5, "budget.max_epochs", "2.5"),
    ("budget.eval_every", 5, "budget.eval_every", "5"),
    ("budget.time_limit_s", -1, "budget.time_limit_s", "-1"),
    ("budget.max_failures", -1, "budget.max_failures", "-1"),
    ("budget.max_failures", 1.5, "budget.max_failures", "1.5"),
    ("budget.max_epochs", DELETE, "budget.max_epochs", "missing"),
    ("level", "third", "level", "'third'"),
    ("level", "teacher", "level", "'teacher'"),
    ("name", "a b", "name", "'a b'"),
    ("metric", "val/acc", "metric", "'val/acc'"),
    ("mode", "up", "mode", "'up'"),
    ("data", 7, "data", "7"),
    (f"{ALPHA}.high", 1.5, f"{ALPHA}.high", "1.5"),
    (f"{ALPHA}.low", -0.1, f"{ALPHA}.low", "-0.1"),
    (ALPHA, {"low": 0.8, "high": 0.2}, f"{ALPHA}.high", "0.2"),
    (f"{ALPHA}.low", True, f"{ALPHA}.low", "True"),
    (f"{ALPHA}.step", 0.3, f"{ALPHA}.step", "0.3"),
    (f"{ALPHA}.log", True, f"{ALPHA}.low", "0.0"),
    (f"{ALPHA}.stride", 1, f"{ALPHA}.stride", "unknown key"),
    (ALPHA, [0.2, 0.2], f"{ALPHA}[1]", "0.2"),
    (ALPHA, [], f"{ALPHA}", "[]"),
    (ALPHA, 2, ALPHA, "2"),
    (ALPHA, float("nan"), ALPHA, "nan"),
    ("search.weighting.fixd", {}, "search.weighting.fixd", "unknown key"),
    ("search.weighting", {}, "search.weighting", "fixed:, adaptive:"),
    (
        "search.weighting.adaptive",
        {"beta_start": 0.9},
        "search.weighting.adaptive.beta_end",
        "missing",
    ),
    (
        "search.weighting.adaptive",
        {"beta_start": 0.9, "beta_end": 0.5, "warmup": {"low": 0, "high": 1}},
        "search.weighting.adaptive.warmup.high",
        "1",
    ),
    (
        "search.weighting.adaptive",
        {"shapes": ["linear"], "beta_start": 0.9, "beta_end": 0.5, "at": 0.5},
        "search.weighting.adaptive.at",
        "step",
    ),
    (
        "search.weighting.adaptive",
        {"shapes": ["linear", "zigzag"], "beta_start": 0.9, "beta_end": 0.5},
        "search.weighting.adaptive.shapes[1]",
        "'zigzag'",
    ),
    ("search.lr", {"low": 0.0, "high": 0.1, "log": True}, "search.lr.low", "0.0"),
    ("search.batch_size", [16, 0], "search.batch_size[1]", "0"),
    ("search.weighting_second", {}, "search.weighting_second", "level second"),
    ("search", {}, "search", "nothing to search"),
    ("sampler.type", "annealing", "sampler.type", "'annealing'"),
    ("sampler.seed", -1, "sampler.seed", "-1"),
    ("sampler.options", {"n_startup": 3}, "sampler.options.n_startup", "unknown option"),
    ("sampler.options", {"n_startup_trials": "x"}, "sampler.options.n_startup_trials", "'x'"),
    ("sampler.options", {"seed": 1}, "sampler.options.seed", "sampler.seed"),
    ("sampler.options", {"gamma": 1}, "sampler.options.gamma", "not settable"),
    ("sampler.options", [1], "sampler.options", "[1]"),
    ("sampler.type", "grid", "sampler.type", "search.grid"),
    ("pruner.type", "early", "pruner.type", "'early'"),
    ("pruner", {"type": "percentile"}, "pruner.options.percentile", "missing"),
    (
        "pruner",
        {"type": "percentile", "options": {"percentile": 150}},
        "pruner.options",
        "150",
    ),
    (
        "pruner",
        {"type": "patient", "options": {"patience": 1, "wrapped_pruner": {"type": "x"}}},
        "pruner.options.wrapped_pruner.type",
        "'x'",
    ),
    ("resources.cpu", -1, "resources.cpu", "-1"),
    ("resources.cpu", 0, "resources.cpu", "0"),
    ("resources.gpu", -0.5, "resources.gpu", "-0.5"),
    ("resources.gpu", 1.5, "resources.gpu", "1.5"),
    ("teacher.epochs", 0, "teacher.epochs", "0"),
    ("teacher.checkpoint", 5, "teacher.checkpoint", "5"),
    ("teacher.recipe", "magic", "teacher.recipe", "'magic'"),
    ("train.teacher_recipe", "reference", "train.teacher_recipe", "teacher.recipe"),
    ("train.epochs", 5, "train.epochs", "budget.max_epochs"),
    ("train.bogus", 5, "train.bogus", "unknown key"),
    ("train.lr", "fast", "train.lr", "'fast'"),
    ("train.stride", 0, "train.stride", "0"),
    ("train.alpha", 0.5, "train.alpha", "searched"),
    ("train.schedule_second", "zigzag:1", "train.schedule_second", "zigzag"),
    ("train.input_size", 130, "train.input_size", "130"),
]


@pytest.mark.parametrize(("path", "value", "key", "shown"), BAD_VALUES)
def test_bad_value_names_file_key_and_value(
    tmp_path: Path, path: str, value: Any, key: str, shown: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(mutate(minimal(), path, value)))
    with pytest.raises(KdtuneError) as info:
        load_space(file)
    message = str(info.value)
    assert message.startswith(f"{file}: {key}:"), message
    assert shown in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("level: [second\n", "", "not valid YAML"),
        ("level: second\n  budget: 3\n", "", "line"),
        ("- level\n- second\n", "(top level)", "['level', 'second']"),
        ("", "", "empty file"),
        ("just text\n", "(top level)", "'just text'"),
        ("level: second\nlevel: first\n", "level", "duplicate key"),
        ("1: 2\n", "(top level)", "1"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, key: str, shown: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(KdtuneError) as info:
        load_space(file)
    message = str(info.value)
    assert message.startswith(f"{file}: {key}" if key else f"{file}: "), message
    assert shown in message and "\n" not in message


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match="no such search-space file"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(KdtuneError, match="is a folder"):
        load_space(tmp_path)
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(KdtuneError, match="not UTF-8"):
        load_space(tmp_path / "latin.yaml")


def test_grid_errors() -> None:
    raw = minimal()
    raw["sampler"] = {"type": "grid"}
    raw["search"] = {"grid": [{"alpha": 0.25}, {"schedule": "fixed:0.75"}]}
    with pytest.raises(KdtuneError, match=r"search\.grid\[1\]: duplicate point"):
        parse(raw)
    raw["search"]["grid"][1] = {"schedule": "linear:0.9:0.5"}
    with pytest.raises(KdtuneError, match=r"budget\.num_samples: more trials than the 2 grid"):
        parse(raw)
    raw["budget"]["num_samples"] = 2
    raw["search"]["lr"] = {"low": 0.001, "high": 0.01}
    with pytest.raises(KdtuneError, match=r"search\.lr: not allowed beside search\.grid"):
        parse(raw)
    raw["search"] = {"grid": [{"alpha": 0.25, "schedule": "fixed:0.5"}]}
    with pytest.raises(KdtuneError, match=r"search\.grid\[0\]\.schedule: give either"):
        parse(raw)
    raw["search"] = {"grid": [{"schedule": "linear:0.9"}]}
    with pytest.raises(KdtuneError, match=r"search\.grid\[0\]\.schedule: 'linear:0.9'"):
        parse(raw)
    raw["level"] = "chain"
    raw["search"] = {"grid": [{"alpha_first": 0.3}]}
    with pytest.raises(KdtuneError, match=r"search\.grid\[0\]\.alpha_second: missing"):
        parse(raw)


def test_chain_needs_both_weightings() -> None:
    raw = minimal()
    raw["level"] = "chain"
    with pytest.raises(KdtuneError, match=r"search\.weighting: level chain searches"):
        parse(raw)
    raw["search"] = {"weighting_first": raw["search"]["weighting"]}
    with pytest.raises(KdtuneError, match=r"search\.weighting_second: missing"):
        parse(raw)


# ---------------------------------------------------------------------------------------------
# Property: any document either loads or raises KdtuneError, never another exception

KEYS = str.split(
    "name level data metric mode sampler pruner budget resources teacher train search type seed "
    "options num_samples max_epochs eval_every max_concurrent time_limit_s max_failures cpu gpu "
    "checkpoint "
    "epochs weighting weighting_first weighting_second fixed adaptive alpha shapes beta_start "
    "beta_end warmup at low high step log values lr batch_size grid schedule percentile patience "
    "wrapped_pruner n_startup_trials stride input_size recipe"
)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | TEXT
    | st.sampled_from(["tpe", "grid", "median", "patient", "second", "chain", "linear", "step"])
)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(KEYS) | TEXT, inner, max_size=5
    )


VALUES = st.recursive(SCALARS, _nested, max_leaves=25)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_kdtune_error(text: str) -> None:
    try:
        assert isinstance(parse_space(text, file="prop.yaml"), SearchSpace)
    except KdtuneError as exc:
        message = str(exc)
        assert message.startswith("prop.yaml: ") and "\n" not in message, message


@PROPERTY
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    loads_or_kdtune_error(text)


@PROPERTY
@given(VALUES)
def test_random_documents_never_crash(value: Any) -> None:
    loads_or_kdtune_error(yaml.safe_dump(value))


def paths_in(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside nested dicts and lists."""
    out = [prefix]
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, child in items:
        out += paths_in(child, (*prefix, key))
    return out


@PROPERTY
@given(st.sampled_from(PROVIDED), st.data())
def test_mutated_valid_spaces_never_crash(stem: str, data: st.DataObject) -> None:
    raw = yaml.safe_load((SPACES / f"{stem}.yaml").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths_in(raw)))
        op = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            raw = data.draw(VALUES) if op == "replace" else raw
            continue
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        if op == "replace":
            parent[path[-1]] = data.draw(VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(KEYS) | TEXT)] = data.draw(VALUES)
        else:
            parent.append(data.draw(VALUES))
    loads_or_kdtune_error(yaml.safe_dump(raw))


def test_tpe_with_concurrent_trials_uses_constant_liar() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert space.sampler.type == "tpe" and space.budget.max_concurrent > 1
    # on whatever Optuna's default is (True in optuna 5.0, False before)
    assert make_sampler(space)._constant_liar is True  # type: ignore[attr-defined]
    told = dataclasses.replace(
        space,
        sampler=dataclasses.replace(space.sampler, options={"constant_liar": False}),
    )
    assert make_sampler(told)._constant_liar is False  # type: ignore[attr-defined]


def test_a_space_may_not_select_on_the_held_out_split() -> None:
    text = (
        (SPACES / "quickstart.yaml")
        .read_text()
        .replace("  batch_size: 16\n", "  batch_size: 16\n  val_split: test\n")
    )
    with pytest.raises(KdtuneError, match=r"train\.val_split: 'test' is the split kdtune export"):
        parse_space(text, file="q.yaml")


def test_warm_start_enqueues_the_named_scenarios_the_space_contains_first() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert space.warm_start
    specs = [spec for spec, _ in space.warm_start_scenarios()]
    assert specs == list(NAMED_SCENARIOS)
    # through a real Optuna study: the enqueued points are the first trials, in order
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space))
    for point in space.warm_start_points():
        study.enqueue_trial(point)
    got = []
    for _ in range(len(specs) + 2):
        trial = study.ask()
        got.append(space.suggest(trial)["schedule"])
        study.tell(trial, 0.1)
    assert got[: len(specs)] == specs


def test_warm_start_leaves_out_scenarios_outside_the_space() -> None:
    text = (SPACES / "quickstart.yaml").read_text()
    text = text.replace("alpha: {low: 0.0, high: 1.0, step: 0.05}", "alpha: {low: 0.2, high: 0.8}")
    assert "beta_end: {low: 0.3, high: 1.0}" in text
    text = text.replace("beta_end: {low: 0.3, high: 1.0}", "beta_end: {low: 0.55, high: 0.7}")
    space = parse_space(text, file="q.yaml")
    assert [spec for spec, _ in space.warm_start_scenarios()] == ["fixed:0.5", "fixed:0.75"]
    assert (  # in words: α and β spelled out, not β specs
        "warm start the reference's named scenarios first: α 0.5 / β 0.5; α 0.25 / β 0.75"
        in describe(space)
    )


def test_warm_start_refusals() -> None:
    text = (SPACES / "quickstart.yaml").read_text()
    with pytest.raises(KdtuneError, match="warm_start: must be true or false"):
        parse_space(text.replace("warm_start: true", "warm_start: yes-please"), file="q.yaml")
    grid = yaml.safe_dump(
        {
            "level": "second",
            "budget": {"max_epochs": 2},
            "sampler": {"type": "grid"},
            "search": {"grid": [{"alpha": 0.5}, {"alpha": 1.0}]},
            "warm_start": True,
        }
    )
    with pytest.raises(KdtuneError, match="warm_start: applies to a sampled search of one level"):
        parse_space(grid, file="g.yaml")


def test_max_failures_is_read_and_defaults_to_none() -> None:
    """How often Ray Tune restarts a failed trial (a lost node): none unless the file says."""
    raw = minimal()
    assert parse(raw).budget.max_failures == 0
    raw["budget"]["max_failures"] = 2
    assert parse(raw).budget.max_failures == 2


def test_confirm_key_is_parsed_and_described() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    c = space.confirm
    assert c is not None and (c.top_k, c.seeds, c.round_seeds, c.max_seeds) == (1, 2, 1, 3)
    assert c.max_rounds == 2 and c.margin == 0.005
    assert (
        "confirm    a race: the best 1 besides the seed default (α 0.25 / β 0.75), the default"
        in (describe(space))
    )
    text = (SPACES / "quickstart.yaml").read_text()
    line = "confirm: {top_k: 1, seeds: 2, round_seeds: 1, max_seeds: 3, margin: 0.005}"
    assert parse_space(text.replace(line, "confirm: true"), file="q.yaml").confirm is not None
    assert parse_space(text.replace(line, ""), file="q.yaml").confirm is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{top_k: 0, seeds: 3}", r"confirm\.top_k: must be"),
        ("{top_k: 2, seeds: 0}", r"confirm\.seeds: must be"),
        ("{top_k: 2, seeds: 1.5}", r"confirm\.seeds: must be an integer"),
        ("{top_k: 2, seed: 3}", r"confirm"),
        ("[2, 3]", r"confirm"),
    ],
)
def test_confirm_refusals(value: str, message: str) -> None:
    text = (SPACES / "quickstart.yaml").read_text()
    line = "confirm: {top_k: 1, seeds: 2, round_seeds: 1, max_seeds: 3, margin: 0.005}"
    text = text.replace(line, f"confirm: {value}")
    with pytest.raises(KdtuneError, match=message):
        parse_space(text, file="q.yaml")


def test_confirm_needs_one_level_and_val_ap() -> None:
    text = (SPACES / "quickstart.yaml").read_text()
    with pytest.raises(KdtuneError, match="confirm: pairs validation AP image by image"):
        parse_space(text.replace("metric: val/ap", "metric: val/loss"), file="q.yaml")
