"""Searches run by Ray Tune with the toy trial (tests/toy_trial.py): pruning, failures,
records, and resuming after SIGKILL. Each starts Ray, so all are slow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import ray.cloudpickle
import toy_trial

from kdtune.console import format_answer, summary_table
from kdtune.diagnose import diagnose_trial
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, FAILED, PRUNED, SEARCH_FILE, SearchResult, TrialRecord
from kdtune.space import parse_space
from kdtune.tune import run_search
from kdtune.tune.protocol import STOP_REASON_ATTR

pytestmark = pytest.mark.slow

# The toy trial travels to Ray's workers by value: they cannot import tests/.
ray.cloudpickle.register_pickle_by_value(toy_trial)

GRID = """
name: grid
level: second
sampler: {type: grid, seed: 0}
pruner: {type: threshold, options: {lower: 0.3, n_warmup_steps: 2}}
budget: {num_samples: 6, max_epochs: 5, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.05, fail_alpha: [0.5], nan_alpha: [0.7]}}
search:
  grid: [{alpha: 0.3}, {alpha: 0.2}, {alpha: 1.0}, {alpha: 0.95}, {alpha: 0.5}, {alpha: 0.7}]
"""

KILL = """
name: killed
level: second
sampler: {type: tpe, seed: 3, options: {n_startup_trials: 3}}
pruner: {type: median, options: {n_startup_trials: 2, n_warmup_steps: 5}}
budget: {num_samples: 6, max_epochs: 10, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.5}}
search:
  weighting:
    fixed: {alpha: {low: 0.0, high: 1.0}}
"""

CHILD = """
import sys
sys.path.insert(0, {tests!r})
import ray.cloudpickle, toy_trial
ray.cloudpickle.register_pickle_by_value(toy_trial)
from pathlib import Path
from kdtune.space import parse_space
from kdtune.tune import run_search
from kdtune.tune.protocol import STOP_REASON_ATTR
space = parse_space(Path({space!r}).read_text(), file={space!r})
run_search(
    space, results=Path({results!r}), trial_fn=toy_trial.toy_fit, progress=False,
    resume={resume!r},
)
"""


def study_trials(result: SearchResult) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=result.study_name, storage=str(result.study_storage))
    return study.get_trials(deepcopy=False)


def alpha(record: TrialRecord) -> float:
    return toy_trial.alpha_of(record.config)


def test_search_prunes_fails_and_records_every_trial(tmp_path: Path) -> None:
    ended: list[TrialRecord] = []
    addresses: set[str] = set()

    def on_trial_end(record: TrialRecord) -> None:
        ended.append(record)
        addresses.update(node["NodeManagerAddress"] for node in ray.nodes())

    space = parse_space(GRID, file="grid.yaml")
    result = run_search(
        space,
        results=tmp_path,
        trial_fn=toy_trial.toy_fit,
        on_trial_end=on_trial_end,
        progress=False,
    )
    assert addresses == {"127.0.0.1"}  # a local Ray listens on loopback only
    by_alpha = {alpha(t): t for t in result.trials}
    assert sorted(by_alpha) == [0.2, 0.3, 0.5, 0.7, 0.95, 1.0]
    assert {a: t.state for a, t in by_alpha.items()} == {
        0.3: COMPLETE,
        0.2: COMPLETE,
        1.0: PRUNED,
        0.95: PRUNED,
        0.5: FAILED,
        0.7: FAILED,
    }
    # pruned at the first epoch after the warm-up: no epoch spent after the decision
    assert by_alpha[1.0].epochs_run == by_alpha[0.95].epochs_run == 2
    assert by_alpha[0.5].error == "ValueError: toy failure at epoch 2"
    assert not by_alpha[0.5].diverged
    assert by_alpha[0.7].diverged and "loss became nan" in (by_alpha[0.7].error or "")
    diverged = diagnose_trial(by_alpha[0.7], by_alpha[0.3].value())  # not "underfitting"
    assert diverged.label == "diverged" and "learning rate" in diverged.recommendation
    failed = diagnose_trial(by_alpha[0.5], by_alpha[0.3].value())  # errored at epoch 2
    assert failed.label == "failed" and "toy failure at epoch 2" in failed.reason
    assert by_alpha[0.3].epochs_run == 5 and result.best is by_alpha[0.3]
    assert by_alpha[0.3].history[-1]["val/ap"] == pytest.approx(toy_trial.toy_ap(0.3, 5))
    assert by_alpha[0.3].checkpoint_dir and Path(by_alpha[0.3].checkpoint_dir).is_dir()
    assert all(t.node for t in result.trials if t.history)

    # the study: PRUNED/FAIL/COMPLETE as Ray saw them, one value per epoch, epochs as steps
    frozen: dict[int | None, optuna.trial.FrozenTrial] = {t.number: t for t in study_trials(result)}
    assert len(frozen) == 6
    expected = {COMPLETE: "COMPLETE", PRUNED: "PRUNED", FAILED: "FAIL"}
    for record in result.trials:
        ot = frozen[record.number]
        assert ot.state.name == expected[record.state], record
        assert ot.params == record.params
        epochs = [int(h["epoch"]) for h in record.history]
        assert sorted(ot.intermediate_values) == epochs == list(range(1, len(epochs) + 1))
    assert frozen[by_alpha[0.3].number].value == pytest.approx(toy_trial.toy_ap(0.3, 5))

    # the driver heard of every end once, with its final state; search.json holds the same
    assert sorted(r.trial_id for r in ended) == sorted(t.trial_id for t in result.trials)
    assert {r.trial_id: r.state for r in ended} == {t.trial_id: t.state for t in result.trials}
    saved = SearchResult.load(tmp_path / "grid" / SEARCH_FILE)
    assert (
        saved.counts()
        == result.counts()
        == {
            COMPLETE: 2,
            PRUNED: 2,
            FAILED: 2,
            "running": 0,
        }
    )
    assert (tmp_path / "grid" / "space.yaml").read_text() == GRID
    best = format_answer(result)  # no confirmation: the single-seed best, marked unconfirmed
    assert by_alpha[0.3].trial_id in best and "α 0.3 / β 0.7 [fixed:0.7]" in best
    assert "single-seed best (unconfirmed)" in best
    assert summary_table(result).row_count == 6

    # a second start of the same search is refused; resuming it needs --resume
    with pytest.raises(KdtuneError, match="already exists; pass --resume"):
        run_search(space, results=tmp_path, trial_fn=toy_trial.toy_fit, progress=False)


def _running_mid_trial(path: Path) -> tuple[dict, set[str]]:
    """search.json, and the trials running between epochs 2 and 5 (checkpointed, unfinished)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        mid = {
            t["trial_id"]
            for t in data["trials"]
            if t["state"] == "running" and 2 <= len(t["history"]) <= 5
        }
        return data, mid
    return {"trials": []}, set()


