"""The confirmation stage: its plan (which configurations, which seeds), the race in rounds
(who leaves, when it stops, failures counted), the ``confirm:`` keys, the withheld rule and
what export takes from it, on constructed records and simulated matchings; a racing search
killed mid-round and resumed (slow, Ray)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.errors import KdtuneError
from kdtune.export import recommended_trial
from kdtune.pooled import Run, features
from kdtune.results import SEARCH_FILE, SearchResult, TrialRecord
from kdtune.search.confirmation import Race, _pooled_order, _pooled_prior
from kdtune.space import parse_space
from kdtune.space.parse import Confirm
from kdtune.tune import confirm_candidates, confirm_plan, confirm_points
from kdtune.verdict import Failure, label, render


def _trial(tid: str, schedule: str, ap: float | None, state: str = "complete") -> TrialRecord:
    history = [{"epoch": 1.0, "val/ap": 0.01}] + ([{"epoch": 4.0, "val/ap": ap}] if ap else [])
    config = {"level": "second", "schedule": schedule, "seed": 5, "epochs": 4, "eval_every": 1}
    return TrialRecord(tid, state, config, history=history)


def _result() -> SearchResult:
    return SearchResult(
        name="s",
        space_file="s.yaml",
        results_dir="/tmp/s",
        trials=[
            _trial("a", "fixed:0.9", 0.30),
            _trial("b", "fixed:0.9", 0.35),  # the same schedule again: counted once
            _trial("c", "cosine:0.8:0.4", 0.32),
            _trial("d", "fixed:0.5", 0.50, state="pruned"),  # pruned: never confirmed
            _trial("e", "fixed:0.75", 0.20),
        ],
    )


def test_the_plan_takes_the_best_distinct_schedules_and_the_default_with_new_seeds() -> None:
    points = confirm_plan(_result(), top_k=2, seeds=3, default_schedule="fixed:0.75")
    assert [p["schedule"] for p in points[::3]] == ["fixed:0.9", "cosine:0.8:0.4", "fixed:0.75"]
    assert [p["seed"] for p in points[:3]] == [6, 7, 8]  # never the search's seed 5
    for p in points:
        assert p["stage"] == "confirm" and p["number"] is None and p["params"] == {}
        assert p["train"]["seed"] == p["seed"] and p["train"]["schedule"] == p["schedule"]
        # judged by its final AP: evaluated (and checkpointed) at its end only, by default
        assert (p["train"]["eval_every"], p["train"]["epochs"]) == (4, 4)


def test_the_default_comes_once_beside_the_best_others() -> None:
    points = confirm_plan(_result(), top_k=1, seeds=1, default_schedule="fixed:0.9")
    assert [p["schedule"] for p in points] == ["cosine:0.8:0.4", "fixed:0.9"]
    assert points[1]["train"]["schedule"] == "fixed:0.9"  # its own search trial's config
    points = confirm_plan(_result(), top_k=5, seeds=1, default_schedule="fixed:0.9")
    assert [p["schedule"] for p in points] == ["cosine:0.8:0.4", "fixed:0.75", "fixed:0.9"]


def test_no_complete_trial_gives_no_plan() -> None:
    result = _result()
    result.trials = [t for t in result.trials if t.state != "complete"]
    assert confirm_plan(result, top_k=2, seeds=3, default_schedule="fixed:0.75") == []


def test_export_takes_the_confirmed_recommendation_not_the_search_best() -> None:
    result = _result()
    assert recommended_trial(result).trial_id == "b"  # unconfirmed: the search's best
    result.verdict = {"recommended": "cosine:0.8:0.4", "ranking": [], "comparisons": []}
    assert recommended_trial(result).trial_id == "c"
    # a recommendation with no search trial of its own: a confirmation run, at the search seed
    run = _trial("r1", "fixed:0.6", 0.4)
    run.config.update(seed=7, eval_every=4)
    result.confirmations = [run]
    result.verdict["recommended"] = "fixed:0.6"
    chosen = recommended_trial(result)
    assert chosen.config["schedule"] == "fixed:0.6" and chosen.config["seed"] == 5
    assert chosen.config["eval_every"] == 1 and run.config["seed"] == 7  # the run is untouched
    result.confirmations = []
    with pytest.raises(KdtuneError, match="has no run to export"):
        recommended_trial(result)


def test_a_teacher_no_better_than_its_students_withholds_the_recommendation() -> None:
    result = _result()
    result.teacher_val_ap = 0.6
    assert result.withheld is None and result.recommended == "fixed:0.9"
    result.teacher_val_ap = 0.35  # the best student reached 0.35
    assert result.withheld is not None and "no better than the best student" in result.withheld
    assert result.recommended is None
    with pytest.raises(KdtuneError, match=r"teacher .* no better than the best student"):
        recommended_trial(result)
    # confirmed: judged on the recommendation's mean, not on the search's lucky best
    result.verdict = {
        "recommended": "fixed:0.9",
        "ranking": [{"schedule": "fixed:0.9", "mean": 0.34, "se": 0.01, "values": {}}],
        "comparisons": [],
    }
    assert result.withheld is None and result.recommended == "fixed:0.9"


# --- the race: rounds, who leaves, when it stops (simulated matchings, no Ray) ---------------


def _simulator() -> Any:
    """benchmarks/verdict_calibration.py: ImageMatches of simulated configurations."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verdict_calibration", module)
    spec.loader.exec_module(module)
    return module


