"""``kdtune export``: the best configuration of a search, checked on a held-out split.

The recommended configuration (the confirmation's best mean; without a confirmation stage,
the search's best trial) is written as a YAML that ``kdtune train --config`` reproduces.
Unless told not to, export also trains that configuration and the reference default (α = 0.25
at the second level, 0.3 at the first) with the same new seeds (never the search's or its
confirmation's) and evaluates both on a split the search never used for selection: each one's
mean AP with a 95 % interval, and their paired difference (bootstrap over the split's images
and the seeds) as one sentence. Data without test keypoints (COCO's own) is judged on a fixed,
seeded carve of train instead (:func:`held_out_part`), which the search's trials and export's
runs never train on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdtune.config import REFERENCE_ALPHA, TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, SEARCH_FILE, SearchResult, TrialRecord

if TYPE_CHECKING:
    from kdtune.evaluate import ImageMatches


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


EXPORT_SEED_OFFSET = 1000  # export's training seeds: never the search's nor its confirmation's


def recommended_trial(result: SearchResult) -> TrialRecord:
    """The trial whose configuration export writes: the confirmation's recommendation (its
    best search trial, else a confirmation run with the search's seed), or, unconfirmed, the
    search's best trial."""
    best = best_trial(result)
    if result.withheld:
        raise KdtuneError(f"search {result.name!r}: {result.withheld}; nothing to export")
    spec = result.recommended
    if result.verdict is None or spec == best.reported_schedule:
        return best
    runs = [t for t in result.trials if t.state == COMPLETE and t.reported_schedule == spec]
    if runs:
        sign = 1.0 if result.mode == "max" else -1.0
        return max(runs, key=lambda t: sign * (t.value(result.metric) or 0.0))
    for run in result.confirmations:
        if run.reported_schedule == spec:
            config = {**run.config, "seed": best.config.get("seed", 0)}
            config["eval_every"] = best.config.get("eval_every", config["eval_every"])
            return replace(run, config=config)
    raise KdtuneError(f"search {result.name!r}: its recommendation {spec} has no run to export")


def train_and_match(
    cfg: TrainConfig,
    *,
    split: str,
    workdir: Path,
    results: Path,
    log: Callable[[str], None] | None = None,
    carve: float = 0.0,
) -> tuple[ImageMatches, dict[str, Any]]:
    """Train ``cfg`` from scratch; its final model's matching on ``split`` (with ``carve``, the
    held-out part of train of that fraction: ``cfg`` never trains on it) and its summary."""
    from kdtune.data.sources import resolve_data
    from kdtune.evaluate import load_coco, match_images
    from kdtune.models import load_checkpoint
    from kdtune.predict import predict_detections
    from kdtune.train import fit, pick_device

    holdout = resolve_data(cfg.data, split, cfg.input_size, results, holdout=carve)
    summary = fit(
        replace(cfg, eval_every=cfg.epochs), None, workdir=workdir, results=results, log=log
    )
    device = pick_device(cfg.device)
    model = load_checkpoint(Path(summary["model"]), summary["arch"]).to(device)
    detections = predict_detections(model, holdout, cfg, device)
    return match_images(
        load_coco(holdout.ann_file), detections, holdout.image_ids.tolist()
    ), summary


def paired_holdout(
    best: TrainConfig,
    reference: TrainConfig,
    *,
    split: str,
    seeds: list[int],
    workdir: Path,
    results: Path,
    samples: int = 2000,
    log: Callable[[str], None] | None = None,
    carve: float = 0.0,
) -> dict[str, Any]:
    """Train ``best`` and ``reference`` with each of ``seeds`` and evaluate both on ``split``
    (with ``carve``: the held-out carve of train of that fraction):
    each one's AP per seed, mean and interval, and their paired difference (bootstrap over the
    split's images and the seeds) as a verdict sentence."""
    from kdtune.paired import mean_interval, paired_difference, sentence
    from kdtune.schedules import words
    from kdtune.verdict import label

    say = log or (lambda _m: None)
    configs = {"best": best}
    if reference.schedule != best.schedule or best.level == "chain":
        configs["reference"] = reference
    matches: dict[str, dict[int, ImageMatches]] = {name: {} for name in configs}
    summaries: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in configs}
    for s in seeds:
        for name, cfg in configs.items():
            say(
                f"held-out check: training the {name} configuration ({label(cfg.schedule)}), "
                f"seed {s}"
            )
            matches[name][s], summaries[name][s] = train_and_match(
                replace(cfg, seed=s),
                split=split,
                workdir=workdir / f"{name}_seed{s}",
                results=results,
                log=log,
                carve=carve,
            )
    out: dict[str, Any] = {"split": split, "seeds": list(seeds)}
    if carve:
        from kdtune.data.sources import carve as carve_of

        out["carve"] = carve_of(best.data, carve, results).record()
    for name, cfg in configs.items():
        per_seed = {s: m.ap() for s, m in matches[name].items()}
        low, high = mean_interval(matches[name], samples=samples)
        first = next(iter(matches[name].values()))
        out[name] = {
            "schedule": cfg.schedule
            if cfg.level != "chain"
            else [cfg.schedule, cfg.schedule_second],
            "images": len(first.image_ids),
            "ap": sum(per_seed.values()) / len(per_seed),
            "ap_per_seed": per_seed,
            "ap_ci95": [low, high],
            "val_ap": [summaries[name][s]["final"].get("val/ap") for s in seeds],
            "wall_s": sum(summaries[name][s]["wall_s"] for s in seeds),
        }
    if "reference" in configs:
        diff = paired_difference(matches["best"], matches["reference"], samples=samples)
        out["paired"] = {
            **asdict(diff),
            "sentence": sentence(
                label(best.schedule),
                f"the seed default {words(reference.schedule)}",
                diff,
            ),
        }
    else:
        out["paired"] = {
            "sentence": f"the recommendation is the seed default {label(best.schedule)}"
        }
    return out