def _wait_for_kill_point(path: Path, child: subprocess.Popen, timeout: float = 300.0) -> dict:
    """Until a trial has ended and another, mid-way, has had its checkpoint in a snapshot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, "the search ended before it could be killed"
        data, mid = _running_mid_trial(path)
        if mid and any(t["state"] in (COMPLETE, PRUNED) for t in data["trials"]):
            time.sleep(1.5)  # snapshots come every second (TUNE_GLOBAL_CHECKPOINT_S=1)
            data, _ = _running_mid_trial(path)
            running = {t["trial_id"] for t in data["trials"] if t["state"] == "running"}
            if mid & running:
                return data
        time.sleep(0.2)
    raise AssertionError("no kill point (a trial ended, another mid-way) came in time")


def _kill_session(child: subprocess.Popen) -> None:
    """SIGKILL the search and every process of its session (Ray's workers set their own
    process groups, so killing the group alone can leave them behind)."""
    sid = child.pid
    os.killpg(sid, signal.SIGKILL)
    child.wait()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: the session id
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def _lose_snapshot_checkpoints(ray_folder: Path, trial_ids: set[str]) -> int:
    """Renumber every checkpoint of these trials past the ones Tune's snapshot names, as if
    the snapshot were older than the checkpoints Tune had deleted since; returns how many."""
    moved = 0
    for trial_id in trial_ids:
        for folder in ray_folder.glob(f"trial_*_{trial_id}"):
            for ckpt in sorted(folder.glob("checkpoint_*"), reverse=True):
                index = int(ckpt.name.removeprefix("checkpoint_"))
                ckpt.rename(folder / f"checkpoint_{index + 50:06d}")
                moved += 1
    return moved


@pytest.mark.parametrize("lost_checkpoint", [False, True], ids=["kept", "lost"])
def test_sigkill_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, lost_checkpoint: bool
) -> None:
    space_file = tmp_path / "killed.yaml"
    space_file.write_text(KILL)
    results = tmp_path / "results"
    script = CHILD.format(
        tests=str(Path(__file__).parent), space=str(space_file), results=str(results), resume=False
    )
    # frequent experiment snapshots, so that the running trial's checkpoint is in the last one
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="1")
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        before = _wait_for_kill_point(results / "killed" / SEARCH_FILE, child)
    finally:
        _kill_session(child)
    done_before = {t["trial_id"]: t for t in before["trials"] if t["state"] == COMPLETE}
    numbers_before = {t["number"] for t in before["trials"]}
    if lost_checkpoint:  # the trials mid-way resume from the oldest newer checkpoint
        running = {t["trial_id"] for t in before["trials"] if t["state"] == "running"}
        assert _lose_snapshot_checkpoints(results / "killed" / "ray", running) > 0

    space = parse_space(KILL, file=str(space_file))
    result = run_search(
        space, results=results, resume=True, trial_fn=toy_trial.toy_fit, progress=False
    )

    records = {t.trial_id: t for t in result.trials}
    for trial_id, old in done_before.items():  # nothing completed was lost or redone
        assert records[trial_id].state == COMPLETE
        assert records[trial_id].number == old["number"]
        assert len(records[trial_id].history) == len(old["history"])
    frozen = study_trials(result)
    numbers = [t.number for t in frozen]
    assert numbers == list(range(len(frozen)))  # one study, numbers continue
    assert numbers_before <= set(numbers)
    assert not [t for t in frozen if t.state.name == "RUNNING"]
    ended = [t for t in frozen if t.state.name in ("COMPLETE", "PRUNED")]
    states = [(t.number, t.state.name, t.user_attrs.get(STOP_REASON_ATTR)) for t in frozen]
    assert len(ended) == space.budget.num_samples, states
    ran = [t for t in result.trials if t.state in (COMPLETE, PRUNED)]
    assert len(ran) == space.budget.num_samples
    assert len({t.number for t in ran}) == len(ran)
    # every trial's parameters came from the stored study (not a fallback searcher)
    by_number: dict[int | None, optuna.trial.FrozenTrial] = {t.number: t for t in frozen}
    for record in ran:
        assert record.params == by_number[record.number].params
        epochs = [h["epoch"] for h in record.history]
        assert epochs == sorted(set(epochs))
    # an interrupted trial went on from its last checkpoint rather than from epoch 1
    starts = {t.number: [h.get("toy/start_epoch", 1.0) for h in t.history] for t in ran}
    assert any(s > 1 for row in starts.values() for s in row), starts


KILLED_GRID = """
name: kgrid
level: second
sampler: {type: grid, seed: 0}
pruner: {type: none}
budget: {max_epochs: 4, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.4}}
search:
  grid: [{alpha: 0.1}, {alpha: 0.3}, {alpha: 0.6}, {alpha: 0.9}]