SIM = _simulator()
DEFAULT, GT = "fixed:0.75", "fixed:0"


def _pool(configs: dict[str, float], seeds: int, *, images: int = 120, seed: int = 0) -> dict:
    """Every configuration's matching for seeds 0 … seeds − 1 (what its runs would score)."""
    sc = SIM.Scenario("race", seed_sd=0.05, image_sd=0.05, run_sd=0.2, images=images)
    return SIM.simulate(sc, configs, seeds, np.random.default_rng(seed))


def _race(specs: list[str], **settings: Any) -> Race:
    confirm = Confirm(**{"top_k": len(specs) - 2, "seeds": 2, **settings})
    candidates = {s: {"schedule": s, "epochs": 4, "lr": 0.01} for s in specs}
    return Race.of(confirm, candidates, default=DEFAULT, ground_truth=GT, first_seed=0, samples=200)


def _drive(race: Race, pool: dict, fail: dict[tuple[str, int], str] | None = None) -> list[dict]:
    """Run the race on ``pool``'s matchings (``fail``: runs that fail instead); each round's
    plan as it was asked for."""
    ran: dict[str, dict[int, Any]] = {}
    plans = []
    while (plan := race.next_plan()) is not None:
        plans.append(plan)
        for p in plan.runs:
            key = (p["schedule"], p["seed"])
            failure = (fail or {}).get(key)
            ran.setdefault(key[0], {})[key[1]] = (
                Failure(failure) if failure else pool[key[0]][key[1]]
            )
            assert p["round"] == plan.round and p["train"]["seed"] == p["seed"]
        race.judge(plan, ran)
    return [{"round": p.round, "specs": p.specs, "runs": len(p.runs)} for p in plans]


def test_a_beaten_candidate_leaves_and_the_references_stay_in() -> None:
    pool = _pool({"fixed:0.5": 1.2, "fixed:0.9": -1.2, DEFAULT: 0.0, GT: 0.0}, 6)
    race = _race(["fixed:0.5", "fixed:0.9", DEFAULT, GT], seeds=3, max_seeds=5)
    plans = _drive(race, pool)
    first = race.rounds[0]
    assert first["round"] == 1 and first["seeds"] == [0, 1, 2] and len(first["runs"]) == 12
    assert first["leader"] == "fixed:0.5"
    assert [x["schedule"] for x in first["left"]] == ["fixed:0.9"]
    assert first["left"][0]["why"].startswith("beaten: α 0.5 / β 0.5 beats α 0.1 / β 0.9 by")
    assert first["still_in"] == ["fixed:0.5", DEFAULT, GT]  # the references stay in
    assert first["stop"] and first["why"].startswith("one candidate remains")
    assert plans == [{"round": 1, "specs": ["fixed:0.5", "fixed:0.9", DEFAULT, GT], "runs": 12}]
    block = race.final_block()
    assert block is not None and block["recommended"] == "fixed:0.5"
    assert block["left"] == first["left"] and block["racing"]["rounds"] == 1
    assert block["family"]["looks"] == 3  # 3 seeds, then 1 a round up to 5: three looks
    # the last round's block: the one that left in it is still compared there
    assert {r["schedule"] for r in block["ranking"]} == {"fixed:0.5", "fixed:0.9", DEFAULT, GT}


