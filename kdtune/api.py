"""The Python API behind the CLI commands: each function does one command's work and returns
plain data, so the CLI only parses flags and prints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kdtune.config import TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError

# CLI flag name -> TrainConfig key, for flags whose names differ.
_FLAG_KEYS = {"teacher_checkpoint": "teacher_checkpoint"}


def load_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    if not path.is_file():
        raise KdtuneError(f"{what}: no such file {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise KdtuneError(f"{path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise KdtuneError(f"{path}: not a text file") from None
    if not isinstance(raw, dict):
        raise KdtuneError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def build_train_config(config_file: Path | None, flags: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from an optional YAML file (``train:`` block or top level) plus CLI flags."""
    raw: dict[str, Any] = {}
    where = "flags"
    if config_file is not None:
        loaded = load_yaml_mapping(config_file)
        raw = (
            dict(loaded.get("train", loaded))
            if isinstance(loaded.get("train"), dict)
            else dict(loaded)
        )
        # an exported best.yaml carries provenance beside the settings
        for key in ("validation", "source", "kdtune"):
            raw.pop(key, None)
        where = str(config_file)
    given = {k: v for k, v in flags.items() if v is not None}
    if "alpha" in given and "schedule" in given:
        raise KdtuneError("--alpha and --schedule: give one of them, not both")
    if "alpha" in given:
        raw.pop("schedule", None)
        raw["schedule"] = alpha_to_schedule(given.pop("alpha"), where="--alpha")
    if "alpha_second" in given:
        raw["schedule_second"] = alpha_to_schedule(
            given.pop("alpha_second"), where="--alpha-second"
        )
    raw.update({_FLAG_KEYS.get(k, k): v for k, v in given.items()})
    return TrainConfig.from_dict(raw, where=where)


def train_run(
    config_file: Path | None,
    flags: Mapping[str, Any],
    *,
    output: Path,
    resume: bool = False,
    results: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``kdtune train``: validate everything, then train into ``output``."""
    from kdtune.train import fit

    cfg = build_train_config(config_file, flags)
    resume_from = None
    if resume:
        ckpts = sorted((output / "checkpoints").glob("epoch_*")) if output.is_dir() else []
        if not ckpts:
            raise KdtuneError(f"--resume: no checkpoint under {output / 'checkpoints'}")
        resume_from = ckpts[-1]
    elif (output / "summary.json").exists() or (output / "metrics.json").exists():
        raise KdtuneError(
            f"--output: {output} already holds a run; pass --resume or choose a new folder"
        )
    if cfg.teacher_checkpoint and not Path(cfg.teacher_checkpoint).is_file():
        raise KdtuneError(f"--teacher: no such file {cfg.teacher_checkpoint}")
    return fit(cfg, None, workdir=output, resume_from=resume_from, results=results, log=log)


def evaluate_checkpoint(
    checkpoint: Path,
    arch: str,
    data: str,
    split: str = "val",
    *,
    results: Path | None = None,
    net_input_size: int | None = None,
) -> dict[str, Any]:
    """``kdtune eval``: load a checkpoint of ``arch`` and report its COCO keypoint AP on a split.

    With ``net_input_size`` the 128×128 letterboxed images are resized to that size before the
    net (the reference fed its teacher 368×368) and the maps come back to the 16×16 grid.
    """
    import torch

    from kdtune.data.coco import resolve_data
    from kdtune.models import count_parameters, load_checkpoint
    from kdtune.train import AtInputSize, evaluate_model, pick_device

    model = load_checkpoint(Path(checkpoint), arch)
    cfg = TrainConfig(data=data)
    poseset = resolve_data(data, split, cfg.input_size, results)
    device = pick_device("auto")
    model = model.to(device)
    if net_input_size and net_input_size != cfg.input_size:
        model = AtInputSize(model, net_input_size, cfg.input_size // cfg.stride)
    with torch.inference_mode():
        metrics = evaluate_model(model, poseset, cfg, device)
    return {
        "checkpoint": str(checkpoint),
        "arch": arch,
        "split": split,
        "images": len(poseset),
        "parameters": count_parameters(model),
        **metrics,
    }


def data_ceiling(
    data: str,
    split: str = "val",
    *,
    input_size: int = 128,
    stride: int = 8,
    sigma: float = 7.0,
    results: Path | None = None,
) -> dict[str, Any]:
    """``kdtune data ceiling``: decode the ground-truth targets themselves and evaluate them."""
    from kdtune.data.coco import resolve_data
    from kdtune.evaluate import ceiling

    cfg = TrainConfig(data=data, input_size=input_size, stride=stride, sigma=sigma).validate()
    poseset = resolve_data(data, split, cfg.input_size, results)
    figures = ceiling(poseset, cfg.stride, cfg.sigma, cfg.paf_thickness)
    return {
        "data": data,
        "split": split,
        "images": len(poseset),
        "input_size": input_size,
        "stride": stride,
        **{f"val/{k}": v for k, v in figures.items()},
    }
