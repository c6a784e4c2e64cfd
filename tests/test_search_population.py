"""``budget.population``: a search's Ray trial as a population of P Optuna trials. The key read
and refused (one line, exit 2); the searcher and scheduler driven by hand (members asked from the
study, each reported, pruned and told on its own; the pruned file the trial reads); and searches
under Ray (slow): a toy population whose one member is pruned while the other finishes, and a
real small search trained as populations."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import ray.cloudpickle
import toy_trial
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from kdtune import tune as kt
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, PRUNED, SEARCH_FILE, SearchResult
from kdtune.space import make_sampler, parse_space
from kdtune.tune import bridge
from kdtune.tune.protocol import (
    CONFIG_KEY,
    MEMBER_ERROR,
    MEMBERS_KEY,
    PRUNED_FILE_KEY,
    STOP_REASON_ATTR,
    LiveRun,
    member_key,
    member_trial_id,
)
from kdtune.tune.trial import _pruned_members

# the members sampled by a grid: alpha 0.3 learns (its AP passes the threshold), alpha 1.0 does
# not and is pruned at epoch 2 while its population partner goes on
TOY = """
name: toypop
level: second
sampler: {type: grid, seed: 0}
pruner: {type: threshold, options: {lower: 0.3, n_warmup_steps: 2}}
budget: {num_samples: 4, max_epochs: 8, eval_every: 1, max_concurrent: 1, population: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.4}}
search:
  grid: [{alpha: 0.3}, {alpha: 1.0}, {alpha: 0.2}, {alpha: 0.4}]