def test_undecided_candidates_get_more_seeds_until_max_seeds() -> None:
    pool = _pool({"fixed:0.5": 0.0, "fixed:0.6": 0.0, DEFAULT: 0.0, GT: 0.0}, 8, images=40)
    race = _race(["fixed:0.5", "fixed:0.6", DEFAULT, GT], max_seeds=5, round_seeds=2, margin=1e-4)
    plans = _drive(race, pool)
    # seeds 0-1, then 2-3, then 4 (capped at max_seeds); a margin no run can show keeps it open
    assert [r["seeds"] for r in race.rounds] == [[0, 1], [2, 3], [4]]
    assert [p["round"] for p in plans] == [1, 2, 3]
    assert race.rounds[-1]["why"] == "max_seeds reached (5 seeds)" and race.rounds[-1]["stop"]
    assert all(not r["stop"] for r in race.rounds[:-1])
    block = race.final_block()
    assert block is not None and block["seeds"] == [0, 1, 2, 3, 4]  # ranking and tests: the same
    assert block["family"]["looks"] == race.max_rounds == 3
    assert block["racing"] == {
        "rounds": 3,
        "seeds": 5,
        "max_seeds": 5,
        "max_rounds": 3,
        "stopped": "max_seeds reached (5 seeds)",
    }


def test_equivalent_candidates_stop_the_race() -> None:
    pool = _pool({"fixed:0.5": 0.3, "fixed:0.6": 0.3, DEFAULT: 0.0, GT: 0.0}, 6, images=300)
    race = _race(["fixed:0.5", "fixed:0.6", DEFAULT, GT], seeds=5, max_seeds=6, margin=0.05)
    _drive(race, pool)
    last = race.rounds[-1]
    assert last["stop"] and last["why"].startswith("the rest are equivalent to the leader")
    assert last["leader"] in ("fixed:0.5", "fixed:0.6") and last["undecided"] == []


def test_a_failed_run_shows_in_the_block_and_keeps_its_configuration_from_the_recommendation():
    pool = _pool({"fixed:0.5": 1.5, "fixed:0.9": 0.0, DEFAULT: 0.0, GT: 0.0}, 4)
    race = _race(["fixed:0.5", "fixed:0.9", DEFAULT, GT], seeds=3, max_seeds=3)
    _drive(race, pool, fail={("fixed:0.5", 1): "diverged"})
    first = race.rounds[0]
    assert {"schedule": "fixed:0.5", "seed": 1, "state": "failed (diverged)"} in first["runs"]
    gone = next(x for x in first["left"] if x["schedule"] == "fixed:0.5")
    assert gone["why"] == "failed 1 run: seed 1 (diverged)" and gone["round"] == 1
    block = race.final_block()
    assert block is not None and block["recommended"] != "fixed:0.5"
    assert block["failures"] == [{"schedule": "fixed:0.5", "seed": 1, "reason": "diverged"}]
    assert block["passed_over"] == ["fixed:0.5"]  # it ranks higher, and is not recommended
    assert block["seeds"] == [0, 1, 2]  # the stable configurations' seeds
    text = render(block)
    assert "not recommended: α 0.5 / β 0.5 [fixed:0.5] ranks higher but failed 1 run" in text
    assert "failed: α 0.5 / β 0.5 [fixed:0.5] seed 1 (diverged); counted against it" in text
    result = SearchResult(name="s", space_file="s.yaml", results_dir="/tmp/s", verdict=block)
    assert result.recommended == block["recommended"] != "fixed:0.5"


def test_a_race_with_nothing_to_judge_stops_with_no_verdict() -> None:
    race = _race(["fixed:0.5", DEFAULT, GT])
    plan = race.next_plan()
    assert plan is not None
    record = race.judge(plan, {})
    assert record["stop"] and record["why"].startswith("no verdict: ")
    assert race.next_plan() is None and race.final_block() is None


# --- the pooled model: candidates and the pick among leaders the race cannot tell apart -----


def _prior(best: str, spread: float = 0.2) -> list[Run]:
    """Search-trial runs (seed 99) whose AP peaks at ``best``'s β̄ by ``spread`` a unit of β̄."""
    peak = features(best)[0]
    specs = ("fixed:0", "fixed:0.3", "fixed:0.5", "fixed:0.6", "fixed:0.75", "fixed:0.9", "fixed:1")
    return [
        Run(s, 99, 0.5 - spread * (features(s)[0] - peak) ** 2)
        for s in dict.fromkeys((*specs, best))
    ]