def export_best(
    name: str | None,
    out: Path,
    *,
    results: Path,
    tracking_uri: str | None = None,
    holdout_split: str | None = "test",
    samples: int = 2000,
    seeds: int = 2,
    log: Callable[[str], None] | None = None,
    holdout_fraction: float | None = None,
) -> dict[str, Any]:
    """Write the recommended configuration of search ``name`` to ``out``; with
    ``holdout_split``, also train it and the reference default with ``seeds`` new seeds each
    and compare them, paired, on that split, or, where the data has no test keypoints or
    ``holdout_fraction`` is given, on the held-out carve of train (:func:`held_out_part`)."""
    check_writable(out)
    if holdout_fraction is not None:
        from kdtune.data.sources import check_holdout_fraction

        check_holdout_fraction(holdout_fraction, "--holdout-fraction")
    if seeds < 1:
        raise KdtuneError(f"--seeds: must be at least 1, got {seeds}")
    result = load_search(results, name)
    best = recommended_trial(result)
    cfg = TrainConfig.from_dict(best.config, where=f"search {result.name} trial {best.trial_id}")
    carve = 0.0
    if holdout_split is not None:
        holdout_split, carve = held_out_part(result.name, cfg, holdout_split, holdout_fraction)
    if holdout_split is not None and holdout_split == cfg.val_split:
        raise KdtuneError(
            f"--holdout-split: search {result.name!r} selected its best trial on the "
            f"{holdout_split!r} split, so it cannot also be the held-out check; choose another"
        )
    run_id = _mlflow_run_id(result, best, results, tracking_uri)
    if holdout_split is not None:  # fail fast on a missing split, before hours of training
        from kdtune.data.sources import resolve_data

        resolve_data(cfg.data, holdout_split, cfg.input_size, results, holdout=carve)
    payload = _payload(result, best, cfg, run_id)
    if holdout_split is not None:
        first = cfg.seed + EXPORT_SEED_OFFSET
        payload["holdout"] = paired_holdout(
            cfg,
            reference_config(cfg),
            split=holdout_split,
            seeds=list(range(first, first + seeds)),
            workdir=results / result.name / "export",
            results=results,
            samples=samples,
            log=log,
            carve=carve,
        )
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(yaml.safe_dump(payload, sort_keys=False))
    os.replace(tmp, out)
    return payload


def _payload(
    result: SearchResult, best: TrialRecord, cfg: TrainConfig, run_id: str | None
) -> dict[str, Any]:
    """What the exported file says besides the held-out check: the answer, where the
    configuration comes from, its validation figures, and the configuration itself."""
    from kdtune.answer import answer_record

    validation: dict[str, Any] = {
        result.metric: best.value(result.metric),
        "epochs_run": best.epochs_run,
    }
    if result.verdict is not None:
        top = result.verdict["ranking"][0]
        validation["confirmation"] = {
            "mean": top["mean"],
            "se": top["se"],
            "seeds": sorted(int(s) for s in top["values"]),
            "verdict": result.verdict["sentence"],
        }
    answer = answer_record(result)
    return {
        "answer": {
            "confirmed": answer["confirmed"],
            "recommended": answer["recommended"],  # the spec: the machine key
            "weighting": answer["recommended_words"],  # the same in words
            "text": answer["text"],
        },
        "kdtune": {
            "search": result.name,
            "trial": best.trial_id,
            "optuna_trial": best.number,
            "mlflow_run_id": run_id,
            "space_file": result.space_file,
            "confirmed": result.verdict is not None,
        },
        "validation": validation,
        "train": cfg.to_dict(),
    }


def held_out_part(
    search: str, cfg: TrainConfig, split: str, fraction: float | None
) -> tuple[str, float]:
    """Where export's held-out check judges: ``(split, carve fraction)``.

    The ``split`` asked for (``test`` by default) where the data has test keypoints and no
    ``fraction`` is given; else the carve of train (:data:`~kdtune.data.sources.HOLDOUT_SPLIT`):
    of ``fraction``, or of the search's own (``holdout_fraction`` of its trials: the default
    where its data has no test keypoints). A carve larger than the search's own is refused:
    its trials trained on part of it."""
    from kdtune.data.sources import HOLDOUT_SPLIT, has_test_keypoints

    if fraction is None and has_test_keypoints(cfg.data):
        return split, 0.0
    own = cfg.holdout_fraction
    if fraction is None:
        if not own:
            raise KdtuneError(
                f"--holdout-fraction: the data of search {search!r} has no test keypoints and its "
                "trials trained on all of train; search again with train.holdout_fraction "
                "(docs/coco.md), or pass --no-holdout"
            )
        return HOLDOUT_SPLIT, own
    if not own:
        raise KdtuneError(
            f"--holdout-fraction: the trials of search {search!r} trained on all of train; "
            "search again with train.holdout_fraction (docs/coco.md), or pass --no-holdout"
        )
    if fraction > own:
        raise KdtuneError(
            f"--holdout-fraction: {fraction:g} is more than search {search!r} held out of its "
            f"trials ({own:g} of train): they trained on part of it; give at most {own:g}"
        )
    return HOLDOUT_SPLIT, fraction


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