"""

optuna.logging.set_verbosity(optuna.logging.WARNING)
ray.cloudpickle.register_pickle_by_value(toy_trial)

SPACE = """
name: pop
level: second
sampler: {{type: random, seed: 0}}
pruner: {{type: threshold, options: {{lower: 0.3, n_warmup_steps: 2}}}}
budget: {{num_samples: 5, max_epochs: 5{budget}}}
search:
{search}
"""
WEIGHTING = "  weighting:\n    fixed: {alpha: {low: 0.0, high: 1.0}}"


def _space(budget: str = ", population: 2", search: str = WEIGHTING, **kw: Any) -> Any:
    return parse_space(SPACE.format(budget=budget, search=search), file="pop.yaml", **kw)


# --- the key ------------------------------------------------------------------------------------


@given(population=st.one_of(st.integers(1, 1024), st.just("auto")))
@settings(max_examples=30, deadline=None)
def test_a_population_of_at_least_1_or_auto_is_read(population: int | str) -> None:
    assert _space(f", population: {population}").budget.population == population
    assert _space("").budget.population == 1  # the default: one Optuna trial a Ray trial


@given(
    population=st.one_of(
        st.integers(-10_000, 0),
        st.floats(-1e3, 1e3).filter(lambda x: x != int(x)),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789 _-", max_size=8).filter(
            lambda t: t != "auto"
        ),
        st.booleans(),
        st.just(None),
        st.lists(st.integers(1, 4), max_size=2),
    )
)
@settings(max_examples=60, deadline=None)
def test_a_population_below_1_or_not_an_integer_nor_auto_is_refused(population: Any) -> None:
    value = json.dumps(population)  # JSON is YAML: a string stays a string ("3" too)
    with pytest.raises(
        KdtuneError, match=r"budget\.population: must be an integer of at least 1 or auto"
    ) as err:
        _space(f", population: {value}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("search", "why"),
    [
        (WEIGHTING + "\n  batch_size: {low: 8, high: 16, step: 8}", "search.batch_size"),
        ("  grid: [{alpha: 0.3, batch_size: 8}, {alpha: 0.5, batch_size: 16}]", "batch_size"),
    ],
)
def test_trials_that_cannot_train_together_are_refused(search: str, why: str) -> None:
    with pytest.raises(KdtuneError, match=r"budget\.population: trials cannot train as a") as err:
        _space(", population: 2", search)
    assert why in str(err.value) and "\n" not in str(err.value)
    assert _space(", population: 1", search).budget.population == 1  # alone, as ever


def test_a_chain_or_a_moving_average_is_refused() -> None:
    chain = (
        SPACE.format(budget=", population: 3", search=WEIGHTING)
        .replace("level: second", "level: chain")
        .replace("  weighting:", "  weighting_first:\n    fixed: {alpha: 0.5}\n  weighting_second:")
    )
    with pytest.raises(KdtuneError, match=r"budget\.population: .*level chain"):
        parse_space(chain, file="pop.yaml")
    ema = SPACE.format(budget=", population: 2", search=WEIGHTING) + "train: {ema_decay: 0.9}\n"
    with pytest.raises(KdtuneError, match=r"budget\.population: .*ema_decay"):
        parse_space(ema, file="pop.yaml")


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "'4'", "AUTO", "true"])
def test_a_bad_population_is_one_line_and_exit_2_from_the_command(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import run_cli

    space = tmp_path / "q.yaml"
    space.write_text(SPACE.format(budget=f", population: {value}", search=WEIGHTING))
    code, _out, err = run_cli(["search", str(space), "--dry-run"], capsys)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "budget.population: must be" in err
    assert "Traceback" not in err


# --- the searcher and scheduler, by hand --------------------------------------------------------


def _searcher(space: Any, folder: Path) -> bridge.PopulationOptunaSearch:
    searcher = bridge.PopulationOptunaSearch(
        kt._DefineByRun(space),
        metric="val/ap",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.ThresholdPruner(lower=0.3, n_warmup_steps=2),
        storage=optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}"),
        study_name="pop",
        population=2,
        total=space.budget.num_samples,
    )
    searcher.kd_attach(LiveRun(folder=str(folder)))
    return searcher


def test_each_ray_trial_asks_for_its_members_and_the_last_holds_the_rest(tmp_path: Path) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    configs = [searcher.suggest(t) for t in ("a", "b", "c")]
    assert searcher.suggest("d") == Searcher.FINISHED  # 5 Optuna trials in all
    sizes = [len(c[CONFIG_KEY][MEMBERS_KEY]) for c in configs]  # type: ignore[index]
    assert sizes == [2, 2, 1]
    points = [p for c in configs for p in c[CONFIG_KEY][MEMBERS_KEY]]  # type: ignore[index]
    assert [p["number"] for p in points] == [0, 1, 2, 3, 4]
    # each member's point is a plain trial's: its train config, its number, its parameters
    plain = kt._DefineByRun(space)(optuna.create_study().ask())[CONFIG_KEY]
    assert all(p.keys() == plain.keys() and p["params"] for p in points)
    assert len({p["train"]["schedule"] for p in points}) == 5
    file = configs[0][CONFIG_KEY][PRUNED_FILE_KEY]  # type: ignore[index]
    assert Path(file).parent == tmp_path / bridge.PRUNED_FOLDER
    assert len(searcher.study.trials) == 5
    assert all(t.state == TrialState.RUNNING for t in searcher.study.trials)


def _trial(trial_id: str, config: Any) -> Any:
    return SimpleNamespace(trial_id=trial_id, config=config)


def test_members_are_reported_pruned_and_told_on_their_own(tmp_path: Path) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    scheduler = kt.OptunaPruningScheduler(searcher, "val/ap", LiveRun())
    config = searcher.suggest("a")
    trial = _trial("a", config)
    file = Path(config[CONFIG_KEY][PRUNED_FILE_KEY])  # type: ignore[index]

    def result(epoch: int, *values: float) -> dict[str, Any]:
        return {"epoch": epoch, **{member_key(k, "val/ap"): v for k, v in enumerate(values)}}

    # the warm-up (epoch 1): nobody pruned
    assert scheduler.on_trial_result(None, trial, result(1, 0.5, 0.1)) == "CONTINUE"
    assert not file.exists() and _pruned_members(file) == set()
    assert scheduler.on_trial_result(None, trial, result(2, 0.5, 0.1)) == TrialScheduler.CONTINUE
    assert _pruned_members(file) == {1}  # the trial reads it at its next evaluation
    # a late report of the pruned member (it had not read the file yet) changes nothing
    assert scheduler.on_trial_result(None, trial, result(3, 0.6, 0.1)) == TrialScheduler.CONTINUE
    scheduler.on_trial_result(None, trial, result(4, 0.6))
    scheduler.on_trial_result(None, trial, result(5, 0.7))
    searcher.on_trial_complete("a", {"epoch": 5})
    first, second = searcher.study.trials
    assert (first.state, first.value) == (TrialState.COMPLETE, 0.7)
    assert sorted(first.intermediate_values) == [1, 2, 3, 4, 5]
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == [1, 2]
    assert searcher.final_state("a") == "COMPLETE"  # every member ended


def test_a_population_whose_every_member_is_pruned_stops(tmp_path: Path) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    scheduler = kt.OptunaPruningScheduler(searcher, "val/ap", LiveRun())
    trial = _trial("a", searcher.suggest("a"))
    low = {member_key(0, "val/ap"): 0.1, member_key(1, "val/ap"): 0.2}
    scheduler.on_trial_result(None, trial, {"epoch": 1, **low})
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, **low}) == TrialScheduler.STOP
    searcher.on_trial_complete("a", {"epoch": 2})
    assert [t.state for t in searcher.study.trials] == [TrialState.PRUNED] * 2


def test_a_member_stopped_by_the_time_limit_or_never_run_is_not_left_running(
    tmp_path: Path,
) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    scheduler = kt.OptunaPruningScheduler(searcher, "val/ap", LiveRun())
    trial = _trial("a", searcher.suggest("a"))
    scheduler.on_trial_result(None, trial, {"epoch": 1, member_key(0, "val/ap"): 0.5})
    searcher.on_trial_complete("a", {"epoch": 1})
    states = [t.state for t in searcher.study.trials]
    assert states == [TrialState.PRUNED, TrialState.FAIL]
    errored = _trial("b", searcher.suggest("b"))
    searcher.on_trial_complete(errored.trial_id, error=True)
    assert all(t.state.is_finished() for t in searcher.study.trials)


def test_a_member_that_diverged_fails_on_its_own(tmp_path: Path) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    scheduler = kt.OptunaPruningScheduler(searcher, "val/ap", LiveRun())
    trial = _trial("a", searcher.suggest("a"))
    scheduler.on_trial_result(
        None, trial, {"epoch": 1, member_key(0, "val/ap"): 0.5, member_key(1, "val/ap"): 0.5}
    )
    for epoch in range(2, 6):
        scheduler.on_trial_result(None, trial, {"epoch": epoch, member_key(0, "val/ap"): 0.5})
    gone = "TrialDivergedError: TrialDiverged: loss became nan"
    scheduler.on_trial_result(None, trial, {member_key(1, MEMBER_ERROR): gone})
    searcher.on_trial_complete("a", {})
    first, second = searcher.study.trials
    assert (first.state, first.value) == (TrialState.COMPLETE, 0.5)
    assert second.state == TrialState.FAIL and second.user_attrs[STOP_REASON_ATTR] == gone


def test_tpe_samples_a_populations_members_with_constant_liar() -> None:
    tpe = "sampler: {type: tpe, seed: 0}"
    text = SPACE.format(budget=", population: 2", search=WEIGHTING)
    space = parse_space(text.replace("sampler: {type: random, seed: 0}", tpe), file="p.yaml")
    assert space.budget.max_concurrent == 1
    assert make_sampler(space)._constant_liar is True  # type: ignore[attr-defined]


def test_a_restored_searcher_reconciles_its_members_and_adopts_orphans(tmp_path: Path) -> None:
    space = _space()
    searcher = _searcher(space, tmp_path)
    scheduler = kt.OptunaPruningScheduler(searcher, "val/ap", LiveRun())
    trial = _trial("a", searcher.suggest("a"))
    for epoch in (1, 2):
        scheduler.on_trial_result(
            None,
            trial,
            {"epoch": epoch, member_key(0, "val/ap"): 0.5, member_key(1, "val/ap"): 0.1},
        )
    searcher.save(str(tmp_path / "snap.pkl"))
    searcher.suggest("b")  # asked after the snapshot: its members are orphans after a kill
    again = _searcher(space, tmp_path)
    again.restore(str(tmp_path / "snap.pkl"))
    assert again.members("a") == [member_trial_id("a", 0), member_trial_id("a", 1)]
    assert again.pruned("a") == [1] and again.final_state("a") is None
    assert again.orphans() == [2, 3]
    config = again.suggest("c")  # the orphans, not new trials
    assert [p["number"] for p in config[CONFIG_KEY][MEMBERS_KEY]] == [2, 3]  # type: ignore[index]
    assert len(again.study.trials) == 4
    # a restarted trial reports from its first epoch again: no step reported twice
    again_trial = _trial("a", trial.config)
    kt.OptunaPruningScheduler(again, "val/ap", LiveRun()).on_trial_result(
        None, again_trial, {"epoch": 1, member_key(0, "val/ap"): 0.9}
    )
    assert again.study.trials[0].intermediate_values[1] == 0.5


# --- searches under Ray (slow) -----------------------------------------------------------------


def _study(result: SearchResult) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=result.study_name, storage=str(result.study_storage))
    return study.get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_pruned_member_leaves_its_population_and_the_other_finishes(tmp_path: Path) -> None:
    ended: list[Any] = []
    space = parse_space(TOY, file="toypop.yaml")
    result = kt.run_search(
        space,
        results=tmp_path,
        trial_fn=toy_trial.ToyPopulation(),
        progress=False,
        on_trial_end=ended.append,
    )
    by_alpha = {toy_trial.alpha_of(t.config): t for t in result.trials}
    assert sorted(by_alpha) == [0.2, 0.3, 0.4, 1.0]
    assert {a: t.state for a, t in by_alpha.items()} == {
        0.3: COMPLETE,
        1.0: PRUNED,
        0.2: COMPLETE,
        0.4: COMPLETE,
    }
    # two Ray trials, each two Optuna trials recorded as trials of their own
    assert {t.trial_id.rpartition("_member")[0] for t in result.trials}.__len__() == 2
    assert sorted(r.trial_id for r in ended) == sorted(t.trial_id for t in result.trials)
    frozen = {t.number: t for t in _study(result)}
    assert len(frozen) == 4
    for record in result.trials:
        ot = frozen[record.number]
        assert ot.state.name == {COMPLETE: "COMPLETE", PRUNED: "PRUNED"}[record.state]
        assert ot.params == record.params
    pruned, kept = by_alpha[1.0], by_alpha[0.3]
    assert sorted(frozen[pruned.number].intermediate_values) == [1, 2]  # pruned at epoch 2
    assert frozen[kept.number].value == pytest.approx(toy_trial.toy_ap(0.3, 8))
    assert kept.epochs_run == 8 and kept.value() == pytest.approx(toy_trial.toy_ap(0.3, 8))
    # the trial learned it: the pruned member left before the end, the other trained on
    left = list(tmp_path.glob("toypop/ray/*/work/member*/left.txt"))
    assert len(left) == 1 and 2 < int(left[0].read_text()) < 8
    assert pruned.epochs_run < 8
    saved = SearchResult.load(tmp_path / "toypop" / SEARCH_FILE)
    assert sorted(t.trial_id for t in saved.trials) == sorted(t.trial_id for t in result.trials)


@pytest.mark.slow
def test_a_real_search_trained_as_populations(synth_root: Path, tmp_path: Path) -> None:
    from helpers import small_config

    from kdtune.teachers import resolve
    from kdtune.train import fit

    results = tmp_path / "results"
    teacher = resolve(small_config(synth_root), results, lambda _m: None, fit=fit)
    text = f"""
