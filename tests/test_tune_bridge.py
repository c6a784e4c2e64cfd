"""The Optuna pruning bridge, without running Ray: the contract with ray/optuna's private parts,
and the searcher/scheduler logic driven by hand."""

from __future__ import annotations

import json
import os
import pickle
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from kdtune import tune as kt
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, FAILED, SEARCH_FILE, SPACE_COPY, SearchResult
from kdtune.space import make_sampler, parse_space
from kdtune.tune import bridge, driver, records
from kdtune.tune.protocol import LiveRun
from kdtune.tune.trial import _set_torch_threads

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = """
name: bridge
level: second
sampler: {type: random, seed: 0}
pruner: {type: threshold, options: {lower: 0.3, n_warmup_steps: 2}}
budget: {num_samples: 4, max_epochs: 5}
search:
  weighting:
    fixed: {alpha: {low: 0.0, high: 1.0}}
"""


def changed(what: str) -> str:
    return (
        f"ray/optuna changed: {what}; kdtune.tune.bridge.PruningOptunaSearch relies on it "
        "(pins: ray==2.60.0, optuna==5.0.0)"
    )


@pytest.fixture
def space() -> Any:
    return parse_space(SPACE, file="bridge.yaml")


def make_searcher(
    space: Any, storage: optuna.storages.BaseStorage | None = None
) -> kt.PruningOptunaSearch:
    return kt.PruningOptunaSearch(
        kt._DefineByRun(space),
        metric="val/ap",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.ThresholdPruner(lower=0.3, n_warmup_steps=2),
        storage=storage or optuna.storages.InMemoryStorage(),
        study_name="bridge",
    )


def suggest(searcher: kt.PruningOptunaSearch, trial_id: str) -> dict[str, Any]:
    config = searcher.suggest(trial_id)
    assert isinstance(config, dict)
    return config


def states(study: optuna.Study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


# ---------------------------------------------------------------------------------------------
# Contract: the private parts of OptunaSearch the bridge relies on


def test_pinned_versions() -> None:
    assert ray.__version__ == "2.60.0", changed(f"ray is {ray.__version__}, not the pinned 2.60.0")
    assert optuna.__version__ == "5.0.0", changed(f"optuna is {optuna.__version__}, not 5.0.0")


def test_contract_optuna_search_private_state(space: Any) -> None:
    searcher = OptunaSearch(
        space=kt._DefineByRun(space), metric="val/ap", mode="max", study_name="contract"
    )
    for name, kind in (
        ("_ot_trials", dict),
        ("_ot_study", optuna.Study),
        ("_completed_trials", set),
    ):
        assert hasattr(searcher, name), changed(f"OptunaSearch no longer has {name}")
        assert isinstance(getattr(searcher, name), kind), changed(
            f"OptunaSearch.{name} is no longer a {kind.__name__}"
        )
    config = searcher.suggest("ray-trial-1")
    assert config is not None
    assert isinstance(searcher._ot_trials.get("ray-trial-1"), optuna.Trial), changed(
        "OptunaSearch._ot_trials no longer maps Ray trial ids to optuna.Trial"
    )
    # the define-by-run wrapper still forwards number and params of the optuna trial
    assert config[kt.CONFIG_KEY]["number"] == 0, changed("the define-by-run trial lost .number")
    assert set(config[kt.CONFIG_KEY]["params"]) == {"alpha"}, changed(
        "the define-by-run trial lost .params"
    )
    study: Any = searcher._ot_study
    assert isinstance(study.pruner, optuna.pruners.NopPruner), changed(
        "OptunaSearch no longer fixes NopPruner: the bridge may now be redundant or clash"
    )


def test_contract_loopback_switch() -> None:
    """A local Ray binds 127.0.0.1 by turning off Ray's cluster support while it starts."""
    from ray._private import ray_constants, services

    assert isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool), changed(
        "ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone: local Ray may leave loopback"
    )
    from kdtune.tune.driver import LOOPBACK, _loopback_only

    with _loopback_only():
        assert services.resolve_ip_for_localhost(LOOPBACK) == LOOPBACK, changed(
            "ray.init no longer keeps a loopback node address without cluster support"
        )


def test_contract_save_restore_keeps_the_whole_dict(space: Any, tmp_path: Path) -> None:
    def plain() -> OptunaSearch:
        return OptunaSearch(space=kt._DefineByRun(space), metric="val/ap", mode="max")

    searcher = plain()
    searcher.suggest("a")
    searcher._kd_marker = {"a": {1, 2}}  # type: ignore[attr-defined]  # what PruningOptunaSearch keeps beside Ray's state
    searcher.save(str(tmp_path / "s.pkl"))
    fresh = plain()
    fresh.restore(str(tmp_path / "s.pkl"))
    assert getattr(fresh, "_kd_marker", None) == {"a": {1, 2}}, changed(
        "OptunaSearch.save/restore no longer pickle the searcher's whole __dict__"
    )
    assert "a" in fresh._ot_trials, changed("OptunaSearch.restore no longer restores _ot_trials")