"""
GRID_POINTS = ["fixed:0.1", "fixed:0.4", "fixed:0.7", "fixed:0.9"]


def _study_count(path: Path) -> int:
    """How many trials the study in ``path`` holds (0 while it does not exist yet)."""
    if not path.is_file():
        return 0
    with contextlib.suppress(Exception):
        import sqlite3

        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
    return 0


@pytest.mark.parametrize("started", [3, 4], ids=["three-of-four-started", "last-point-asked"])
def test_grid_killed_then_resumed_runs_every_point_once(tmp_path: Path, started: int) -> None:
    """SIGKILL once ``started`` of the 4 grid points are in the study: the last one may be an
    orphan (asked after Tune's last snapshot). The resume ends in time (it once sat idle),
    every grid point completes exactly once and nothing completed runs again."""
    space_file = tmp_path / "kgrid.yaml"
    space_file.write_text(KILLED_GRID)
    results = tmp_path / "results"
    tests = str(Path(__file__).parent)
    args = dict(tests=tests, space=str(space_file), results=str(results))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(**args, resume=False)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    study_file = results / "kgrid" / "optuna.db"
    try:
        deadline = time.monotonic() + 300
        while _study_count(study_file) < started:
            assert child.poll() is None and time.monotonic() < deadline, "no kill point"
            time.sleep(0.05)
    finally:
        _kill_session(child)
    before = json.loads((results / "kgrid" / SEARCH_FILE).read_text())
    done_before = {t["trial_id"]: t for t in before["trials"] if t["state"] == COMPLETE}

    resumed = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(**args, resume=True)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = resumed.communicate(timeout=240)  # the resume that sat idle fails here
    finally:
        if resumed.poll() is None:
            _kill_session(resumed)
    assert resumed.returncode == 0, err[-2000:]
    result = SearchResult.load(results / "kgrid" / SEARCH_FILE)
    complete = [t for t in result.trials if t.state == COMPLETE]
    assert sorted(t.config["schedule"] for t in complete) == GRID_POINTS
    assert len(result.trials) == len(GRID_POINTS)  # nothing ran twice, nothing else ran
    for record in complete:
        assert [h["epoch"] for h in record.history] == [1.0, 2.0, 3.0, 4.0]
    for trial_id, old in done_before.items():  # a trial completed before the kill: untouched
        record = next(t for t in result.trials if t.trial_id == trial_id)
        assert record.history == old["history"]
    frozen = study_trials(result)
    assert sorted(t.state.name for t in frozen) == ["COMPLETE"] * len(GRID_POINTS)
    assert sorted(t.user_attrs["schedule"] for t in frozen) == GRID_POINTS


WARM = """
name: warm
level: second
warm_start: true
sampler: {type: tpe, seed: 0}
pruner: {type: none}
budget: {num_samples: 7, max_epochs: 2, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.01}}
search:
  weighting:
    fixed: {alpha: {low: 0.0, high: 1.0, step: 0.05}}
    adaptive: {shapes: [linear, cosine], beta_start: {low: 0.6, high: 1.0}, beta_end: 0.5}