name: realpop
level: second
data: {synth_root}
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{num_samples: 4, max_epochs: 2, eval_every: 1, max_concurrent: 1, population: 2}}
resources: {{cpu: 1}}
teacher: {{checkpoint: {teacher}}}
train: {{batch_size: 8, max_train_images: 16, max_val_images: 8, num_threads: 1}}
search:
  weighting:
    fixed: {{alpha: {{low: 0.0, high: 1.0}}}}
"""
    space = parse_space(text, file="realpop.yaml")
    result = kt.run_search(space, results=results, progress=False)
    assert len(result.trials) == 4
    assert {t.trial_id.rpartition("_member")[0] for t in result.trials}.__len__() == 2
    assert len({t.reported_schedule for t in result.trials}) == 4
    frozen = {t.number: t for t in _study(result)}
    assert sorted(frozen) == sorted(t.number for t in result.trials) == [0, 1, 2, 3]
    for record in result.trials:
        ot = frozen[record.number]
        assert ot.state.name in ("COMPLETE", "PRUNED") and record.state in (COMPLETE, PRUNED)
        assert ot.params == record.params and ot.intermediate_values
        assert record.history and record.checkpoint_dir and Path(record.checkpoint_dir).is_dir()
        if record.state == COMPLETE:
            assert ot.value == pytest.approx(record.value())
    saved = SearchResult.load(results / "realpop" / SEARCH_FILE)
    assert len({t.reported_schedule for t in saved.trials}) == 4


KILLED = """
name: kpop
level: second
sampler: {type: grid, seed: 0}
pruner: {type: none}
budget: {max_epochs: 4, eval_every: 1, max_concurrent: 1, population: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.5}}
search:
  grid: [{alpha: 0.1}, {alpha: 0.3}, {alpha: 0.6}, {alpha: 0.9}]
