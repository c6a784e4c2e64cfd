"""Teachers kdtune ships for its own synthetic default, so that no first run waits for one.

Each shipped teacher is ``<arch>.pt`` (a float16 ``state_dict``) beside ``<arch>.json``: the
command that produced it, its training config, the data it was trained on (the synthetic set's
version and the digest of its training annotations) and its measured val and test AP.
:func:`shipped_teacher` hands one out only where it fits a run: the synthetic default, with the
same input size, stride and target shapes it was trained with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# the settings a teacher's maps depend on; a run must share them to use a shipped teacher
FIT_KEYS: tuple[str, ...] = ("input_size", "stride", "sigma", "paf_thickness")


def manifest_path(arch: str) -> Path:
    return HERE / f"{arch}.json"


def weights_path(arch: str) -> Path:
    return HERE / f"{arch}.pt"


def manifest(arch: str) -> dict[str, Any] | None:
    """The record of the shipped ``arch`` teacher, or None if kdtune ships none."""
    path = manifest_path(arch)
    if not (path.is_file() and weights_path(arch).is_file()):
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def shipped_teacher(arch: str, cfg: Any) -> tuple[Path | None, str]:
    """``(weights, why)``: the shipped ``arch`` teacher if it fits run ``cfg`` (a TrainConfig),
    else ``(None, the reason in words)``."""
    from kdtune.data.sources import SYNTHETIC, SYNTHETIC_DIR

    record = manifest(arch)
    if record is None:
        return None, f"kdtune ships no {arch} teacher"
    if cfg.data != SYNTHETIC:
        return (
            None,
            f"the shipped {arch} teacher was trained on the synthetic default, not {cfg.data!r}",
        )
    if record["data"]["version"] != SYNTHETIC_DIR:
        return None, (
            f"the shipped {arch} teacher was trained on {record['data']['version']}, "
            f"the synthetic default is now {SYNTHETIC_DIR}"
        )
    trained = record["train"]
    for key in FIT_KEYS:
        if trained[key] != getattr(cfg, key):
            return (
                None,
                f"the shipped {arch} teacher was trained with {key} {trained[key]}, "
                f"this run uses {getattr(cfg, key)}",
            )
    if arch == "teacher" and cfg.teacher_input_size not in ("auto", trained["input_size"]):
        return None, (
            f"the shipped teacher was trained at input {trained['input_size']}, "
            f"this run feeds it {cfg.teacher_input_size}"
        )
    return weights_path(arch), "fits"


def annotations_digest(root: Path, split: str = "train") -> str:
    """SHA-256 of a COCO root's ``person_keypoints_{split}2017.json``: what a teacher saw."""
    path = root / "annotations" / f"person_keypoints_{split}2017.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()
