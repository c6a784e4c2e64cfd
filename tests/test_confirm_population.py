"""``confirm.population``: a confirmation round's runs of one seed grouped into population
trials (which runs go together, how large), each member recorded as a run of its own (the
driver's fan-out, on simulated Tune events), and a real round trained as populations giving the
records and the nets of the same round trained one run a trial (slow: Ray, real training)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch
from helpers import small_config

from kdtune.results import COMPLETE, FAILED, STUDY_FILE, SearchResult, TrialRecord
from kdtune.tune import CONFIG_KEY, confirm_points, run_confirm
from kdtune.tune.confirm import population_points, population_size
from kdtune.tune.protocol import MEMBER_ERROR, MEMBERS_KEY, member_key
from kdtune.tune.records import _PopulationMonitor

SPECS = ("fixed:0", "fixed:0.75", "linear:0.9:0.5")


def _points(synth_root: Path, seeds: tuple[int, ...] = (1, 2), **over: Any) -> list[dict]:
    configs = {spec: small_config(synth_root, schedule=spec, **over).to_dict() for spec in SPECS}
    return confirm_points(configs, seeds)


def test_a_rounds_runs_of_one_seed_go_together_and_a_lone_run_stays_a_run(
    synth_root: Path,
) -> None:
    points = _points(synth_root)
    grid = population_points(points, 2)
    # per seed: the first two schedules as one population trial, the third alone
    assert [len(g.get(MEMBERS_KEY, [g])) for g in grid] == [2, 2, 1, 1]
    for g in grid:
        runs = g.get(MEMBERS_KEY, [g])
        assert len({r["seed"] for r in runs}) == 1
        if MEMBERS_KEY in g:
            assert g["stage"] == "confirm" and g["round"] == 1 and g["seed"] == runs[0]["seed"]
            assert "train" not in g  # no run of its own: nothing may train it as one
    # points run schedule by schedule, each with seeds 1, 2: grouped seed by seed, in the
    # order of each group's first run
    assert [r for g in grid for r in g.get(MEMBERS_KEY, [g])] == [
        points[i] for i in (0, 2, 1, 3, 4, 5)
    ]
    whole = population_points(points, 8)
    assert [[r["schedule"] for r in g[MEMBERS_KEY]] for g in whole] == [list(SPECS)] * 2
    assert population_points(points, 1) == points  # every run alone, as without populations
    # runs that cannot fuse (the teacher level) stay runs of their own
    teachers = _points(synth_root, level="teacher")
    assert population_points(teachers, 8) == [teachers[i] for i in (0, 2, 4, 1, 3, 5)]


def test_auto_is_one_on_a_cpu_and_the_rounds_runs_on_a_gpu(synth_root: Path) -> None:
    points = _points(synth_root)
    cpu, gpu = SimpleNamespace(cpu=1, gpu=0), SimpleNamespace(cpu=4, gpu=0.5)
    assert population_size("auto", cpu, points) == 1
    assert population_size("auto", gpu, points) == len(points)  # the trial splits what won't fit
    assert population_size("auto", gpu, _points(synth_root, device="cpu")) == 1
    assert population_size(3, cpu, points) == 3 and population_size(1, gpu, points) == 1


# --- the driver's fan-out of a population trial into member records --------------------------


def _trial(tid: str, kd: dict[str, Any], checkpoint: Path | None, error: str = "") -> Any:
    return SimpleNamespace(
        trial_id=tid,
        config={CONFIG_KEY: kd},
        checkpoint=SimpleNamespace(path=str(checkpoint)) if checkpoint else None,
        error_file=None,
        get_error=lambda: error,
    )


def _monitor(tmp_path: Path, ended: list[TrialRecord]) -> _PopulationMonitor:
    return _PopulationMonitor(
        SearchResult(name="p", space_file="p.yaml", results_dir=str(tmp_path)),
        path=tmp_path / "search.json",
        storage_url=f"sqlite:///{tmp_path / 'unused.db'}",
        budget=SimpleNamespace(num_samples=4, max_epochs=2),
        on_trial_end=ended.append,
        progress=False,
    )


def test_each_member_of_a_population_trial_is_recorded_as_a_run(
    synth_root: Path, tmp_path: Path
) -> None:
    points = _points(synth_root, seeds=(1,))
    group, alone = population_points(points, 8)[0], points[0]
    ended: list[TrialRecord] = []
    monitor = _monitor(tmp_path, ended)
    trial = _trial("g_00000", group, tmp_path / "checkpoint_000000")
    shared = {"epoch": 2, "kdtune_node": "host/abc", "time_total_s": 7.0}
    monitor.trial_result(
        trial,
        {
            **shared,
            **{member_key(k, "val/ap"): 0.1 * (k + 1) for k in (0, 1)},
            **{member_key(k, "train/loss"): 1.0 + k for k in (0, 1)},
        },
    )
    why = "TrialDivergedError: TrialDiverged: loss became nan at epoch 1, by step 0"
    monitor.trial_result(trial, {member_key(2, MEMBER_ERROR): why, "kdtune_node": "host/abc"})
    monitor.trial_end(trial, errored=False)
    one = _trial("a_00001", alone, tmp_path / "checkpoint_a")
    monitor.trial_result(one, {**shared, "val/ap": 0.5})
    monitor.trial_end(one, errored=False)

    by_id = {r.trial_id: r for r in ended}
    assert list(by_id) == [f"g_00000_member{k}" for k in range(3)] + ["a_00001"]
    for k in (0, 1):
        r = by_id[f"g_00000_member{k}"]
        assert r.state == COMPLETE and r.stage == "confirm" and r.round == 1
        assert r.config == points[k]["train"] and r.reported_schedule == SPECS[k]
        assert r.history == [{"epoch": 2.0, "val/ap": 0.1 * (k + 1), "train/loss": 1.0 + k}]
        assert r.checkpoint_dir == str(tmp_path / "checkpoint_000000" / f"member{k}")
        assert r.node == "host/abc" and r.wall_s == 7.0
    gone = by_id["g_00000_member2"]
    assert (gone.state, gone.diverged, gone.error) == (FAILED, True, why)
    assert gone.history == [] and gone.checkpoint_dir is None
    assert by_id["a_00001"].history == [{"epoch": 2.0, "val/ap": 0.5}]  # a run alone, as ever
    assert by_id["a_00001"].checkpoint_dir == str(tmp_path / "checkpoint_a")
    saved = SearchResult.load(tmp_path / "search.json")
    assert sorted(t.trial_id for t in saved.trials) == sorted(by_id)


def test_a_failed_population_trial_fails_every_member(synth_root: Path, tmp_path: Path) -> None:
    group = population_points(_points(synth_root, seeds=(1,)), 2)[0]
    ended: list[TrialRecord] = []
    monitor = _monitor(tmp_path, ended)
    trial = _trial("g_00000", group, None, error="Traceback ...\nRuntimeError: out of memory")
    monitor.trial_end(trial, errored=True)
    assert [(r.trial_id, r.state, r.error, r.diverged) for r in ended] == [
        (f"g_00000_member{k}", FAILED, "RuntimeError: out of memory", False) for k in (0, 1)
    ]


# --- a real round: populations against one run a trial (slow: Ray, real training) -------------

# the population fit's own tolerances (tests/test_population_fit.py): float32 grouped and plain
# convolutions sum in different orders, and Adam's first steps move a weight by about lr·sign(g)
WEIGHT_TOL = 0.05
AP_TOL = 0.02
LOSS_REL = 1e-3


def _round(
    results: Path, name: str, points: list[dict], population: int | str
) -> list[TrialRecord]:
    folder = results / name
    folder.mkdir(parents=True)
    optuna.create_study(
        study_name=name, storage=f"sqlite:///{folder / STUDY_FILE}", direction="maximize"
    )
    space = SimpleNamespace(
        name=name,
        metric="val/ap",
        mode="max",
        file=f"{name}.yaml",
        budget=SimpleNamespace(max_concurrent=2),
        resources=SimpleNamespace(cpu=1, gpu=0),
    )
    return run_confirm(space, points, results=results, progress=False, population=population)


def _weights(record: TrialRecord) -> dict[str, torch.Tensor]:
    assert record.checkpoint_dir is not None
    return torch.load(Path(record.checkpoint_dir) / "state.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_a_round_trained_as_populations_gives_the_runs_of_one_run_a_trial(
    synth_root: Path, tmp_path: Path
) -> None:
    from kdtune.teachers import resolve
    from kdtune.train import fit
    from kdtune.verdict import runs_of

    results = tmp_path / "results"
    # one teacher for every run, as a search's shipped one (kdtune trains one per seed)
    teacher = resolve(small_config(synth_root), results, lambda _m: None, fit=fit)
    points = _points(synth_root, teacher_checkpoint=str(teacher))
    alone = _round(results, "alone", points, 1)
    pops = _round(results, "pops", points, 2)  # per seed: a population of 2 and a run alone

    def key(r: TrialRecord) -> tuple[str, int]:
        return (r.reported_schedule, int(r.config["seed"]))

    assert (
        sorted(map(key, pops))
        == sorted(map(key, alone))
        == sorted((p["schedule"], p["seed"]) for p in points)
    )
    theirs = {key(r): r for r in alone}
    members = [r for r in pops if "_member" in r.trial_id]
    assert len(members) == 4  # two populations of 2
    for mine in pops:
        other = theirs[key(mine)]
        assert (mine.state, mine.stage, mine.round) == (COMPLETE, "confirm", 1)
        assert mine.config == other.config and not mine.error and not mine.diverged
        assert [sorted(h) for h in mine.history] == [sorted(h) for h in other.history]
        assert mine.value() == pytest.approx(other.value(), abs=AP_TOL), key(mine)
        assert mine.history[-1]["val/loss"] == pytest.approx(
            other.history[-1]["val/loss"], rel=LOSS_REL
        )
        a, b = _weights(mine), _weights(other)
        assert a.keys() == b.keys()
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert diff <= WEIGHT_TOL, (key(mine), diff)
        assert mine.checkpoint_dir is not None
        assert {"state.pt", "config.json", "metrics.json", "val_detections.json"} <= {
            p.name for p in Path(mine.checkpoint_dir).iterdir()
        }
    # the comparison can fail: another seed's net is far from this one's (at this budget every
    # run's AP is 0, so its weights and validation loss carry the comparison; measured: weights
    # within 0.01 of the lone run's, a run alone in its trial exactly the same)
    control = _weights(theirs[("fixed:0", 2)])
    first = next(r for r in members if key(r) == ("fixed:0", 1))
    assert max(float((_weights(first)[k] - control[k]).abs().max()) for k in control) > (
        20 * WEIGHT_TOL
    )
    for member in members:  # each member's own folder, as a lone run's
        work = Path(member.checkpoint_dir or "").parent.parent / "work"
        folder = work / Path(member.checkpoint_dir or "").name
        assert (folder / "model.pt").is_file() and (folder / "summary.json").is_file()
    # the paired verdict reads every member's detections, as a lone run's
    assert runs_of(pops).keys() == runs_of(alone).keys() == set(SPECS)
    # a round that ended is read back on resume, not run again (records as they were)
    again = run_confirm(
        SimpleNamespace(name="pops", metric="val/ap", mode="max"),
        points,
        results=results,
        progress=False,
        population=2,
    )
    assert [r.trial_id for r in again] == [r.trial_id for r in pops]
    # every member a trial of the study, as a lone run
    study = optuna.load_study(study_name="pops", storage=f"sqlite:///{results}/pops/{STUDY_FILE}")
    confirmed = [t for t in study.trials if t.user_attrs.get("stage") == "confirm"]
    assert sorted((t.user_attrs["schedule"], t.user_attrs["seed"]) for t in confirmed) == sorted(
        map(key, pops)
    )
    assert sorted(t.user_attrs["ray_trial_id"] for t in confirmed) == sorted(
        r.trial_id for r in pops
    )
