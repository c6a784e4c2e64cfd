"""What one MLflow run of a search records, as plain values: a trial's params, tags, metrics
and artifacts, its name in MLflow's tables, and the parent run's verdict and answer fields.
Nothing here talks to a store (:mod:`kdtune.tracking.log` does)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.checks import is_number
from kdtune.results import CONFIRM_STAGE, FAILED, PRUNED, SearchResult, TrialRecord
from kdtune.schedules import parse_schedule, words
from kdtune.tracking.store import (
    FINAL_AP_METRIC,
    MAX_PARAM,
    MAX_TAG,
    NOTE_TAG,
    TAG_ANSWER,
    TAG_DIAGNOSIS,
    TAG_DIVERGED,
    TAG_EPOCHS_RUN,
    TAG_NEXT,
    TAG_REASON,
    TAG_RECOMMENDATION,
    TAG_STATE,
    TAG_VERDICT,
    TRIAL_PARAM_KEYS,
)

if TYPE_CHECKING:
    from kdtune.diagnose import Diagnosis


def trial_params(record: TrialRecord) -> dict[str, Any]:
    """A trial's MLflow params: level, α or the schedule's parameters (both levels for a
    chain), training settings, the trial id and Optuna number, and what the sampler chose."""
    cfg = record.config
    params: dict[str, Any] = {k: cfg[k] for k in TRIAL_PARAM_KEYS if k in cfg}
    params["trial_id"] = record.trial_id
    if record.number is not None:
        params["number"] = record.number
    if "schedule" in cfg:
        params.update(schedule_params(cfg["schedule"]))
    if cfg.get("level") == "chain" and "schedule_second" in cfg:
        params.update(schedule_params(cfg["schedule_second"], suffix="_second"))
    for key, value in record.params.items():
        params[f"sampled.{key}"] = value
    return params


def schedule_params(spec: str, suffix: str = "") -> dict[str, Any]:
    """A β schedule as MLflow params: ``schedule`` (the spec, the machine key), ``weighting``
    (it in words, for people: a column to pick in the runs table) and the shape's own parameters
    (:meth:`~kdtune.schedules.BetaSchedule.params`: ``alpha`` and ``beta`` of a fixed ratio,
    ``beta_start`` and ``beta_end`` of a schedule), each name ending in ``suffix``."""
    schedule = parse_schedule(spec)
    out: dict[str, Any] = {"schedule": spec, "weighting": schedule.words, **schedule.params()}
    return {key + suffix: value for key, value in out.items()}


def trial_tags(record: TrialRecord, diagnosis: Diagnosis | None) -> dict[str, Any]:
    """State, diagnosis, recommendation, next schedules and bookkeeping, as run tags."""
    tags: dict[str, Any] = {
        TAG_STATE: record.state,
        TAG_DIVERGED: str(bool(record.diverged)).lower(),
        TAG_EPOCHS_RUN: record.epochs_run,
        "kdtune.wall_s": f"{record.wall_s:.1f}",
        TAG_DIAGNOSIS: diagnosis.label if diagnosis else "none",
        TAG_RECOMMENDATION: one_line(diagnosis.recommendation) if diagnosis else "",
        TAG_REASON: one_line(diagnosis.reason) if diagnosis else "",
        TAG_NEXT: ", ".join(diagnosis.next_schedules) if diagnosis else "",
    }
    tags["stage"] = record.stage  # search, or confirm: a confirmation run
    if record.round is not None:
        tags["kdtune.round"] = record.round  # a confirmation run's racing round
    if record.number is not None:
        tags["kdtune.number"] = record.number
    if record.repeat_of is not None:  # answered from that trial's run, not trained
        tags["kdtune.repeat_of"] = record.repeat_of
    if record.node:
        tags["kdtune.node"] = record.node
    if record.error:
        tags["kdtune.error"] = one_line(record.error)
    tags[NOTE_TAG] = trial_note(record, diagnosis)
    return tags


def diagnosis_tags(record: TrialRecord, diagnosis: Diagnosis | None) -> tuple[str, str]:
    tags = trial_tags(record, diagnosis)
    return str(tags[TAG_DIAGNOSIS]), tag_text(tags[TAG_REASON])


def trial_note(record: TrialRecord, diagnosis: Diagnosis | None) -> str:
    """The run's description in the MLflow UI (Markdown)."""
    lines = [f"**{record.state}** after {record.epochs_run} epochs"]
    if record.repeat_of is not None:
        lines.append(
            f"the weighting and seed of trial {record.repeat_of} again: its run, not trained twice"
        )
    if diagnosis is not None:
        lines.append(f"**diagnosis**: {diagnosis.label}: {diagnosis.reason}")
        lines.append(f"**recommendation**: {diagnosis.recommendation}")
        if diagnosis.next_schedules:
            lines.append("**try next**: " + ", ".join(diagnosis.next_schedules))
    if record.error:
        lines.append(f"**error**: {one_line(record.error)}")
    return "\n\n".join(lines)