def test_contract_scheduler_api() -> None:
    assert (TrialScheduler.CONTINUE, TrialScheduler.STOP) == ("CONTINUE", "STOP")
    assert hasattr(FIFOScheduler, "_supports_buffered_results"), changed(
        "TrialScheduler._supports_buffered_results is gone"
    )
    assert (
        kt.OptunaPruningScheduler(make_searcher_for_contract(), "val/ap").supports_buffered_results
        is False
    )


def make_searcher_for_contract() -> kt.PruningOptunaSearch:
    return make_searcher(parse_space(SPACE, file="bridge.yaml"))


# ---------------------------------------------------------------------------------------------
# The searcher's bookkeeping


def test_pruned_trial_is_pruned_in_the_study_and_not_completed_later(space: Any) -> None:
    s = make_searcher(space)
    s.suggest("t")
    assert s.report_epoch("t", 1, 0.01, may_prune=True) is False  # warm-up
    assert s.report_epoch("t", 2, 0.02, may_prune=True) is True  # below 0.3 after warm-up
    assert s.final_state("t") == "PRUNED"
    s.on_trial_complete(
        "t", {"val/ap": 0.02, "epoch": 2, "done": True}
    )  # Ray's later call: no re-tell
    frozen = s.study.get_trials(deepcopy=False)[0]
    assert frozen.state == TrialState.PRUNED
    assert frozen.intermediate_values == {1: 0.01, 2: 0.02}
    assert s.report_epoch("t", 3, 0.5, may_prune=True) is True  # already pruned: stop again


