"""Packing and listing the teachers kdtune ships: ``kdtune teachers list`` and
``kdtune teachers pack RUN`` (float16 weights and their record: config, data and measured AP).
Imports torch only inside its functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdtune.checkpoint_ap import evaluate_checkpoint
from kdtune.config import TrainConfig
from kdtune.errors import KdtuneError
from kdtune.teachers.shipped import (
    annotations_digest,
    manifest,
    manifest_path,
    teacher_dir,
    weights_path,
)


def list_teachers() -> list[dict[str, Any]]:
    """``kdtune teachers list``: the shipped teachers and what was measured of them."""
    from kdtune.data.sources import SOURCES
    from kdtune.models import ARCHS

    rows = []
    for source in (name for name, s in SOURCES.items() if s.shipped_teachers):
        for arch in ARCHS:
            record = manifest(arch, source)
            if record is not None:
                rows.append(_row(arch, source, record))
    return rows


def _row(arch: str, source: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": arch,
        "weights": str(weights_path(arch, source)),
        "data": record["data"]["version"],
        "val/ap": record["val"]["val/ap"],
        "test/ap": record["test"]["test/ap"],
        "produced_by": record["produced_by"],
    }


def pack_teacher(
    run: Path, *, out: Path | None = None, results: Path | None = None
) -> dict[str, Any]:
    """``kdtune teachers pack RUN``: a run trained on a data source kdtune ships teachers for
    (``kdtune train``) becomes a shipped teacher: float16 weights plus a record of its config,
    data and AP, in that source's teacher folder (or ``out``)."""
    import json
    import os

    import torch

    from kdtune.data.sources import SOURCES, data_root, parse_data

    model_file = Path(run) / "model.pt"
    if not model_file.is_file():
        raise KdtuneError(f"teachers pack: no model.pt in {run}")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
        arch, config = state["arch"], TrainConfig.from_dict(state["config"])
    except Exception as exc:
        raise KdtuneError(f"teachers pack: {model_file} is not a kdtune run ({exc})") from None
    spec = parse_data(config.data)
    if spec is None or not spec.source.shipped_teachers:
        shipped = ", ".join(name for name, s in SOURCES.items() if s.shipped_teachers)
        raise KdtuneError(
            f"teachers pack: {run} was trained on {config.data!r}; "
            f"kdtune ships teachers of {shipped} only"
        )
    source = spec.source.name
    out = Path(out or teacher_dir(source))
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{arch}.pt"
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    tmp = weights.with_suffix(".pt.tmp")
    torch.save({"arch": arch, "model": half}, tmp)
    figures = {
        split: {
            k: v
            for k, v in evaluate_checkpoint(tmp, arch, config.data, split, results=results).items()
            if k.startswith(f"{split}/")
        }
        for split in ("val", "test")
    }
    record = {
        "arch": arch,
        "produced_by": (
            f"kdtune train --config {_relative(manifest_path(arch, source))} --output RUN"
            " && kdtune teachers pack RUN"
        ),
        "train": config.to_dict(),  # so that `kdtune train --config <this file>` reproduces it
        "data": {
            "name": source,
            "settings": spec.canonical,
            "version": spec.folder,
            "train_annotations_sha256": annotations_digest(data_root(config.data, results)),
        },
        "epochs_trained": int(state.get("epoch", config.epochs)),
        "dtype": "float16",
        **figures,
    }
    os.replace(tmp, weights)
    (out / f"{arch}.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"weights": str(weights), **record}


def _relative(path: Path) -> str:
    """``path`` as the repository names it (``kdtune/teachers/...``)."""
    parts = path.parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("kdtune") :])
