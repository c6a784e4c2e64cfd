"""Diagnosis of constructed curves, the guidance's next ratios, thresholds and the search report."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.diagnose import (
    DIRECTIONS,
    GUIDANCE,
    LABELS,
    MORE_DISTILLATION,
    Diagnosis,
    DiagnosisKind,
    SearchReport,
    Thresholds,
    TrialSummary,
    diagnose,
    mean_beta,
    next_schedules,
    search_report,
)
from kdtune.diagnose.guidance import _labels as guidance_labels
from kdtune.errors import KdtuneError
from kdtune.schedules import parse_schedule


def curves(
    train: list[float],
    val: list[float] | None = None,
    ap: list[float] | None = None,
    **extra: list[float],
) -> list[dict[str, float]]:
    """A history with one dict per evaluation, epochs counted from 1."""
    rows: list[dict[str, float]] = []
    for i, loss in enumerate(train):
        row = {"epoch": float(i + 1), "train/loss": loss}
        if val is not None:
            row["val/loss"] = val[i]
        if ap is not None:
            row["val/ap"] = ap[i]
        for key, values in extra.items():
            row[key.replace("__", "/")] = values[i]
        rows.append(row)
    return rows


# Clear-cut curves, one per label.
UNDERFIT = curves(
    train=[1.0, 0.95, 0.9, 0.88, 0.87, 0.87],
    val=[1.0, 0.96, 0.92, 0.9, 0.89, 0.89],
    ap=[0.01, 0.02, 0.05, 0.03, 0.04, 0.02],
)
OVERFIT_RISING = curves(
    train=[1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.17],
    val=[0.9, 0.6, 0.45, 0.4, 0.44, 0.48, 0.52],
    ap=[0.1, 0.2, 0.3, 0.32, 0.31, 0.3, 0.28],
)
OVERFIT_GAP = curves(
    train=[1.0, 0.5, 0.3, 0.25, 0.22, 0.2],
    val=[1.2, 0.9, 0.8, 0.78, 0.77, 0.77],
    ap=[0.1, 0.2, 0.25, 0.27, 0.28, 0.29],
)
SLOW = curves(
    train=[1.0, 0.8, 0.64, 0.512, 0.41, 0.328],
    val=[1.1, 0.88, 0.7, 0.56, 0.45, 0.36],
    ap=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
)
PLATEAU = curves(
    train=[1.0, 0.5, 0.35, 0.3, 0.29, 0.285, 0.284, 0.2835],
    val=[1.05, 0.53, 0.37, 0.32, 0.305, 0.3, 0.299, 0.298],
    ap=[0.3, 0.4, 0.45, 0.450, 0.451, 0.452, 0.451, 0.452],
)
HEALTHY = curves(
    train=[1.0, 0.5, 0.33, 0.3, 0.29, 0.285],
    val=[1.05, 0.53, 0.35, 0.32, 0.305, 0.3],
    ap=[0.1, 0.3, 0.4, 0.45, 0.47, 0.48],
)
NAN = curves(train=[1.0, 0.5, float("nan"), 0.3], val=[1.0, 0.5, 0.4, 0.3], ap=[0.1, 0.2, 0.0, 0.3])
EXPLODED = curves(train=[1.0, 0.5, 0.3, 4.0], val=[1.0, 0.5, 0.3, 3.0], ap=[0.1, 0.2, 0.3, 0.0])


def run(history: list[dict[str, Any]], schedule: str = "fixed:0.75", **kw: Any) -> Diagnosis:
    kw.setdefault("level", "second")
    return diagnose(history, schedule, **kw)


# ---------------------------------------------------------------------------- every class


@pytest.mark.parametrize(
    ("history", "label", "cited"),
    [
        (UNDERFIT, "underfitting", "87%"),
        (OVERFIT_RISING, "overfitting", "rose 30%"),
        (OVERFIT_GAP, "overfitting", "285% above train/loss"),
        (SLOW, "slow_convergence", "20.0% per evaluation"),
        (PLATEAU, "plateau", "0.450–0.452"),
        (NAN, "diverged", "train/loss is nan at epoch 3"),
        (EXPLODED, "diverged", "13.3× its earlier minimum 0.3"),
        (HEALTHY, "healthy", "no symptom"),
    ],
)
def test_constructed_curves_get_their_label(
    history: list[dict[str, float]], label: str, cited: str
) -> None:
    d = run(history)
    assert d.label == label
    assert cited in d.reason
    assert "\n" not in d.reason and "\n" not in d.recommendation


def test_diagnosis_from_dict_rejects_garbage() -> None:
    with pytest.raises(KdtuneError, match="diagnosis: expected a mapping with a label"):
        Diagnosis.from_dict({"label": "sick"})
    with pytest.raises(KdtuneError, match="evidence must map names to numbers"):
        Diagnosis.from_dict({"label": "healthy", "evidence": {"x": "y"}})


def test_val_loss_is_set_against_the_unweighted_student_loss() -> None:
    # train/loss is the weighted total (small distill term); val/loss is ground-truth L2 and
    # sits close to train/student_loss: no gap.
    history = curves(
        train=[0.3, 0.15, 0.08, 0.076, 0.075, 0.074],
        val=[1.05, 0.53, 0.35, 0.32, 0.305, 0.3],
        ap=[0.1, 0.3, 0.4, 0.45, 0.47, 0.48],
        train__student_loss=[1.0, 0.5, 0.33, 0.3, 0.29, 0.285],
    )
    assert run(history).label == "healthy"
    for row in history:  # val/loss now twice the training-set ground-truth loss
        row["val/loss"] = 2 * row["train/student_loss"]
    d = run(history)
    assert d.label == "overfitting"
    assert "100% above train/student_loss 0.285" in d.reason


def test_infinite_loss_is_divergence() -> None:
    history = curves(train=[1.0, 0.5, 0.4], val=[1.0, float("inf"), 0.4])
    assert run(history).label == "diverged"


def test_a_trial_stopped_by_a_nan_loss_is_diverged_not_underfitting() -> None:
    """kdtune.train raises at the first NaN loss, so the history ends before it: the record's
    flag and error say it. The move is the learning rate, never the ratio."""
    from kdtune.diagnose import diagnose_trial
    from kdtune.results import FAILED, TrialRecord

    record = TrialRecord(
        "t_0", FAILED, {"level": "second", "schedule": "fixed:0.75", "epochs": 6}, {}, 0,
        UNDERFIT[:3], error="TrialDivergedError: TrialDiverged: loss became nan at epoch 4",
        diverged=True,
    )  # fmt: skip
    found = diagnose_trial(record, best_ap_in_search=0.5)
    assert found.label == "diverged"
    assert "loss became nan at epoch 4" in found.reason
    assert "learning rate" in found.recommendation and found.next_schedules == []
    record.diverged = False  # the same curves, without the flag: a failure, not a symptom
    failed = diagnose_trial(record, best_ap_in_search=0.5)
    assert failed.label == "failed" and failed.next_schedules == []
    assert "failed at epoch 3" in failed.reason and "loss became nan at epoch 4" in failed.reason


def test_a_trial_that_errored_is_failed_not_healthy() -> None:
    from kdtune.diagnose import diagnose_trial
    from kdtune.results import FAILED, TrialRecord

    # healthy curves up to epoch 2, then an error: what MLflow showed as "healthy"
    record = TrialRecord(
        "t_1", FAILED, {"level": "second", "schedule": "fixed:0.75", "epochs": 6}, {}, 1,
        HEALTHY[:2], error="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error",
    )  # fmt: skip
    found = diagnose_trial(record, best_ap_in_search=0.5)
    assert found.label == "failed"
    assert found.reason.startswith("the trial failed at epoch 2")
    assert found.reason.endswith("; its error: RuntimeError: CUDA error")
    assert "rerun" in found.recommendation and found.next_schedules == []
    assert diagnose(HEALTHY[:2], "fixed:0.75", level="second").label != "failed"  # complete


def test_evidence_carries_the_numbers() -> None:
    ev = run(OVERFIT_RISING).evidence
    assert ev["train_loss_ratio"] == pytest.approx(0.17)
    assert ev["val_loss_min"] == pytest.approx(0.4)
    assert ev["val_loss_rise"] == pytest.approx(0.3)
    assert ev["ap_best"] == pytest.approx(0.32)
    assert ev["alpha"] == pytest.approx(0.25)
    assert ev["evaluations"] == 7.0
    assert ev["last_epoch"] == 7.0


def test_priority_divergence_beats_everything() -> None:
    history = [dict(row) for row in OVERFIT_RISING]
    history[-1]["train/distill_loss"] = float("nan")
    assert run(history).label == "diverged"


def test_too_short_histories_are_healthy_without_a_symptom() -> None:
    for history in ([], UNDERFIT[:1]):
        d = run(history)
        assert d.label == "healthy"
        assert "too few evaluations" in d.reason or "no symptom" in d.reason
        assert d.next_schedules == []


def test_budget_note_names_a_pruned_trial() -> None:
    d = run(SLOW, state="pruned", max_epochs=20)
    assert d.reason.endswith("(trial pruned at epoch 6 of 20)")
    assert d.evidence["max_epochs"] == 20.0


# ---------------------------------------------------------------------------- the guidance's moves


def test_overfitting_at_quarter_alpha_moves_to_more_distillation() -> None:
    d = run(OVERFIT_RISING, "fixed:0.75")
    assert d.next_schedules == ["fixed:0.8", "fixed:0.85"]  # 0.2/0.8 and 0.15/0.85
    assert "distillation" in d.recommendation


def test_underfitting_at_quarter_alpha_moves_to_more_ground_truth() -> None:
    d = run(UNDERFIT, "fixed:0.75")
    assert d.next_schedules == ["fixed:0.7", "fixed:0.6"]  # 0.3/0.7 and 0.4/0.6
    assert "ground-truth" in d.recommendation


def test_slow_convergence_suggests_high_distillation_early() -> None:
    assert run(SLOW, "fixed:0.75").next_schedules == ["linear:0.9:0.75", "cosine:0.9:0.75"]


def test_plateau_suggests_high_to_balanced_and_never_the_current_point() -> None:
    assert run(PLATEAU, "fixed:0.75").next_schedules == ["linear:0.9:0.5", "cosine:0.9:0.5"]
    assert run(PLATEAU, "linear:0.9:0.5").next_schedules == ["cosine:0.9:0.5"]


def test_adaptive_schedule_moves_from_its_mean_beta() -> None:
    assert mean_beta("linear:0.9:0.5") == pytest.approx(0.7)
    assert mean_beta("step:0.9:0.5,at=0.5") == pytest.approx(0.7)
    assert mean_beta("cosine:0.9:0.5,warmup=0.1") == pytest.approx(0.72)
    # mean β 0.7 → α 0.3: underfitting → α 0.35 and 0.45
    assert next_schedules("underfitting", "linear:0.9:0.5") == ["fixed:0.65", "fixed:0.55"]
    assert next_schedules("overfitting", "linear:0.9:0.5") == ["fixed:0.75", "fixed:0.8"]


def test_moves_are_clamped_rounded_deduplicated() -> None:
    assert next_schedules("overfitting", "fixed:0.95") == ["fixed:1"]
    assert next_schedules("overfitting", "fixed:1") == []
    assert next_schedules("underfitting", "fixed:0") == []
    assert next_schedules("underfitting", "fixed:0.12") == ["fixed:0.05", "fixed:0"]
    assert next_schedules("slow_convergence", "fixed:0.9") == ["linear:1:0.9", "cosine:1:0.9"]
    assert next_schedules("diverged", "fixed:0.75") == []
    assert next_schedules("healthy", "fixed:0.75") == []
    with pytest.raises(KdtuneError, match="unknown diagnosis 'sick'"):
        next_schedules("sick", "fixed:0.75")


def test_no_move_left_is_said() -> None:
    d = run(OVERFIT_RISING, "fixed:1")
    assert d.next_schedules == []
    assert "no ratio move left" in d.recommendation


def test_teacher_level_gets_no_ratio_moves() -> None:
    d = run(UNDERFIT, level="teacher")
    assert d.label == "underfitting"
    assert d.next_schedules == []
    assert "teacher level" in d.recommendation


def test_adaptive_schedule_reads_the_student_loss_for_trends() -> None:
    # β falls 0.9 → 0.5: the total rises with the growing ground-truth term while the
    # student loss falls: no divergence, no underfitting.
    history = curves(
        train=[0.2, 0.3, 0.45, 0.6, 0.8, 2.5],
        train__student_loss=[1.0, 0.5, 0.33, 0.3, 0.29, 0.285],
        ap=[0.1, 0.3, 0.4, 0.45, 0.47, 0.48],
    )
    d = run(history, "linear:0.9:0.5")
    assert d.label == "healthy"
    assert "train/student_loss" in d.reason
    assert run(history, "fixed:0.75").label == "diverged"  # the same curve at a fixed β


# ---------------------------------------------------------------------------- the guidance table


def test_the_guidance_table_defines_the_labels_in_its_order() -> None:
    labels = [kind.label for kind in GUIDANCE]
    assert len(set(labels)) == len(labels)  # each label once
    assert tuple(labels) == LABELS  # in the table's (priority) order
    assert labels[-1] == "healthy"  # the catch-all comes last
    assert {kind.direction for kind in GUIDANCE} - {None} == set(DIRECTIONS)


@pytest.mark.parametrize("kind", GUIDANCE, ids=LABELS)
def test_every_row_is_complete(kind: DiagnosisKind) -> None:
    assert kind.recommendation and kind.symptom
    assert "{" not in kind.recommend(parse_schedule("fixed:0.75"))
    # a row with moves counts toward a direction, a row without counts toward none
    assert (kind.moves is None) == (kind.direction is None)
    if kind.direction is None:
        assert next_schedules(kind.label, "fixed:0.5") == []
        return
    assert next_schedules(kind.label, "fixed:0.5")
    trials = [trial(t, "fixed:0.5", 0.1, kind.label) for t in "ab"] + [
        trial("c", "fixed:0.6", 0.3, "healthy")
    ]
    r = search_report(trials)
    assert r.direction == kind.direction
    assert r.explanation.startswith("2 trials show") and kind.symptom in r.explanation


@pytest.mark.parametrize(
    "change",
    [
        {"recommendation": ""},
        {"symptom": ""},
        {"direction": None},  # moves that would count toward no direction
        {"moves": None},  # a direction without moves
        {"direction": "sideways"},
        {"recommendation": "raise β from {alpha}"},
        {"label": "Noisy AP"},
    ],
)
def test_a_half_made_row_fails_loudly(change: dict[str, Any]) -> None:
    row: dict[str, Any] = {
        "label": "noisy",
        "test": lambda m, th, ap_ref: None,
        "recommendation": "raise the distillation weight from {ratio}",
        "moves": lambda alpha: [],
        "direction": MORE_DISTILLATION,
        "symptom": "noisy AP",
    }
    DiagnosisKind(**row)
    with pytest.raises(ValueError, match="diagnosis"):
        DiagnosisKind(**{**row, **change})


def test_a_label_twice_in_the_table_fails_loudly() -> None:
    with pytest.raises(ValueError, match="'plateau' is in the guidance table twice"):
        guidance_labels([*GUIDANCE, next(k for k in GUIDANCE if k.label == "plateau")])


# ---------------------------------------------------------------------------- thresholds


def test_thresholds_change_the_label() -> None:
    assert run(PLATEAU, thresholds=Thresholds(plateau_delta=0.001)).label == "healthy"
    assert run(PLATEAU, thresholds=Thresholds(plateau_evals=8)).label == "healthy"
    assert run(SLOW, thresholds=Thresholds(slow_slope=0.25)).label == "healthy"
    assert run(UNDERFIT, thresholds=Thresholds(underfit_loss_ratio=0.9)).label != "underfitting"
    assert run(UNDERFIT, thresholds=Thresholds(underfit_ap_abs=0.05)).label != "underfitting"
    assert run(OVERFIT_RISING, thresholds=Thresholds(overfit_rise=0.5)).label == "overfitting"
    loose = Thresholds(overfit_rise=0.5, overfit_gap=5.0)
    assert run(OVERFIT_RISING, thresholds=loose).label != "overfitting"
    assert run(EXPLODED, thresholds=Thresholds(diverge_factor=20.0)).label != "diverged"
    assert run(HEALTHY, thresholds=Thresholds(plateau_delta=0.5)).label == "plateau"


def test_poor_ap_is_relative_to_the_search_best_when_known() -> None:
    assert run(UNDERFIT, best_ap_in_search=0.5).label == "underfitting"
    assert run(UNDERFIT, best_ap_in_search=0.06).label != "underfitting"  # 0.05 ≥ 0.8 × 0.06
    assert "search's best 0.500" in run(UNDERFIT, best_ap_in_search=0.5).reason
    assert run(UNDERFIT, best_ap_in_search=float("nan")).label == "underfitting"  # ignored


def test_thresholds_from_dict_roundtrip() -> None:
    th = Thresholds.from_dict({"overfit_gap": 1, "plateau_evals": 7})
    assert th.overfit_gap == 1 and th.plateau_evals == 7
    assert Thresholds.from_dict(th.to_dict()) == th
    assert Thresholds.from_dict({}) == Thresholds()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"overfit_gapp": 0.5}, "unknown key 'overfit_gapp'"),
        ({"overfit_gap": "big"}, "overfit_gap: must be a number, got 'big'"),
        ({"overfit_gap": True}, "overfit_gap: must be a number"),
        ({"overfit_gap": -1.0}, "overfit_gap: must be above 0"),
        ({"overfit_gap": float("nan")}, "overfit_gap: must be a number"),
        ({"plateau_evals": 1}, "plateau_evals: must be at least 2"),
        ({"plateau_evals": 5.0}, "plateau_evals: must be an integer"),
        ({"slow_slope": 1.5}, "slow_slope: must be above 0 and at most 1"),
        ({"diverge_factor": 1.0}, "diverge_factor: must be above 1"),
        ({"underfit_ap": 0.0}, "underfit_ap: must be above 0"),
    ],
)
def test_thresholds_from_dict_rejects_bad_input(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(KdtuneError, match=message):
        Thresholds.from_dict(raw)


def test_thresholds_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(KdtuneError, match="thresholds: expected a mapping, got list"):
        Thresholds.from_dict([("overfit_gap", 1.0)])  # type: ignore[arg-type]


@given(
    st.dictionaries(
        st.sampled_from([*Thresholds().to_dict(), "bogus"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    )
)
@settings(max_examples=150, deadline=None)
def test_thresholds_from_dict_only_ever_raises_kdtune_error(raw: dict[str, Any]) -> None:
    try:
        th = Thresholds.from_dict(raw)
    except KdtuneError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(th, Thresholds)


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"schedule": "fixed:1.5"}, "beta must be in"),
        ({"state": "done"}, "state: unknown trial state 'done'"),
        ({"max_epochs": 0}, "max_epochs: must be a positive integer"),
        ({"level": ""}, "level: expected a level name"),
        ({"history": "loss"}, "history: expected a list"),
        ({"history": [1.0]}, r"history\[0\]: expected a dict"),
        ({"history": [{"val/ap": "high"}]}, r"history\[0\]\['val/ap'\]: expected a number"),
        ({"best_ap_in_search": "0.4"}, "best_ap_in_search: expected a number"),
    ],
)
def test_bad_arguments_raise_kdtune_error(kw: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"history": HEALTHY, "schedule": "fixed:0.75", "level": "second"}
    args.update(kw)
    with pytest.raises(KdtuneError, match=message):
        diagnose(args.pop("history"), args.pop("schedule"), **args)


# ---------------------------------------------------------------------------- random histories

KEYS = [
    "epoch",
    "train/loss",
    "train/student_loss",
    "train/distill_loss",
    "train/beta",
    "val/loss",
    "val/ap",
    "val/ap50",
]
SCHEDULES = [
    "fixed:0.75",
    "fixed:0",
    "fixed:1",
    "linear:0.9:0.5",
    "cosine:0.9:0.5,warmup=0.1",
    "step:0.2:0.8,at=0.3",
]
values = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 2) | st.none()
histories = st.lists(st.dictionaries(st.sampled_from(KEYS), values), max_size=12)


@given(
    history=histories,
    schedule=st.sampled_from(SCHEDULES),
    level=st.sampled_from(["first", "second", "teacher", "chain"]),
    state=st.sampled_from(["complete", "pruned", "failed"]),
    max_epochs=st.none() | st.integers(1, 50),
    best=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
@settings(max_examples=200, deadline=None)
def test_random_histories_never_raise(
    history: list[dict[str, Any]],
    schedule: str,
    level: str,
    state: str,
    max_epochs: int | None,
    best: float | None,
) -> None:
    d = diagnose(
        history, schedule, level=level, state=state, max_epochs=max_epochs, best_ap_in_search=best
    )
    assert d.label in LABELS
    assert d.reason and d.recommendation
    assert all(math.isfinite(v) for v in d.evidence.values())
    current = parse_schedule(schedule).spec
    assert all(parse_schedule(s).spec == s != current for s in d.next_schedules)
    assert len(set(d.next_schedules)) == len(d.next_schedules)
    assert Diagnosis.from_dict(json.loads(json.dumps(d.to_dict()))) == d


# ---------------------------------------------------------------------------- search report


def trial(
    tid: str, schedule: str, ap: float | None, label: str | None, state: str = "complete"
) -> TrialSummary:
    diag = None
    if label is not None:
        diag = Diagnosis(label, "r", "rec", next_schedules(label, schedule), {})
    return TrialSummary(tid, schedule, state, ap, diag)


def test_report_counts_best_and_agreement_when_overfitting_dominates() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.30, "overfitting"),
        trial("b", "fixed:0.7", 0.25, "overfitting"),
        trial("c", "fixed:0.5", 0.20, "overfitting"),
        trial("d", "fixed:0.85", 0.40, "healthy"),
        trial("e", "fixed:0.95", 0.90, "diverged", state="pruned"),  # not complete: never best
    ]
    r = search_report(trials)
    assert r.n_trials == 5
    assert r.counts == {  # complete trials only: the pruned one's curve is short
        "diverged": 0,
        "failed": 0,
        "pruned": 0,
        "overfitting": 3,
        "underfitting": 0,
        "slow_convergence": 0,
        "plateau": 0,
        "healthy": 1,
    }
    assert r.states == {"complete": 4, "pruned": 1}
    assert r.best is not None and r.best.trial_id == "d"
    assert r.direction == "more_distillation"
    assert r.agrees_with_guidance is True
    assert "mean β 0.85 is above the median trial's 0.75" in r.explanation
    # best trials' moves first (a, then b, then c); schedules the search ran are left out
    assert r.next_points == ["fixed:0.8", "fixed:0.55", "fixed:0.6"]


def test_report_disagrees_when_the_best_goes_against_the_guidance() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.10, "underfitting"),
        trial("b", "fixed:0.5", 0.12, "underfitting"),
        trial("c", "fixed:0.9", 0.30, "healthy"),
    ]
    r = search_report(trials)
    assert r.direction == "more_ground_truth"
    assert r.agrees_with_guidance is False
    assert "above the median" in r.explanation


def test_report_adaptive_direction_checks_the_best_schedule_shape() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.10, "plateau"),
        trial("b", "fixed:0.5", 0.12, "slow_convergence"),
        trial("c", "linear:0.9:0.5", 0.30, "healthy"),
    ]
    r = search_report(trials)
    assert r.direction == "adaptive"
    assert r.agrees_with_guidance is True


def test_report_without_a_dominant_direction_has_no_verdict() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.10, "overfitting"),
        trial("b", "fixed:0.5", 0.12, "underfitting"),
        trial("c", "fixed:0.9", 0.30, "healthy"),
        trial("d", "fixed:0.6", 0.20, None),
    ]
    r = search_report(trials)
    assert r.direction is None
    assert r.agrees_with_guidance is None
    assert sum(r.counts.values()) == 3


def test_report_without_a_completed_trial() -> None:
    trials = [trial("a", "fixed:0.75", 0.1, "overfitting", state="pruned")]
    r = search_report(trials)
    assert r.best is None
    assert r.direction is None  # a pruned trial's diagnosis counts toward no direction
    assert r.agrees_with_guidance is None
    assert "guidance: no direction to check" in r.to_text()


def test_report_empty_search() -> None:
    r = search_report([])
    assert (r.n_trials, r.best, r.agrees_with_guidance, r.next_points) == (0, None, None, [])
    assert r.to_text().startswith("diagnoses of 0 trials: none diagnosed")


def test_next_points_come_from_what_the_confirmation_supports() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.30, "overfitting"),  # the confirmation's recommendation
        trial("b", "fixed:0.5", 0.40, "underfitting"),  # the single-seed winner, not backed
        trial("c", "fixed:0.6", 0.20, "overfitting"),  # equivalent to the recommendation
    ]
    unconfirmed = search_report(trials)
    assert unconfirmed.next_points[:2] == ["fixed:0.45", "fixed:0.35"]  # around b, the winner
    r = search_report(trials, supported=["fixed:0.75", "fixed:0.6"])
    assert r.next_points == ["fixed:0.8", "fixed:0.85", "fixed:0.65", "fixed:0.7"]
    assert r.subject == "the recommendation α 0.25 / β 0.75"
    assert "the recommendation α 0.25 / β 0.75: mean β 0.75 is above" in r.explanation
    assert "around the recommendation and its equivalents" in r.to_text()
    # the recommendation ran only in the confirmation (e.g. the seed default): its runs count
    default = trial("k", "fixed:0.8", 0.35, "overfitting")
    r = search_report(trials, supported=["fixed:0.8"], supported_runs=[default])
    assert r.next_points == ["fixed:0.85", "fixed:0.9"]


def test_report_text_and_dict() -> None:
    trials = [
        trial("a", "fixed:0.75", 0.30, "overfitting"),
        trial("b", "fixed:0.85", 0.40, "healthy"),
    ]
    r = search_report(trials)
    text = r.to_text()
    assert "diagnoses of 2 trials: 1 overfitting, 1 healthy" in text
    # no "best" of its own (the summary's answer is the one best), nor a second "verdict"
    assert "best:" not in text and "verdict" not in text
    assert "the single-seed best α 0.15 / β 0.85 goes its way" in text
    assert "next points (the trials' diagnoses, best first; unconfirmed): α 0.2 / β 0.8" in text
    assert "fixed:" not in text
    d = json.loads(json.dumps(r.to_dict()))
    assert d["best"]["trial_id"] == "b"
    assert d["best"]["diagnosis"]["label"] == "healthy"
    assert d["next_points"] == ["fixed:0.8"]
    assert isinstance(r, SearchReport)


def test_report_end_to_end_from_curves() -> None:
    specs = {
        "a": ("fixed:0.75", OVERFIT_RISING),
        "b": ("fixed:0.9", HEALTHY),
        "c": ("fixed:0.7", OVERFIT_GAP),
    }
    trials = []
    for tid, (spec, history) in specs.items():
        best_ap = max(row["val/ap"] for row in history)
        trials.append(
            TrialSummary(tid, spec, "complete", best_ap, run(history, spec, best_ap_in_search=0.48))
        )
    r = search_report(trials)
    assert r.counts["overfitting"] == 2 and r.counts["healthy"] == 1
    assert r.best is not None and r.best.trial_id == "b"
    assert r.agrees_with_guidance is True
    assert r.next_points == ["fixed:0.8", "fixed:0.85"]


def test_dominance_is_validated() -> None:
    with pytest.raises(KdtuneError, match="dominance"):
        search_report([], dominance=0.0)


def test_a_pruned_trial_is_diagnosed_pruned_not_from_its_short_curve() -> None:
    history = [
        {"epoch": 1, "train/loss": 90.0, "val/loss": 95.0, "val/ap": 0.01},
        {"epoch": 2, "train/loss": 85.0, "val/loss": 90.0, "val/ap": 0.02},
    ]
    complete = diagnose(history, "fixed:0.75", level="second", max_epochs=12)
    pruned = diagnose(history, "fixed:0.75", level="second", max_epochs=12, state="pruned")
    assert complete.label != "pruned"
    assert pruned.label == "pruned" and "stopped it at epoch 2" in pruned.reason
    assert pruned.next_schedules == []