def trial_metrics(record: TrialRecord) -> list[Any]:
    """``final/val/ap`` (the trial's value), then every numeric value of every evaluation
    (step = epoch). The final value comes first: the store keeps a run's metrics in the order
    they were first logged, and MLflow's compare view opens its plot on the first one."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    best = record.value("val/ap")
    if best is not None:
        metrics.append(Metric(FINAL_AP_METRIC, float(best), now, record.epochs_run))
    for i, row in enumerate(record.history):
        step = metric_step(row.get("epoch"), default=i + 1)
        for key, value in row.items():
            if key != "epoch" and is_number(value):
                metrics.append(Metric(key, float(value), now, step))
    return metrics


def trial_artifacts(record: TrialRecord, diagnosis: Diagnosis | None, tmp: Path) -> list[Path]:
    """Write a trial's artifacts into ``tmp``: learning curves, validation keypoints (from
    its checkpoint), config, history, diagnosis, error."""
    from kdtune import plots

    paths = [write_json(tmp / "config.json", record.config)]
    if record.history:
        title = f"{trial_run_name(record)} ({record.state})"
        paths.append(
            plots.learning_curves(record.history, tmp / "learning_curves.png", title=title)
        )
        paths.append(write_json(tmp / "history.json", record.history))
    if record.checkpoint_dir:
        keypoints = Path(record.checkpoint_dir) / "val_keypoints.png"
        if keypoints.is_file():
            paths.append(Path(shutil.copyfile(keypoints, tmp / keypoints.name)))
    if diagnosis is not None:
        paths.append(write_json(tmp / "diagnosis.json", diagnosis.to_dict()))
    if record.error:
        path = tmp / "error.txt"
        path.write_text(record.error)
        paths.append(path)
    return paths


def verdict_metrics(verdict: Mapping[str, Any]) -> dict[str, float]:
    """The confirmation's figures on the parent run: the recommendation's mean AP and its
    standard error, and ΔAP with its interval against the seed default and the runner-up."""
    top = verdict["ranking"][0]
    metrics = {"confirm/mean/val/ap": float(top["mean"]), "confirm/se/val/ap": float(top["se"])}
    roles = {"seed default": "default", "runner-up": "runner_up"}
    for c in verdict["comparisons"]:
        role = roles.get(c["role"])
        if role is None:
            continue
        metrics[f"verdict/{role}/delta_ap"] = float(c["mean"])
        metrics[f"verdict/{role}/low"] = float(c["low"])
        metrics[f"verdict/{role}/high"] = float(c["high"])
    return metrics


def verdict_tags(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict in words on the parent run: its sentence (also the run's description, so
    the runs table shows it) and the recommended schedule."""
    sentences = [c["sentence"] for c in verdict["comparisons"]] or [verdict["sentence"]]
    return {
        TAG_VERDICT: one_line(verdict["sentence"]),
        "kdtune.recommended": verdict["recommended"],
        NOTE_TAG: "\n\n".join(sentences),
    }


def answer_tags(result: SearchResult) -> dict[str, Any]:
    """The search's answer on the parent run, as every other place shows it
    (:func:`kdtune.answer.answer_text`): the whole text (``kdtune.answer``, and the run's
    description, so the runs page shows it), whether it is confirmed, and the recommended
    weighting as its spec (the machine key) and in words."""
    from kdtune.answer import answer_record

    answer = answer_record(result)
    spec = answer["recommended"]
    none = f"none: {result.withheld or 'no trial completed'}"
    return {
        TAG_ANSWER: answer["text"],
        NOTE_TAG: answer["text"],
        "kdtune.answer.confirmed": "yes" if answer["confirmed"] else "no (unconfirmed)",
        "kdtune.recommended": spec if spec is not None else none,
        "kdtune.recommended.weighting": answer["recommended_words"] or "none",
    }


def param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return text[:MAX_PARAM]


def tag_text(value: Any) -> str:
    return str(value)[:MAX_TAG]


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def trial_run_name(record: TrialRecord) -> str:
    """The run's name in MLflow's tables: the trial and its weighting in words (α and β spelled
    out, or the schedule), and the state where it is not a completed one: ``trial 2 | α 0.25 /
    β 0.75``, ``trial 5 | β 0.9 → 0.5 (linear) | pruned``, ``confirm | α 0.25 / β 0.75 | seed
    3``."""
    cfg = record.config
    if record.stage == CONFIRM_STAGE:
        return f"confirm | {words(record.reported_schedule)} | seed {cfg.get('seed')}"
    head = f"trial {record.number}" if record.number is not None else record.trial_id
    parts = [head]
    if cfg.get("schedule"):
        weighting = words(str(cfg["schedule"]))
        if cfg.get("level") == "chain":
            weighting += f", then {words(str(cfg.get('schedule_second', '')))}"
        parts.append(weighting)
    if record.state in (PRUNED, FAILED):
        parts.append(record.state)
    return " | ".join(parts)


def metric_step(epoch: Any, default: int) -> int:
    """An evaluation's MLflow step: its epoch, or its position when the epoch is missing."""
    if is_number(epoch) and math.isfinite(float(epoch)):
        return int(epoch)
    return default
