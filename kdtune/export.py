"""``kdtune export``: the best configuration of a search, checked on a held-out split.

The best trial (by the search's metric, complete trials only) is written as a YAML that
``kdtune train --config`` reproduces. Unless told not to, export also trains that
configuration and the reference default (α = 0.25 at the second level, 0.3 at the first) the
same way and evaluates both on a split the search never used for selection, with a 95 %
bootstrap interval over images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from kdtune.config import REFERENCE_ALPHA, TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError
from kdtune.results import SEARCH_FILE, SearchResult, TrialRecord


def load_search(results: Path, name: str | None) -> SearchResult:
    """The search ``name`` under ``results`` (the only one there when ``name`` is None)."""
    known = (
        sorted(p.parent.name for p in results.glob(f"*/{SEARCH_FILE}")) if results.is_dir() else []
    )
    if name is None:
        if len(known) != 1:
            listing = ", ".join(known) or "none"
            raise KdtuneError(
                f"search: name one of the searches under {results} (found: {listing})"
            )
        name = known[0]
    path = results / name / SEARCH_FILE
    if not path.is_file():
        listing = ", ".join(known) or "none"
        raise KdtuneError(f"search: unknown search {name!r} under {results} (known: {listing})")
    try:
        return SearchResult.load(path)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise KdtuneError(f"search: {path} is not a kdtune search record ({exc})") from None


def check_writable(out: Path) -> None:
    """Refuse, before any work, an output path that cannot be written."""
    if out.is_dir():
        raise KdtuneError(f"-o: {out} is a folder; give a file name such as best.yaml")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise KdtuneError(f"-o: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise KdtuneError(f"-o: {out} cannot be written")


def best_trial(result: SearchResult) -> TrialRecord:
    best = result.best
    if best is None:
        counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
        raise KdtuneError(
            f"search {result.name!r} has no completed trial with a {result.metric} value "
            f"({counts or 'no trials'}); nothing to export"
        )
    return best


def reference_config(best: TrainConfig) -> TrainConfig:
    """The reference pipeline's hand-picked weighting, all else as in ``best``."""
    if best.level == "chain":
        return replace(
            best,
            schedule=alpha_to_schedule(REFERENCE_ALPHA["first"]),
            schedule_second=alpha_to_schedule(REFERENCE_ALPHA["second"]),
        )
    return replace(best, schedule=alpha_to_schedule(REFERENCE_ALPHA.get(best.level, 1.0)))


def holdout_check(
    cfg: TrainConfig,
    *,
    split: str,
    workdir: Path,
    results: Path,
    samples: int = 200,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` from scratch and evaluate its final model on ``split`` with a bootstrap
    interval over images."""
    from kdtune.data.coco import resolve_data
    from kdtune.evaluate import bootstrap_ap, coco_keypoint_ap, load_coco
    from kdtune.models import load_checkpoint
    from kdtune.predict import predict_detections
    from kdtune.train import fit, pick_device

    holdout = resolve_data(cfg.data, split, cfg.input_size, results)
    run_cfg = replace(cfg, eval_every=cfg.epochs)
    summary = fit(run_cfg, None, workdir=workdir, results=results, log=log)
    arch = summary["arch"]
    device = pick_device(cfg.device)
    model = load_checkpoint(Path(summary["model"]), arch).to(device)
    detections = predict_detections(model, holdout, cfg, device)
    gt = load_coco(holdout.ann_file)
    ids = holdout.image_ids.tolist()
    figures = coco_keypoint_ap(gt, detections, ids)
    low, high = bootstrap_ap(gt, detections, ids, samples=samples, seed=cfg.seed)
    return {
        "split": split,
        "images": len(holdout),
        "ap": figures["ap"],
        "ap50": figures["ap50"],
        "ap_ci95": [low, high],
        "val_ap": summary["final"].get("val/ap"),
        "schedule": cfg.schedule if cfg.level != "chain" else [cfg.schedule, cfg.schedule_second],
        "wall_s": summary["wall_s"],
    }


def export_best(
    name: str | None,
    out: Path,
    *,
    results: Path,
    tracking_uri: str | None = None,
    holdout_split: str | None = "test",
    samples: int = 200,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the best configuration of search ``name`` to ``out``; with ``holdout_split``,
    also train and evaluate it and the reference default on that split."""
    check_writable(out)
    result = load_search(results, name)
    best = best_trial(result)
    cfg = TrainConfig.from_dict(best.config, where=f"search {result.name} trial {best.trial_id}")
    if holdout_split is not None and holdout_split == cfg.val_split:
        raise KdtuneError(
            f"--holdout-split: search {result.name!r} selected its best trial on the "
            f"{holdout_split!r} split, so it cannot also be the held-out check; choose another"
        )
    run_id = _mlflow_run_id(result, best, results, tracking_uri)
    if holdout_split is not None:  # fail fast on a missing split, before hours of training
        from kdtune.data.coco import resolve_data

        resolve_data(cfg.data, holdout_split, cfg.input_size, results)
    payload: dict[str, Any] = {
        "kdtune": {
            "search": result.name,
            "trial": best.trial_id,
            "optuna_trial": best.number,
            "mlflow_run_id": run_id,
            "space_file": result.space_file,
        },
        "validation": {
            result.metric: best.value(result.metric),
            "epochs_run": best.epochs_run,
        },
        "train": cfg.to_dict(),
    }
    if holdout_split is not None:
        work = results / result.name / "export"
        say = log or (lambda _m: None)
        say(f"training the best configuration ({cfg.schedule}) for the held-out check")
        chosen = holdout_check(
            cfg,
            split=holdout_split,
            workdir=work / "best",
            results=results,
            samples=samples,
            log=log,
        )
        ref_cfg = reference_config(cfg)
        say(f"training the reference default ({ref_cfg.schedule}) the same way")
        reference = holdout_check(
            ref_cfg,
            split=holdout_split,
            workdir=work / "reference",
            results=results,
            samples=samples,
            log=log,
        )
        payload["holdout"] = {"best": chosen, "reference": reference}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(yaml.safe_dump(payload, sort_keys=False))
    os.replace(tmp, out)
    return payload


def _mlflow_run_id(
    result: SearchResult, best: TrialRecord, results: Path, uri: str | None
) -> str | None:
    """The best trial's MLflow run, where the store is at hand (None otherwise)."""
    try:
        from kdtune.tracking import load_trials, resolve_tracking_uri

        frame = load_trials(resolve_tracking_uri(uri, results), [result.name])
    except KdtuneError:
        return None
    rows = frame[frame["trial"] == best.trial_id]
    return None if rows.empty else str(rows.iloc[0]["run_id"])