@pytest.mark.parametrize("favoured", ["fixed:0.5", "fixed:0.9"])
def test_the_pooled_model_picks_among_leaders_the_race_cannot_tell_apart(favoured: str) -> None:
    pool = _pool({"fixed:0.5": 0.0, "fixed:0.9": 0.0, DEFAULT: 0.0, GT: 0.0}, 3, images=40)
    confirm = Confirm(top_k=2, seeds=3, max_seeds=3, margin=1e-4)
    candidates = {s: {"schedule": s, "epochs": 4} for s in ("fixed:0.5", "fixed:0.9", DEFAULT, GT)}
    race = Race.of(confirm, candidates, default=DEFAULT, ground_truth=GT, first_seed=0,
                   samples=200, prior=_prior(favoured, spread=5.0))  # fmt: skip
    _drive(race, pool)
    block = race.final_block()
    assert block is not None and block["race"]["undecided"]  # 3 seeds of equals: undecided
    picked = block["picked"]
    assert block["recommended"] == picked["recommended"] == favoured
    assert picked["leader_by_mean"] == picked["among"][0]
    assert set(picked["among"]) == {c["against"] for c in block["comparisons"]} | {favoured}
    gains = picked["gain"]
    assert gains[favoured]["mean"] == max(g["mean"] for g in gains.values())
    assert picked["runs"] == 7 + 12 and picked["seeds"] == 4
    assert block["ranking"][0]["schedule"] == favoured  # the recommendation first
    assert all(c["against"] != favoured for c in block["comparisons"])
    text = render(block)
    assert text.splitlines()[0].startswith(f"recommendation: {label(favoured)}")
    assert "picked by the pooled model of all 19 full-budget runs (4 seeds; AP ~ β̄" in text


def test_a_configuration_the_leader_beats_is_never_picked() -> None:
    pool = _pool({"fixed:0.5": 1.2, "fixed:0.9": -1.2, DEFAULT: 0.0, GT: 0.0}, 6)
    confirm = Confirm(top_k=2, seeds=3, max_seeds=5)
    candidates = {s: {"schedule": s, "epochs": 4} for s in ("fixed:0.5", "fixed:0.9", DEFAULT, GT)}
    race = Race.of(confirm, candidates, default=DEFAULT, ground_truth=GT, first_seed=0,
                   samples=200, prior=_prior("fixed:0.9", spread=5.0))  # fmt: skip
    _drive(race, pool)
    block = race.final_block()
    assert block is not None and block["recommended"] == "fixed:0.5"
    assert "picked" not in block  # the leader beats every other: nothing left to pick among


def test_without_a_prior_the_race_keeps_its_mean_leader() -> None:
    pool = _pool({"fixed:0.5": 0.0, "fixed:0.6": 0.0, DEFAULT: 0.0, GT: 0.0}, 3, images=40)
    race = _race(["fixed:0.5", "fixed:0.6", DEFAULT, GT], seeds=3, max_seeds=3, margin=1e-4)
    _drive(race, pool)
    block = race.final_block()
    assert block is not None and "picked" not in block
    assert block["recommended"] == block["ranking"][0]["schedule"]
    assert block["ranking"][0]["mean"] == max(r["mean"] for r in block["ranking"])


def test_candidates_follow_the_pooled_order_where_one_is_given() -> None:
    result = _result()
    by_value = confirm_candidates(result, top_k=1, references=(DEFAULT, GT))
    assert next(iter(by_value)) == "fixed:0.9"  # the best single-seed trial
    ordered = confirm_candidates(
        result, top_k=1, references=(DEFAULT, GT), order=["cosine:0.8:0.4", "fixed:0.9"]
    )
    assert list(ordered) == ["cosine:0.8:0.4", DEFAULT, GT]
    # the references still train at the search's best trial's settings
    assert ordered[DEFAULT] == {**result.trials[1].config, "schedule": DEFAULT}


def test_the_pooled_prior_is_the_finished_trials_and_none_where_they_differ_beyond_weighting():
    result = _result()
    prior = _pooled_prior(result)
    assert prior is not None
    assert sorted((r.schedule, r.ap) for r in prior) == [
        ("cosine:0.8:0.4", 0.32),
        ("fixed:0.75", 0.20),
        ("fixed:0.9", 0.30),
        ("fixed:0.9", 0.35),
    ]
    assert {r.seed for r in prior} == {5}
    assert _pooled_order(prior, (DEFAULT, GT)) == (None, None)  # 4 trials: too few for it
    result.trials[0].config["lr"] = 0.5
    assert _pooled_prior(result) is None


def test_confirm_pick_is_read_and_a_bad_one_refused() -> None:
    assert Confirm().pick == "pooled"
    c = parse_space(_with_confirm("{pick: mean}"), file="q.yaml").confirm
    assert c is not None and c.pick == "mean"
    with pytest.raises(KdtuneError, match=r"confirm\.pick: must be one of: pooled, mean"):
        parse_space(_with_confirm("{pick: best}"), file="q.yaml")


# --- the candidates: references at the best trial's other settings -------------------------


