"""A checkpoint file's COCO keypoint AP on a split: ``kdtune eval``, and the figures of a
packed teacher. It loads the checkpoint and the split, then hands both to
:func:`kdtune.predict.evaluate_model` (a net in memory, on a split), which scores with
:mod:`kdtune.evaluate` (COCOeval). Imports torch only inside its function, so that
``kdtune.api`` can re-export it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdtune.config import TrainConfig


def evaluate_checkpoint(
    checkpoint: Path,
    arch: str,
    data: str,
    split: str = "val",
    *,
    results: Path | None = None,
    net_input_size: int | None = None,
    decoder: str = "kdtune",
) -> dict[str, Any]:
    """``kdtune eval``: load a checkpoint of ``arch`` and report its COCO keypoint AP on a split.

    The net is fed the input size its checkpoint was trained at
    (:func:`kdtune.models.trained_input_size`: 368 for the public Lightweight-OpenPose layout):
    the 128×128 letterboxed images are resized to it and its maps decoded at its own grid. An
    explicit ``net_input_size`` that contradicts the checkpoint is a one-line KdtuneError.
    ``decoder``: how maps become persons (``kdtune`` or ``reference``, see
    :data:`kdtune.config.DECODERS`).
    """
    import torch

    from kdtune.data.sources import resolve_data
    from kdtune.errors import KdtuneError
    from kdtune.models import AtInputSize, count_parameters, load_checkpoint, trained_input_size
    from kdtune.predict import evaluate_model, pick_device

    cfg = TrainConfig(data=data, decoder=decoder).validate()
    model = load_checkpoint(Path(checkpoint), arch)
    trained, what = trained_input_size(checkpoint)
    if net_input_size is None:
        net_input_size = trained if trained != cfg.input_size else None
    elif net_input_size != trained:
        raise KdtuneError(
            f"--teacher-input-size: {net_input_size} contradicts {str(checkpoint)!r} ({what}); "
            f"give {trained} or leave it out"
        )
    poseset = resolve_data(data, split, cfg.input_size, results)
    device = pick_device("auto")
    model = model.to(device)
    if net_input_size and net_input_size != cfg.input_size:
        model = AtInputSize(model, net_input_size, grid=None)
    with torch.inference_mode():
        metrics = evaluate_model(
            model, poseset, cfg, device, prefix=split, net_input_size=net_input_size
        )
    return {
        "checkpoint": str(checkpoint),
        "arch": arch,
        "split": split,
        "decoder": decoder,
        "images": len(poseset),
        "net_input_size": net_input_size or cfg.input_size,  # what the net was fed
        "parameters": count_parameters(model),
        **metrics,
    }