def test_same_step_is_reported_once_without_warning(space: Any) -> None:
    s = make_searcher(space)
    s.suggest("t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.report_epoch("t", 3, 0.6, may_prune=True) is False
        assert s.report_epoch("t", 3, 0.1, may_prune=True) is False  # the final duplicate
    assert s.study.get_trials(deepcopy=False)[0].intermediate_values == {3: 0.6}


def test_last_epoch_is_never_pruned(space: Any) -> None:
    s = make_searcher(space)
    s.suggest("t")
    assert s.report_epoch("t", 5, 0.0, may_prune=False) is False
    assert s.final_state("t") is None


@pytest.mark.parametrize(
    ("result", "error", "steps", "expected", "reason"),
    [
        ({"val/ap": 0.7, "epoch": 5, "done": True}, False, [1], "COMPLETE", None),
        (None, True, [1], "FAIL", None),
        (
            {"val/ap": 0.4, "epoch": 3, "done": True},
            False,
            [1],
            "PRUNED",
            "stopped by the search's time limit",
        ),
        ({"val/ap": 0.4, "done": True}, False, [], "FAIL", "never ran"),
        (None, False, [], "FAIL", "never ran"),
        (
            {"val/ap": float("nan"), "epoch": 5, "done": True},
            False,
            [1],
            "FAIL",
            "ended without a finite val/ap",
        ),
    ],
)
def test_how_a_trial_ends_in_the_study(
    space: Any,
    result: dict | None,
    error: bool,
    steps: list[int],
    expected: str,
    reason: str | None,
) -> None:
    s = make_searcher(space)
    s.suggest("t")
    for step in steps:
        s.report_epoch("t", step, 0.5, may_prune=False)
    s.on_trial_complete("t", result, error=error)
    s.on_trial_complete("t", result, error=error)  # twice: ignored
    frozen = s.study.get_trials(deepcopy=False)[0]
    assert frozen.state.name == expected
    assert frozen.user_attrs.get(kt.STOP_REASON_ATTR) == reason
    if expected == "COMPLETE":
        assert frozen.value == 0.7


def test_searcher_does_not_report_ray_iterations(space: Any) -> None:
    s = make_searcher(space)
    s.suggest("t")
    s.on_trial_result("t", {"val/ap": 0.5, "training_iteration": 1, "epoch": 4})
    assert s.study.get_trials(deepcopy=False)[0].intermediate_values == {}


def test_restore_catches_up_with_a_study_that_ran_ahead(space: Any, tmp_path: Path) -> None:
    """A killed search: the snapshot lags the SQLite study (ends, extra trials)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = make_searcher(space, optuna.storages.RDBStorage(url))
    s.suggest("done-later")
    s.suggest("pruned-later")
    s.suggest("running")
    s.report_epoch("running", 1, 0.5, may_prune=True)
    s.save(str(tmp_path / "snap.pkl"))
    # after the snapshot: two trials end, one more is created, then the process dies
    s.report_epoch("done-later", 1, 0.8, may_prune=True)
    s.on_trial_complete("done-later", {"val/ap": 0.8, "epoch": 5, "done": True})
    s.report_epoch("pruned-later", 1, 0.1, may_prune=True)
    s.report_epoch("pruned-later", 2, 0.1, may_prune=True)
    orphan = suggest(s, "orphan")

    restored = make_searcher(space, optuna.storages.RDBStorage(url))
    restored.restore(str(tmp_path / "snap.pkl"))
    assert restored.final_state("done-later") == "COMPLETE"
    assert restored.final_state("pruned-later") == "PRUNED"
    assert restored.final_state("running") is None
    assert restored.report_epoch("pruned-later", 1, 0.9, may_prune=True) is True  # stop it
    assert restored.report_epoch("running", 1, 0.5, may_prune=True) is False  # replayed step
    restored.on_trial_complete(
        "done-later", {"val/ap": 0.8, "epoch": 5, "done": True}
    )  # no second tell
    study = optuna.load_study(study_name="bridge", storage=url)
    assert states(study) == {0: "COMPLETE", 1: "PRUNED", 2: "RUNNING", 3: "RUNNING"}
    assert study.trials[2].intermediate_values == {1: 0.5}
    # the orphan (created after the snapshot) goes to the next Ray trial, with its parameters
    assert restored.orphans() == [3]
    assert suggest(restored, "next") == orphan and restored.orphans() == []
    # then the sampler goes on in the same study: new trials take the next numbers
    assert suggest(restored, "after")[kt.CONFIG_KEY]["number"] == 4


GRID = """
name: bridge
level: second
sampler: {type: grid, seed: 0}
budget: {num_samples: 3, max_epochs: 2}
search:
  grid: [{alpha: 0.1}, {alpha: 0.5}, {alpha: 0.9}]
"""


def test_a_grid_point_orphaned_by_a_kill_runs_once_after_resume(tmp_path: Path) -> None:
    """The kill came after the last grid point was asked and before the snapshot: restore
    must not stop the study (Optuna's GridSampler would, on that point's FAIL), and the point
    must still run, once."""
    grid = parse_space(GRID, file="grid.yaml")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher() -> kt.PruningOptunaSearch:
        return kt.PruningOptunaSearch(
            kt._DefineByRun(grid),
            metric="val/ap",
            mode="max",
            sampler=make_sampler(grid),
            pruner=optuna.pruners.NopPruner(),
            storage=optuna.storages.RDBStorage(url),
            study_name="bridge",
        )

    s = searcher()
    for trial_id in ("a", "b"):
        suggest(s, trial_id)
        s.on_trial_complete(trial_id, {"val/ap": 0.5, "epoch": 2})
    s.save(str(tmp_path / "snap.pkl"))
    last = suggest(s, "c")  # the last grid point: asked, then the process dies

    restored = searcher()
    restored.restore(str(tmp_path / "snap.pkl"))  # no RuntimeError from study.stop()
    assert suggest(restored, "c2") == last
    restored.on_trial_complete("c2", {"val/ap": 0.4, "epoch": 2})
    study = optuna.load_study(study_name="bridge", storage=url)
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE"}
    schedules = sorted(t.user_attrs["schedule"] for t in study.trials)
    assert schedules == ["fixed:0.1", "fixed:0.5", "fixed:0.9"]  # each grid point once


# ---------------------------------------------------------------------------------------------
# The scheduler


def test_scheduler_stops_what_the_pruner_prunes(space: Any) -> None:
    s = make_searcher(space)
    config = suggest(s, "t")
    sched = kt.OptunaPruningScheduler(s, "val/ap")
    trial = SimpleNamespace(trial_id="t", config=config)
    decide = lambda epoch, ap: sched.on_trial_result(None, trial, {"epoch": epoch, "val/ap": ap})  # noqa: E731
    assert decide(1, 0.1) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trial, {"training_iteration": 1}) == TrialScheduler.CONTINUE
    assert decide(2, 0.1) == TrialScheduler.STOP


def test_scheduler_never_prunes_the_last_epoch(space: Any) -> None:
    s = make_searcher(space)
    config = suggest(s, "t")
    sched = kt.OptunaPruningScheduler(s, "val/ap")
    trial = SimpleNamespace(trial_id="t", config=config)
    assert config[kt.CONFIG_KEY]["train"]["epochs"] == 5
    assert (
        sched.on_trial_result(None, trial, {"epoch": 5, "val/ap": 0.0}) == TrialScheduler.CONTINUE
    )


def test_searcher_survives_pickling(space: Any) -> None:
    s = make_searcher(space)
    s.suggest("t")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.optuna_trial("t") is not None


def test_the_runs_state_is_never_pickled_and_a_moved_study_opens_where_the_run_says(
    space: Any, tmp_path: Path
) -> None:
    """Searcher, scheduler and callback pickled as Tune pickles them (a folder that then
    moves): none carries the run's state; handed the new run's, the searcher opens its study
    at the new place, the scheduler and callback read the new run's stop and monitor."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    s = make_searcher(space, optuna.storages.RDBStorage(f"sqlite:///{old / 'optuna.db'}"))
    s.suggest("t")
    live = LiveRun(monitor="the monitor", stopping=True, storage_url="sqlite:///nowhere.db")
    s.kd_attach(live)
    sched = kt.OptunaPruningScheduler(s, "val/ap", live)
    callback = records._MonitorCallback("bridge", live)
    blob = pickle.dumps((sched, callback))
    assert b"the monitor" not in blob and b"nowhere.db" not in blob
    old.rename(new)
    sched2, callback2 = pickle.loads(blob)
    assert all("_kd_live" not in vars(part) for part in (sched2, sched2._searcher, callback2))
    moved = LiveRun(monitor="moved", storage_url=f"sqlite:///{new / 'optuna.db'}")
    for part in (sched2, callback2):
        part.kd_attach(moved)
    searcher = sched2._searcher
    assert searcher.study._storage is not None and searcher.optuna_trial("t") is not None
    assert [t.number for t in searcher.study.get_trials(deepcopy=False)] == [0]
    assert not (old / "optuna.db").exists()  # nothing opened at the stale path
    assert callback2._part("monitor") == "moved"
    assert searcher.suggest("u") not in (None, Searcher.FINISHED)  # the new run: not stopping
    moved.stopping = True
    assert searcher.suggest("v") is None


def test_contract_a_restored_tuner_holds_its_searcher_scheduler_and_callbacks() -> None:
    """``driver.restore_tuner`` hands the run's state to what ``Tuner.restore`` unpickled,
    read from ``Tuner._local_tuner._tune_config`` / ``._run_config``."""
    from ray.tune.impl.tuner_internal import TunerInternal

    internal = TunerInternal.__new__(TunerInternal)
    TunerInternal.__init__(
        internal,
        trainable=lambda config: None,
        tune_config=tune.TuneConfig(scheduler=FIFOScheduler()),
        run_config=tune.RunConfig(callbacks=[records._MonitorCallback("k")]),
    )
    assert isinstance(internal._tune_config, tune.TuneConfig), changed(
        "TunerInternal._tune_config is gone"
    )
    assert isinstance(internal._run_config.callbacks[0], records._MonitorCallback), changed(
        "TunerInternal._run_config no longer holds the callbacks"
    )
    assert "_local_tuner" in tune.Tuner.__annotations__, changed("Tuner._local_tuner is gone")


# ---------------------------------------------------------------------------------------------
# Set-up helpers


def test_ray_temp_dir_fits_the_socket_path_limit(tmp_path: Path) -> None:
    short = Path("/r/q")
    assert driver._ray_temp_dir(short) == short / ".ray"
    long = tmp_path / ("x" * 80) / "search"
    temp = driver._ray_temp_dir(long)
    assert str(temp).startswith("/tmp/kdtune-ray-")
    assert temp == driver._ray_temp_dir(long)  # stable: the same search gets the same folder
    assert len(str(temp)) + driver._SOCKET_SUFFIX <= driver._SOCKET_PATH_MAX


def test_check_start_never_overwrites_and_only_resumes_what_exists(
    space: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "bridge"
    with pytest.raises(KdtuneError, match="no search named 'bridge' to resume"):
        kt.check_start(folder, space, resume=True)
    kt.check_start(folder, space, resume=False)  # nothing there: fine
    folder.mkdir()
    (folder / SEARCH_FILE).write_text("{}")
    with pytest.raises(KdtuneError, match="already exists; pass --resume"):
        kt.check_start(folder, space, resume=False)
    with pytest.raises(KdtuneError, match="stopped before its first snapshot"):
        kt.check_start(folder, space, resume=True)


def test_history_entry_keeps_the_vocabulary_and_the_epoch() -> None:
    result = {
        "val/ap": 0.5,
        "train/loss": 1.5,
        "epoch": 3,
        "training_iteration": 3,
        "time_total_s": 2.0,
        kt.NODE_KEY: "host/abc",
        "config": {"kdtune": {}},
        "done": False,
    }
    assert records._history_entry(result) == {"val/ap": 0.5, "train/loss": 1.5, "epoch": 3.0}


def test_error_of_reads_the_last_line_and_spots_divergence(tmp_path: Path) -> None:
    error = tmp_path / "error.txt"
    error.write_text(
        "Failure # 1\nTraceback (most recent call last):\n  File x\n"
        "kdtune.tune.TrialDivergedError: TrialDiverged: loss became nan at epoch 2\n"
    )
    message, diverged = records._error_of(SimpleNamespace(error_file=str(error)))
    assert message == "kdtune.tune.TrialDivergedError: TrialDiverged: loss became nan at epoch 2"
    assert diverged
    error.write_text("Traceback\nValueError: toy failure at epoch 2\n")
    assert records._error_of(SimpleNamespace(error_file=str(error))) == (
        "ValueError: toy failure at epoch 2",
        False,
    )


def test_run_search_refuses_to_resume_what_does_not_exist(space: Any, tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match="no search named 'bridge' to resume"):
        kt.run_search(space, results=tmp_path, resume=True, trial_fn=print, progress=False)
    assert not (tmp_path / "bridge").exists()


# ---------------------------------------------------------------------------------------------
# The time limit


class FakeController:
    """The two TuneController methods the scheduler uses past the time limit."""

    def __init__(self, trials: list[Any]) -> None:
        self.trials, self.stopped = trials, list[str]()

    def get_trials(self) -> list[Any]:
        return self.trials

    def stop_trial(self, trial: Any) -> None:
        self.stopped.append(trial.trial_id)


def test_past_the_time_limit_trials_stop_and_nothing_new_starts(
    space: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_searcher(space)
    config = suggest(s, "running")
    live = LiveRun()
    sched = kt.OptunaPruningScheduler(s, "val/ap", live)
    trial = SimpleNamespace(trial_id="running", config=config)
    result = {"epoch": 1, "val/ap": 0.9}
    assert sched.on_trial_result(None, trial, result) == TrialScheduler.CONTINUE  # no limit set
    live.deadline = time.monotonic() - 1.0
    assert sched.on_trial_result(None, trial, {"epoch": 2, "val/ap": 0.9}) == TrialScheduler.STOP
    s.on_trial_complete("running", {"epoch": 2, "val/ap": 0.9, "done": True})  # Ray sets done
    frozen = s.study.get_trials(deepcopy=False)[0]
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs[kt.STOP_REASON_ATTR] == "stopped by the search's time limit"
    assert frozen.intermediate_values == {1: 0.9, 2: 0.9}  # the last evaluation still counts
    assert s.suggest("new") == Searcher.FINISHED
    waiting = [
        SimpleNamespace(trial_id="w", status="PENDING"),
        SimpleNamespace(trial_id="r", status="RUNNING"),
    ]
    controller = FakeController(waiting)
    assert sched.choose_trial_to_run(controller) is None
    assert controller.stopped == ["w"]


def test_a_restored_searcher_suggests_again(space: Any, tmp_path: Path) -> None:
    s = make_searcher(space)
    s.close()
    s.save(str(tmp_path / "snap.pkl"))
    restored = make_searcher(space)
    restored.restore(str(tmp_path / "snap.pkl"))
    assert restored.suggest("next") not in (None, Searcher.FINISHED)


# ---------------------------------------------------------------------------------------------
# The driver's records


def fake_trial(trial_id: str, config: dict, **extra: Any) -> Any:
    return SimpleNamespace(
        trial_id=trial_id, config=config, checkpoint=None, error_file=None, **extra
    )


def _monitor(space: Any, folder: Path, url: str, ended: list[Any]) -> records._Monitor:
    """A run's monitor writing ``search.json`` in ``folder``, each trial's end into ``ended``."""
    return records._Monitor(
        records._empty_result(folder, space, url),
        path=folder / SEARCH_FILE,
        storage_url=url,
        budget=space.budget,
        on_trial_end=ended.append,
        progress=False,
    )


def test_monitor_records_results_ends_and_writes_search_json(space: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = make_searcher(space, optuna.storages.RDBStorage(url))
    ended: list[Any] = []
    monitor = _monitor(space, tmp_path, url, ended)
    good, bad = fake_trial("good", suggest(s, "good")), fake_trial("bad", suggest(s, "bad"))
    for epoch in (1, 2, 2):  # the final result arrives twice
        monitor.trial_result(good, {"epoch": epoch, "val/ap": 0.1 * epoch, kt.NODE_KEY: "h/1"})
        s.report_epoch("good", epoch, 0.1 * epoch, may_prune=False)
    s.on_trial_complete("good", {"val/ap": 0.2, "epoch": 5, "done": True})
    monitor.trial_end(good, errored=False)
    error = tmp_path / "error.txt"
    error.write_text("Traceback\nValueError: boom\n")
    bad.error_file = str(error)
    s.on_trial_complete("bad", None, error=True)
    monitor.trial_end(bad, errored=True)
    never = fake_trial("never", suggest(s, "never"))
    s.on_trial_complete("never")
    monitor.trial_end(never, errored=False)  # removed by the time limit before it ran

    result = monitor.finish()
    assert [(t.trial_id, t.state) for t in result.trials] == [("good", COMPLETE), ("bad", FAILED)]
    good_rec = result.trials[0]
    assert [h["epoch"] for h in good_rec.history] == [1.0, 2.0]
    ot_good = s.optuna_trial("good")
    assert ot_good is not None
    assert good_rec.node == "h/1" and good_rec.params == ot_good.params
    assert good_rec.config["epochs"] == 5 and good_rec.number == 0
    assert result.trials[1].error == "ValueError: boom"
    assert [r.trial_id for r in ended] == ["good", "bad"]
    assert SearchResult.load(tmp_path / SEARCH_FILE).counts()[COMPLETE] == 1
    assert monitor.epochs_now == 2


def test_resume_refuses_a_changed_space_file(
    space: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "bridge"
    folder.mkdir()
    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: True))
    (folder / SPACE_COPY).write_text(SPACE)
    kt.check_start(folder, space, resume=True)  # same file: fine
    (folder / SPACE_COPY).write_text(SPACE.replace("max_epochs: 5", "max_epochs: 6"))
    with pytest.raises(KdtuneError, match="search-space file differs"):
        kt.check_start(folder, space, resume=True)


def test_torch_threads_follow_the_trial_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        _set_torch_threads(2.0)
        assert os.environ["OMP_NUM_THREADS"] == "2"
        assert torch.get_num_threads() == 2
        _set_torch_threads(0.5)  # a fraction of a CPU still gets one thread
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cpu", "gpu", "cluster", "words"),
    [
        (1, 0.5, {"CPU": 2.0}, "resources.gpu: a trial asks for 0.5 GPU, the Ray cluster has 0"),
        (4, 0, {"CPU": 2.0}, "resources.cpu: a trial asks for 4 CPU, the Ray cluster has 2"),
    ],
)
def test_resources_no_node_can_hold_are_refused(
    cpu: float, gpu: float, cluster: dict[str, float], words: str
) -> None:
    from types import SimpleNamespace

    from kdtune.tune.driver import check_resources

    with pytest.raises(KdtuneError, match=words):
        check_resources(SimpleNamespace(cpu=cpu, gpu=gpu), cluster)
    check_resources(SimpleNamespace(cpu=1, gpu=0), cluster)  # what fits passes


# ---------------------------------------------------------------------------------------------
# A restored trial whose snapshot names a checkpoint Tune has deleted since


def _trial_with_checkpoints(folder: Path, names: list[str], latest: str) -> Any:
    """A restored trial as the scheduler sees it: Tune's own checkpoint manager, registered
    with ``names`` in order, its latest one ``latest``; only ``names`` exist on disk."""
    import pyarrow.fs
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    fs = pyarrow.fs.LocalFileSystem()
    manager = _CheckpointManager(tune.CheckpointConfig(num_to_keep=None))
    for name in sorted({*names, latest}):
        path = folder / name
        result = _TrainingResult(
            checkpoint=tune.Checkpoint(path=str(path), filesystem=fs),
            metrics={"training_iteration": int(name.rpartition("_")[2])},
        )
        manager.register_checkpoint(result)
        if name == latest:
            break
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    lines = [{"epoch": int(n.rpartition("_")[2]) + 1, "checkpoint_dir_name": n} for n in names]
    (folder / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return SimpleNamespace(
        trial_id="t1",
        run_metadata=SimpleNamespace(checkpoint_manager=manager),
        storage=SimpleNamespace(trial_fs_path=str(folder)),
    )


def test_a_lost_checkpoint_resumes_from_the_oldest_newer_one(tmp_path: Path) -> None:
    trial = _trial_with_checkpoints(
        tmp_path, ["checkpoint_000004", "checkpoint_000005"], latest="checkpoint_000003"
    )
    assert bridge.recover_lost_checkpoint(trial) == "checkpoint_000004"
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    assert latest.checkpoint.path == str(tmp_path / "checkpoint_000004")
    assert latest.metrics["epoch"] == 5  # the result Tune logged with that checkpoint
    assert all(Path(r.checkpoint.path).exists() for r in manager._checkpoint_results), changed(
        "_CheckpointManager._checkpoint_results no longer lists the kept checkpoints"
    )


def test_a_kept_checkpoint_is_left_alone(tmp_path: Path) -> None:
    trial = _trial_with_checkpoints(
        tmp_path, ["checkpoint_000003", "checkpoint_000004"], latest="checkpoint_000004"
    )
    assert bridge.recover_lost_checkpoint(trial) is None
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    assert latest.checkpoint.path == str(tmp_path / "checkpoint_000004")


def test_a_trial_with_no_checkpoint_left_starts_over(tmp_path: Path) -> None:
    trial = _trial_with_checkpoints(tmp_path, ["checkpoint_000001"], latest="checkpoint_000002")
    (tmp_path / "checkpoint_000001").rmdir()
    assert bridge.recover_lost_checkpoint(trial) == ""
    assert trial.run_metadata.checkpoint_manager.latest_checkpoint_result is None, changed(
        "_CheckpointManager._latest_checkpoint_result no longer decides where a trial resumes"
    )


# ---------------------------------------------------------------------------------------------
# A signal to the whole process group: the watch of a local Ray's own processes


class _Process:
    """A ``subprocess.Popen`` as the watch reads it: running until ``end(code)``."""

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def end(self, code: int) -> None:
        self.returncode = code


def test_contract_local_ray_processes() -> None:
    from ray._private import node, ray_constants

    for name in ("PROCESS_TYPE_GCS_SERVER", "PROCESS_TYPE_RAYLET"):
        assert isinstance(getattr(ray_constants, name, None), str), changed(
            f"ray._private.ray_constants.{name} is gone: kdtune cannot tell Ray's GCS and raylet"
        )
    import inspect

    from ray._private import services

    assert "self.all_processes" in inspect.getsource(node.Node.__init__), changed(
        "ray._private.node.Node.all_processes is gone: kdtune cannot watch a local Ray"
    )
    assert "process" in getattr(services.ProcessInfo, "_fields", ()), changed(
        "ray._private.services.ProcessInfo no longer holds its Popen as .process"
    )
    assert driver._head_processes() == [] or ray.is_initialized()  # no Ray here: none


@pytest.mark.parametrize(
    ("essential", "code", "lost"),
    [(True, 1, True), (True, -15, True), (False, -15, True), (False, 15, False)],
    ids=["gcs-exited", "gcs-killed", "helper-killed", "helper-exited"],
)
def test_ray_is_lost_when_a_process_is_killed_or_an_essential_one_ends(
    essential: bool, code: int, lost: bool
) -> None:
    interrupts = driver._Interrupts()
    process = _Process()
    interrupts.watch([(True, _Process()), (essential, process)], lambda _signum: None)
    assert not interrupts._ray_lost()
    process.end(code)
    assert interrupts._ray_lost() is lost


def test_the_watch_reports_the_signal_once_ray_is_lost() -> None:
    import signal
    import threading

    interrupts = driver._Interrupts()
    raylet = _Process()
    heard: list[int] = []
    reported = threading.Event()
    interrupts.watch([(True, raylet)], lambda signum: (heard.append(signum), reported.set()))
    interrupts.caught = signal.SIGTERM
    watcher = threading.Thread(target=interrupts._watch, daemon=True)
    watcher.start()
    time.sleep(3 * driver._WATCH_EVERY_S)
    assert not heard  # Ray alive: nothing
    raylet.end(-signal.SIGTERM)
    assert reported.wait(5)
    watcher.join(5)
    assert heard == [signal.SIGTERM] and not watcher.is_alive()


def test_the_watch_ends_with_the_search() -> None:
    import threading

    interrupts = driver._Interrupts()
    heard: list[int] = []
    interrupts.watch([(True, _Process())], heard.append)
    watcher = threading.Thread(target=interrupts._watch, daemon=True)
    watcher.start()
    interrupts.__exit__(None, None, None)
    watcher.join(5)
    assert not watcher.is_alive() and not heard


class _OnePoint(optuna.samplers.RandomSampler):
    """Proposes α = 0.5 every time: every trial after the first is a repeat."""

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return (
            0.5
            if name.endswith("alpha")
            else super().sample_independent(study, trial, name, distribution)
        )


class _Records:
    """The monitor's part a repeat uses: which earlier trials it holds complete."""

    def __init__(self, complete: set[int]) -> None:
        self.complete, self.calls = complete, []

    def repeat(self, number: int, of: int) -> bool:
        self.calls.append((number, of))
        return of in self.complete


def _repeating(
    space: Any,
    monitor: Any,
    total: int | None = 3,
    storage: optuna.storages.BaseStorage | None = None,
) -> kt.PruningOptunaSearch:
    s = kt.PruningOptunaSearch(
        kt._DefineByRun(space),
        metric="val/ap",
        mode="max",
        sampler=_OnePoint(seed=0),
        pruner=optuna.pruners.NopPruner(),
        storage=storage or optuna.storages.InMemoryStorage(),
        study_name=space.name,  # the monitor reads the study by the space's name
        total=total,
    )
    s.kd_attach(LiveRun(monitor=monitor))
    return s


def test_a_point_proposed_again_is_answered_from_its_completed_trial(space: Any) -> None:
    records = _Records({0})
    s = _repeating(space, records)
    first = suggest(s, "a")
    s.report_epoch("a", 2, 0.2, may_prune=False)
    s.report_epoch("a", 5, 0.4, may_prune=False)
    s.on_trial_complete("a", {"val/ap": 0.4, "epoch": 5})
    # the next two proposals are α 0.5 again: answered, and the budget of 3 is spent
    assert s.suggest("b") == Searcher.FINISHED
    trials = s.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.params for t in trials] == [trials[0].params] * 3
    for t in trials[1:]:
        assert t.value == 0.4 and t.intermediate_values == {2: 0.2, 5: 0.4}
        assert t.user_attrs[kt.REPEAT_ATTR] == 0
    assert records.calls == [(1, 0), (2, 0)]
    assert s.optuna_trial("b") is None and first[kt.CONFIG_KEY]["number"] == 0


def test_a_repeat_trains_where_its_earlier_trial_has_not_completed(space: Any) -> None:
    # running: the earlier trial has no value yet
    s = _repeating(space, _Records({0}))
    suggest(s, "a")
    assert suggest(s, "b")[kt.CONFIG_KEY]["number"] == 1
    # pruned: its run is known only up to where it stopped
    s = _repeating(space, _Records({0}))
    suggest(s, "a")
    s._tell("a", TrialState.PRUNED)
    assert suggest(s, "b")[kt.CONFIG_KEY]["number"] == 1
    # complete in the study, but the run's records hold no complete record of it
    records = _Records(set())
    s = _repeating(space, records)
    suggest(s, "a")
    s.report_epoch("a", 5, 0.4, may_prune=False)
    s.on_trial_complete("a", {"val/ap": 0.4, "epoch": 5})
    assert suggest(s, "b")[kt.CONFIG_KEY]["number"] == 1 and records.calls == [(1, 0)]
    assert kt.REPEAT_ATTR not in s.study.get_trials(deepcopy=False)[1].user_attrs
    # without a budget nothing is answered (asking again could go on for ever)
    s = _repeating(space, _Records({0}), total=None)
    suggest(s, "a")
    s.report_epoch("a", 5, 0.4, may_prune=False)
    s.on_trial_complete("a", {"val/ap": 0.4, "epoch": 5})
    assert suggest(s, "b")[kt.CONFIG_KEY]["number"] == 1


def test_an_answered_repeat_is_recorded_as_its_earlier_run_and_trains_nothing(
    space: Any, tmp_path: Path
) -> None:
    from kdtune.console import summary_table

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    ended: list[Any] = []
    monitor = _monitor(space, tmp_path, url, ended)
    s = _repeating(space, monitor, total=2, storage=optuna.storages.RDBStorage(url))
    a = fake_trial("a", suggest(s, "a"))
    for epoch, value in ((2, 0.2), (5, 0.4)):
        monitor.trial_result(a, {"epoch": epoch, "val/ap": value, kt.NODE_KEY: "h/1"})
        s.report_epoch("a", epoch, value, may_prune=False)
    s.on_trial_complete("a", {"val/ap": 0.4, "epoch": 5, "done": True})
    monitor.trial_end(a, errored=False)
    assert s.suggest("b") == Searcher.FINISHED  # α 0.5 again: answered, the budget of 2 spent

    result = monitor.finish()
    assert [(t.trial_id, t.number, t.state, t.repeat_of) for t in result.trials] == [
        ("a", 0, COMPLETE, None),
        ("repeat_0001", 1, COMPLETE, 0),
    ]
    again = result.trials[1]
    assert again.history == result.trials[0].history and again.config == result.trials[0].config
    assert again.node is None and again.wall_s == 0.0
    assert result.epochs_spent() == 5  # trained once
    assert [r.trial_id for r in ended] == ["a", "repeat_0001"]  # tracked like any trial
    loaded = SearchResult.load(tmp_path / SEARCH_FILE)
    assert [t.repeat_of for t in loaded.trials] == [None, 0]
    table = summary_table(loaded)
    assert "= #0" in list(table.columns[1].cells) and "answered from its run" in str(table.caption)
    assert monitor.repeat(7, 9) is False  # no complete record of trial 9: it would train