def test_the_references_are_confirmed_at_the_best_trials_other_settings() -> None:
    result = _result()
    for t in result.trials:
        t.config["lr"] = 0.01
    result.trials[1].config["lr"] = 0.003  # the search's best, fixed:0.9, at another lr
    configs = confirm_candidates(result, top_k=2, references=(DEFAULT, GT))
    assert list(configs) == ["fixed:0.9", "cosine:0.8:0.4", DEFAULT, GT]
    assert configs[DEFAULT] == {**result.trials[1].config, "schedule": DEFAULT}
    assert configs[GT]["lr"] == configs[DEFAULT]["lr"] == 0.003  # not the default's own trial's
    assert configs["cosine:0.8:0.4"]["lr"] == 0.01  # a candidate keeps its own settings
    points = confirm_points(configs, [6, 7], round=2)
    assert [(p["schedule"], p["seed"], p["round"]) for p in points[:2]] == [
        ("fixed:0.9", 6, 2),
        ("fixed:0.9", 7, 2),
    ]


@given(epochs=st.integers(1, 200), every=st.one_of(st.none(), st.integers(1, 400)))
@settings(max_examples=40, deadline=None)
def test_a_confirmation_run_is_evaluated_at_its_end_unless_told_otherwise(
    epochs: int, every: int | None
) -> None:
    configs = {"fixed:0.9": {"schedule": "fixed:0.9", "epochs": epochs, "eval_every": 1}}
    (point,) = confirm_points(configs, [3], eval_every=every)
    want = epochs if every is None else min(every, epochs)
    assert point["train"]["eval_every"] == want
    assert point["train"]["epochs"] == epochs and point["train"]["seed"] == 3


def test_confirm_eval_every_is_read_and_reaches_the_race() -> None:
    c = parse_space(_with_confirm("{seeds: 2, eval_every: 4}"), file="q.yaml").confirm
    assert c is not None and c.eval_every == 4
    assert parse_space(QUICK, file="q.yaml").confirm.eval_every is None  # type: ignore[union-attr]
    race = Race.of(c, {"fixed:0.9": {"epochs": 12}}, default=DEFAULT, ground_truth=GT,
                   first_seed=1)  # fmt: skip
    plan = race.next_plan()
    assert plan is not None and {p["train"]["eval_every"] for p in plan.runs} == {4}


# --- the withheld rule: the teacher against the student trained without it ------------------


def test_the_withheld_rule_compares_the_teacher_with_the_ground_truth_students_mean() -> None:
    result = _result()
    ranking = [
        {"schedule": "fixed:0.9", "mean": 0.62, "se": 0.01, "values": {}},
        {"schedule": GT, "mean": 0.55, "se": 0.01, "values": {}},
    ]
    result.verdict = {"recommended": "fixed:0.9", "ground_truth": GT, "ranking": ranking}
    # distillation lifted a student past its teacher: that is no reason to withhold
    result.teacher_val_ap = 0.60
    assert result.withheld is None and result.recommended == "fixed:0.9"
    result.teacher_val_ap = 0.55  # no better than the student trained on ground truth alone
    assert result.withheld is not None and "ground truth alone (α 1 / β 0" in result.withheld
    assert "0.550" in result.withheld and result.recommended is None


# --- the confirm: keys ----------------------------------------------------------------------