"""
KILLED_POINTS = ["fixed:0.1", "fixed:0.4", "fixed:0.7", "fixed:0.9"]
CHILD = """
import sys
sys.path.insert(0, {tests!r})
import ray.cloudpickle, toy_trial
ray.cloudpickle.register_pickle_by_value(toy_trial)
from pathlib import Path
from kdtune.space import make_sampler, parse_space
from kdtune.tune import run_search
space = parse_space(Path({space!r}).read_text(), file={space!r})
run_search(
    space, results=Path({results!r}), trial_fn=toy_trial.ToyPopulation(), progress=False,
    resume={resume!r},
)
"""


@pytest.mark.slow
@pytest.mark.parametrize("started", [2, 4], ids=["first-population", "second-asked"])
def test_a_population_killed_then_resumed_trains_every_member_once(
    tmp_path: Path, started: int
) -> None:
    """SIGKILL once ``started`` of the 4 Optuna trials are in the study (the first population
    mid-run, or the second just asked: its members may be orphans): the resume trains every
    member to its end, and leaves no Optuna trial RUNNING."""
    import subprocess
    import sys
    import time

    from test_tune_search import _kill_session, _study_count

    space_file = tmp_path / "kpop.yaml"
    space_file.write_text(KILLED)
    results = tmp_path / "results"
    args = dict(tests=str(Path(__file__).parent), space=str(space_file), results=str(results))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(**args, resume=False)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    study_file = results / "kpop" / "optuna.db"
    try:
        deadline = time.monotonic() + 300
        while _study_count(study_file) < started:
            assert child.poll() is None and time.monotonic() < deadline, "no kill point"
            time.sleep(0.05)
        time.sleep(1.5)  # a few epochs in
    finally:
        _kill_session(child)
    resumed = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(**args, resume=True)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = resumed.communicate(timeout=240)
    finally:
        if resumed.poll() is None:
            _kill_session(resumed)
    assert resumed.returncode == 0, err[-2000:]
    result = SearchResult.load(results / "kpop" / SEARCH_FILE)
    complete = [t for t in result.trials if t.state == COMPLETE]
    assert sorted(t.config["schedule"] for t in complete) == KILLED_POINTS
    assert len(result.trials) == len(KILLED_POINTS)  # nothing ran twice, nothing else ran
    for record in complete:
        assert [h["epoch"] for h in record.history] == [1.0, 2.0, 3.0, 4.0]
    frozen = _study(result)
    assert sorted(t.state.name for t in frozen) == ["COMPLETE"] * len(KILLED_POINTS)
    assert sorted(t.user_attrs["schedule"] for t in frozen) == KILLED_POINTS
