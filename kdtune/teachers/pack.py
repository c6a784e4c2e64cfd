"""Packing and listing the teachers kdtune ships: ``kdtune teachers list`` and
``kdtune teachers pack RUN`` (float16 weights and their record: config, data and measured AP).
Imports torch only inside its functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdtune.checkpoint_ap import evaluate_checkpoint
from kdtune.config import TrainConfig
from kdtune.errors import KdtuneError
from kdtune.teachers.shipped import HERE, annotations_digest, manifest, weights_path


def list_teachers() -> list[dict[str, Any]]:
    """``kdtune teachers list``: the shipped teachers and what was measured of them."""
    from kdtune.models import ARCHS

    rows = []
    for arch in ARCHS:
        record = manifest(arch)
        if record is None:
            continue
        rows.append(
            {
                "arch": arch,
                "weights": str(weights_path(arch)),
                "data": record["data"]["version"],
                "val/ap": record["val"]["val/ap"],
                "test/ap": record["test"]["test/ap"],
                "produced_by": record["produced_by"],
            }
        )
    return rows


def pack_teacher(
    run: Path, *, out: Path | None = None, results: Path | None = None
) -> dict[str, Any]:
    """``kdtune teachers pack RUN``: a run trained on the synthetic default (``kdtune train``)
    becomes a shipped teacher: float16 weights plus a record of its config, data and AP."""
    import json
    import os

    import torch

    from kdtune.data.sources import SYNTHETIC, SYNTHETIC_DIR, data_root

    model_file = Path(run) / "model.pt"
    if not model_file.is_file():
        raise KdtuneError(f"teachers pack: no model.pt in {run}")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
        arch, config = state["arch"], TrainConfig.from_dict(state["config"])
    except Exception as exc:
        raise KdtuneError(f"teachers pack: {model_file} is not a kdtune run ({exc})") from None
    if config.data != SYNTHETIC:
        raise KdtuneError(
            f"teachers pack: {run} was trained on {config.data!r}; "
            "kdtune ships teachers of the synthetic default only"
        )
    out = Path(out or HERE)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{arch}.pt"
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    tmp = weights.with_suffix(".pt.tmp")
    torch.save({"arch": arch, "model": half}, tmp)
    figures = {
        split: {
            k: v
            for k, v in evaluate_checkpoint(tmp, arch, SYNTHETIC, split, results=results).items()
            if k.startswith(f"{split}/")
        }
        for split in ("val", "test")
    }
    record = {
        "arch": arch,
        "produced_by": (
            f"kdtune train --config kdtune/teachers/{arch}.json --output RUN"
            " && kdtune teachers pack RUN"
        ),
        "train": config.to_dict(),  # so that `kdtune train --config <this file>` reproduces it
        "data": {
            "name": SYNTHETIC,
            "version": SYNTHETIC_DIR,
            "train_annotations_sha256": annotations_digest(data_root(SYNTHETIC, results)),
        },
        "epochs_trained": int(state.get("epoch", config.epochs)),
        "dtype": "float16",
        **figures,
    }
    os.replace(tmp, weights)
    (out / f"{arch}.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"weights": str(weights), **record}