"""


def test_warm_start_runs_the_named_scenarios_first(tmp_path: Path) -> None:
    from kdtune.config import NAMED_SCENARIOS

    space = parse_space(WARM, file="warm.yaml")
    result = run_search(space, results=tmp_path, trial_fn=toy_trial.toy_fit, progress=False)
    by_number = sorted(result.trials, key=lambda t: t.number if t.number is not None else 99)
    schedules = [t.config["schedule"] for t in by_number]
    assert len(schedules) == 7
    assert schedules[: len(NAMED_SCENARIOS)] == list(NAMED_SCENARIOS)


def test_optuna_trials_carry_their_configuration(tmp_path: Path) -> None:
    """optuna-dashboard users see each trial's level, seed and schedule beside its params."""
    space = parse_space(WARM.replace("num_samples: 7", "num_samples: 3"), file="w.yaml")
    result = run_search(space, results=tmp_path, trial_fn=toy_trial.toy_fit, progress=False)
    by_number = {t.number: t for t in study_trials(result)}
    for record in result.trials:
        attrs = by_number[record.number].user_attrs
        assert attrs["level"] == "second" and attrs["seed"] == record.config["seed"]
        assert attrs["schedule"] == record.config["schedule"]
        if attrs["shape"] == "fixed":
            assert attrs["alpha"] == pytest.approx(toy_trial.alpha_of(record.config))
        else:
            assert {"beta_start", "beta_end", "warmup"} <= set(attrs)


def test_ray_tune_reads_a_kdtune_search_with_its_own_tools(tmp_path: Path) -> None:
    """Ray users' ExperimentAnalysis and Tuner.restore(...).get_results() see every trial."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from kdtune.results import RAY_FOLDER
    from kdtune.tune import ray_trainable

    space = parse_space(WARM.replace("num_samples: 7", "num_samples: 3"), file="w.yaml")
    result = run_search(space, results=tmp_path, trial_fn=toy_trial.toy_fit, progress=False)
    folder = tmp_path / "warm" / RAY_FOLDER
    frame = ExperimentAnalysis(str(folder)).dataframe()
    assert len(frame) == len(result.trials) == 3
    finals = sorted(t.value() or 0.0 for t in result.trials)
    assert sorted(frame["val/ap"]) == pytest.approx(finals)
    trainable = ray_trainable(tmp_path, trial_fn=toy_trial.toy_fit)
    results = tune.Tuner.restore(str(folder), trainable=trainable).get_results()
    assert len(results) == 3 and all("val/ap" in r.metrics for r in results)


REPEATS = """
name: repeats
level: second
sampler: {type: random, seed: 1}
pruner: {type: none}
budget: {num_samples: 7, max_epochs: 3, eval_every: 1, max_concurrent: 1}
resources: {cpu: 1}
train: {extra: {sleep: 0.01}}
search:
  weighting:
    fixed: {alpha: {low: 0.0, high: 1.0, step: 0.5}}
"""


def test_a_point_proposed_again_is_answered_from_its_run_not_trained_again(
    tmp_path: Path,
) -> None:
    """Three points, seven trials: each point trains once; the rest are answered."""
    space = parse_space(REPEATS, file="repeats.yaml")
    result = run_search(space, results=tmp_path, trial_fn=toy_trial.toy_fit, progress=False)
    assert len(result.trials) == 7 and {t.state for t in result.trials} == {COMPLETE}
    trained = [t for t in result.trials if t.repeat_of is None]
    answered = [t for t in result.trials if t.repeat_of is not None]
    assert answered, "a random sampler over 3 points proposes one again within 7 trials"
    schedules = [t.config["schedule"] for t in trained]
    assert len(set(schedules)) == len(schedules)  # no point trained twice
    by_number = {t.number: t for t in trained}
    for t in answered:
        earlier = by_number[t.repeat_of]
        assert t.config == earlier.config and t.value() == earlier.value()
        assert t.checkpoint_dir == earlier.checkpoint_dir
    assert result.epochs_spent() == 3 * len(trained)
    frozen = {t.number: t for t in study_trials(result)}
    assert len(frozen) == 7 and all(f.state.name == "COMPLETE" for f in frozen.values())
    assert {n for n, f in frozen.items() if STOP_REASON_ATTR in f.user_attrs} == set()
    assert {n for n, f in frozen.items() if "kdtune_repeat_of" in f.user_attrs} == {
        t.number for t in answered
    }