QUICK = (Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml").read_text()
QUICK_LINE = "confirm: {top_k: 1, seeds: 2, round_seeds: 1, max_seeds: 3, margin: 0.005}"


def _with_confirm(value: str) -> str:
    assert QUICK_LINE in QUICK
    return QUICK.replace(QUICK_LINE, f"confirm: {value}")


@given(
    seeds=st.integers(1, 100),
    extra=st.integers(0, 20),
    round_seeds=st.integers(1, 100),
    margin=st.floats(1e-4, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_valid_confirm_keys_are_read(seeds: int, extra: int, round_seeds: int, margin: float):
    max_seeds = min(100, seeds + extra)
    text = f"{margin:.8f}"  # as a person writes it (YAML reads 1e-06 as a string)
    value = (
        f"{{seeds: {seeds}, max_seeds: {max_seeds}, round_seeds: {round_seeds}, margin: {text}}}"
    )
    c = parse_space(_with_confirm(value), file="q.yaml").confirm
    assert c is not None
    assert (c.seeds, c.max_seeds, c.round_seeds) == (seeds, max_seeds, round_seeds)
    assert c.margin == float(text)
    assert c.max_rounds == 1 + math.ceil((max_seeds - seeds) / round_seeds)


@given(
    margin=st.one_of(
        st.floats(-1e6, 0.0), st.floats(1.001, 1e6), st.integers(-1000, 0), st.integers(2, 1000)
    )
)
@settings(max_examples=30, deadline=None)
def test_a_margin_not_in_0_1_is_refused(margin: float) -> None:
    with pytest.raises(KdtuneError, match=r"confirm\.margin: must be in \(0, 1\]") as err:
        parse_space(_with_confirm(f"{{seeds: 2, margin: {margin:.4f}}}"), file="q.yaml")
    assert "\n" not in str(err.value)


@given(seeds=st.integers(2, 100), below=st.integers(1, 50))
@settings(max_examples=30, deadline=None)
def test_max_seeds_below_the_first_round_is_refused(seeds: int, below: int) -> None:
    value = f"{{seeds: {seeds}, max_seeds: {seeds - below}}}"
    with pytest.raises(KdtuneError, match=r"confirm\.max_seeds: must be at least") as err:
        parse_space(_with_confirm(value), file="q.yaml")
    assert "\n" not in str(err.value) and f"({seeds})" in str(err.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{round_seeds: 0}", r"confirm\.round_seeds: must be"),
        ("{round_seeds: 1.5}", r"confirm\.round_seeds: must be an integer"),
        ("{margin: .nan}", r"confirm\.margin: must be a finite number"),
        ("{margin: '0.01'}", r"confirm\.margin: must be a number"),
        ("{max_seeds: true}", r"confirm\.max_seeds: must be an integer"),
        ("{max_seed: 4}", r"confirm"),
        ("{eval_every: 0}", r"confirm\.eval_every: must be"),
        ("{eval_every: 2.5}", r"confirm\.eval_every: must be an integer"),
    ],
)
def test_bad_confirm_keys_are_refused(value: str, message: str) -> None:
    with pytest.raises(KdtuneError, match=message):
        parse_space(_with_confirm(value), file="q.yaml")


def test_a_bad_margin_is_one_line_and_exit_2_from_the_command(tmp_path: Path) -> None:
    space = tmp_path / "q.yaml"
    space.write_text(_with_confirm("{seeds: 2, margin: 0}"))
    proc = subprocess.run(
        [sys.executable, "-m", "kdtune.cli", "search", str(space), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "confirm.margin: must be in (0, 1]" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


# --- a racing search killed mid-round, then resumed (slow: Ray, a process of its own) -------

RACING_SPACE = """
name: racing
level: second
sampler: {{type: grid, seed: 0}}
pruner: {{type: none}}
budget: {{max_epochs: 3, eval_every: 1, max_concurrent: 2}}
resources: {{cpu: 1}}
train: {{extra: {{sleep: 1.0, ann_file: {ann!r}, calls: {calls!r}}}}}
search:
  grid: [{{alpha: 0.3}}, {{alpha: 0.5}}]
confirm: {{top_k: 1, seeds: 2, round_seeds: 1, max_seeds: 4, margin: 0.001}}
"""
RACING_CLI = """
import sys
sys.path.insert(0, {tests!r})
import ray.cloudpickle, toy_trial, racing_trial
ray.cloudpickle.register_pickle_by_value(toy_trial)
ray.cloudpickle.register_pickle_by_value(racing_trial)
from kdtune.search import prepare
from kdtune.tune import confirm, driver
prepare.teacher_and_bank = lambda base, root, say: None
driver.TrainFit = lambda root: racing_trial.racing_fit
confirm.TrainFit = lambda root: racing_trial.racing_fit
from kdtune.cli import main
main(sys.argv[1:])
"""


def _session_kill(pid: int) -> None:
    """SIGKILL the search and every process of its session (Ray's workers included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == pid:  # the session id
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def _stage_records(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / SEARCH_FILE).read_text())["trials"])
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.slow
def test_a_race_killed_mid_round_resumes_without_rerunning_a_finished_run(tmp_path: Path) -> None:
    """SIGKILL while round 2 runs (one of its runs ended, others not), then ``--resume``: no run
    that had ended trains again; every round in search.json, the study (``round``) and MLflow
    (``kdtune.round``); each (configuration, seed) once."""
    import racing_trial

    from kdtune import tracking

    ann = racing_trial.write_ground_truth(tmp_path / "gt.json")
    calls = tmp_path / "calls.txt"
    space = tmp_path / "racing.yaml"
    space.write_text(RACING_SPACE.format(ann=str(ann), calls=str(calls)))
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["search", str(space), "--no-progress", "--results", str(results), "--tracking-uri", uri]
    script = RACING_CLI.format(tests=str(Path(__file__).parent))

    def start(extra: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, *args, *extra],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    proc = start([])
    round2 = results / "racing" / "confirm" / "round2"
    deadline = time.monotonic() + 600
    try:
        while True:
            done = [t for t in _stage_records(round2) if t["state"] == "complete"]
            if 1 <= len(done) < 3:
                break
            assert proc.poll() is None, f"the search ended before round 2: {proc.communicate()}"
            assert time.monotonic() < deadline, "round 2 did not come in time"
            time.sleep(0.1)
    finally:
        _session_kill(proc.pid)
        proc.wait()
    round1 = _stage_records(results / "racing" / "confirm" / "round1")
    ended_before = {
        (t["config"]["schedule"], t["config"]["seed"])
        for t in [*round1, *_stage_records(round2)]
        if t["state"] == "complete"
    }
    assert len(round1) == 6 and len(ended_before) >= 7  # round 1 whole, round 2 in part
    before_ids = {
        t["trial_id"] for t in [*round1, *_stage_records(round2)] if t["state"] == "complete"
    }

    resumed = start(["--resume"])
    try:
        _, err = resumed.communicate(timeout=600)
    finally:
        if resumed.poll() is None:
            _session_kill(resumed.pid)
            resumed.wait()
    assert resumed.returncode == 0, err[-3000:]
    trained = calls.read_text().split("\n")
    for schedule, seed in ended_before:  # a run that had ended never trained again
        assert trained.count(f"{schedule} {seed}") == 1, (schedule, seed)

    result = SearchResult.load(results / "racing" / SEARCH_FILE)
    keys = [(t.reported_schedule, int(t.config["seed"])) for t in result.confirmations]
    assert len(keys) == len(set(keys))  # each (configuration, seed) once
    assert ended_before <= set(keys)
    assert before_ids <= {t.trial_id for t in result.confirmations}  # the same records kept
    numbers = [r["round"] for r in result.rounds]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2
    for r in result.rounds:
        got = sorted(
            (t.reported_schedule, int(t.config["seed"]))
            for t in result.confirmations
            if t.round == r["round"]
        )
        assert got == sorted((x["schedule"], x["seed"]) for x in r["runs"])
    assert result.rounds[-1]["stop"] and result.verdict is not None
    assert result.verdict["racing"]["rounds"] == len(numbers)
    # judged again from the stored runs under the same rule: the same race, the same verdict
    from kdtune import api

    again = api.rejudge("racing", results=results, space_file=space)
    assert again["rounds_replayed"] == len(numbers) and again["stopped"] == result.rounds[-1]["why"]
    assert again["recommended"] == result.verdict["recommended"]
    assert [c["outcome"] for c in again["verdict"]["comparisons"]] == [
        c["outcome"] for c in result.verdict["comparisons"]
    ]
    # ranking and tests on the seeds every configuration still in finished
    last_in = result.rounds[-1]["in"]
    assert result.verdict["seeds"] == sorted({s for c, s in keys if c == last_in[0]})

    study = optuna.load_study(study_name="racing", storage=str(result.study_storage))
    confirmed = [t for t in study.trials if t.user_attrs.get("stage") == "confirm"]
    assert sorted((t.user_attrs["schedule"], t.user_attrs["seed"]) for t in confirmed) == sorted(
        keys
    )
    by_key = {(t.reported_schedule, int(t.config["seed"])): t.round for t in result.confirmations}
    assert all(
        t.user_attrs["round"] == by_key[(t.user_attrs["schedule"], t.user_attrs["seed"])]
        for t in confirmed
    )

    client = tracking.client(uri)
    exp = client.get_experiment_by_name(tracking.experiment_name("racing"))
    assert exp is not None
    every = client.search_runs([exp.experiment_id], max_results=1000)
    logged = [r for r in every if r.data.tags.get("stage") == "confirm"]
    assert sorted(r.data.tags[tracking.TAG_TRIAL] for r in logged) == sorted(
        t.trial_id for t in result.confirmations
    )  # one MLflow run each, no duplicates
    rounds_of = {t.trial_id: t.round for t in result.confirmations}
    assert all(
        r.data.tags["kdtune.round"] == str(rounds_of[r.data.tags[tracking.TAG_TRIAL]])
        for r in logged
    )


def test_a_recommendation_at_other_settings_than_the_references_is_flagged() -> None:
    from kdtune.search.confirmation import _note_settings

    base = {"schedule": "fixed:0.9", "lr": 0.003, "batch_size": 16, "seed": 5, "epochs": 4}
    candidates = {
        "fixed:0.9": base,
        "cosine:0.8:0.4": {**base, "schedule": "cosine:0.8:0.4", "lr": 0.01},
        DEFAULT: {**base, "schedule": DEFAULT},
        GT: {**base, "schedule": GT},
    }
    result = SearchResult(name="s", space_file="s.yaml", results_dir="/tmp/s")
    result.verdict = {"recommended": "fixed:0.9"}
    _note_settings(result, candidates, (DEFAULT, GT))
    assert result.verdict["settings_differ"] == []
    assert result.verdict["reference_settings"] == {"batch_size": 16, "epochs": 4, "lr": 0.003}
    result.verdict = {"recommended": "cosine:0.8:0.4"}
    _note_settings(result, candidates, (DEFAULT, GT))
    assert result.verdict["settings_differ"] == ["lr"]


# --- confirm.population ---------------------------------------------------------------------


@given(population=st.one_of(st.integers(1, 1024), st.just("auto")))
@settings(max_examples=30, deadline=None)
def test_a_population_of_at_least_1_or_auto_is_read(population: int | str) -> None:
    c = parse_space(_with_confirm(f"{{seeds: 2, population: {population}}}"), file="q.yaml").confirm
    assert c is not None and c.population == population
    assert parse_space(QUICK, file="q.yaml").confirm.population == 1  # type: ignore[union-attr]


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
        KdtuneError, match=r"confirm\.population: must be an integer of at least 1 or auto"
    ) as err:
        parse_space(_with_confirm(f"{{seeds: 2, population: {value}}}"), file="q.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "'4'", "AUTO", "true"])
def test_a_bad_population_is_one_line_and_exit_2_from_the_command(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import run_cli

    space = tmp_path / "q.yaml"
    space.write_text(_with_confirm(f"{{seeds: 2, population: {value}}}"))
    code, _out, err = run_cli(["search", str(space), "--dry-run"], capsys)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "confirm.population: must be" in err
    assert "Traceback" not in err


# --- a finished race judged again from its stored runs ------------------------------------------


def _stored(race: Race, pool: dict) -> SearchResult:
    """A search result holding ``race``'s rounds and a record per run it trained."""
    records = [
        TrialRecord(
            f"{x['schedule']}-{x['seed']}",
            "complete",
            {"schedule": x["schedule"], "seed": x["seed"], "epochs": 4, "lr": 0.01},
            round=r["round"],
        )
        for r in race.rounds
        for x in r["runs"]
    ]
    return SearchResult(
        name="raced", space_file="s.yaml", results_dir="/tmp/s", confirmations=records,
        rounds=list(race.rounds), verdict=race.final_block(),
    )  # fmt: skip


def _replay(
    monkeypatch: pytest.MonkeyPatch, result: SearchResult, pool: dict, **settings: Any
) -> Race:
    import kdtune.verdict
    from kdtune.search.confirmation import replay

    monkeypatch.setattr(kdtune.verdict, "runs_of", lambda records: {
        spec: {s: pool[spec][s] for s in sorted({int(t.config["seed"]) for t in records
                                                  if t.reported_schedule == spec})}
        for spec in {t.reported_schedule for t in records}
    })  # fmt: skip
    confirm = Confirm(**{"top_k": 2, "seeds": 2, "max_seeds": 6, "round_seeds": 2, **settings})
    return replay(result, confirm, "second", samples=200)


def test_a_race_judged_again_under_the_same_rule_gives_the_same_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _pool({"fixed:0.5": 0.6, "fixed:0.9": 0.0, DEFAULT: 0.0, GT: -0.3}, 6)
    race = _race(["fixed:0.5", "fixed:0.9", DEFAULT, GT], seeds=2, max_seeds=6, round_seeds=2)
    _drive(race, pool)
    stored = _stored(race, pool)
    again = _replay(monkeypatch, stored, pool)
    assert again.rounds == race.rounds and again.stopped == race.stopped
    block, old = again.final_block(), race.final_block()
    assert block is not None and old is not None
    assert block["recommended"] == old["recommended"]
    assert [(c["against"], c["outcome"], c["mean"]) for c in block["comparisons"]] == [
        (c["against"], c["outcome"], c["mean"]) for c in old["comparisons"]
    ]


def test_a_replay_that_wants_runs_the_stored_race_did_not_train_stops_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _pool({"fixed:0.5": 0.0, "fixed:0.9": 0.0, DEFAULT: 0.0, GT: 0.0}, 6)
    race = _race(["fixed:0.5", "fixed:0.9", DEFAULT, GT], seeds=2, max_seeds=4, round_seeds=2)
    _drive(race, pool)
    assert len(race.rounds) == 2  # undecided equals: max_seeds
    again = _replay(monkeypatch, _stored(race, pool), pool, max_seeds=6)
    assert len(again.rounds) == 2
    assert again.stopped is not None and again.stopped.startswith(
        "the stored race ends here: round 3 would train 8 runs it did not"
    )
    assert again.final_block() is not None


def test_a_search_without_a_race_cannot_be_judged_again() -> None:
    from kdtune.search.confirmation import replay

    with pytest.raises(KdtuneError, match="no confirmation race is stored"):
        replay(_result(), Confirm(), "second")
