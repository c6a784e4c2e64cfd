"""Teachers kdtune ships for its own synthetic default, so that no first run waits for one.

Each shipped teacher is ``<arch>.pt`` (a float16 ``state_dict``) beside ``<arch>.json``: the
command that produced it, its training config, the data it was trained on (the data's version,
its settings' digest included, and the digest of its training annotations) and its measured val
and test AP. The synthetic default's teachers lie beside this module, another source's in a
folder named by it (``synthetic-cocolike/med.pt``). :func:`shipped_teacher` hands one out only
where it fits a run: a source kdtune ships teachers for, at the settings the teacher was
trained on, with the same input size, stride and target shapes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kdtune.data.sources import SYNTHETIC

HERE = Path(__file__).resolve().parent
# the settings a teacher's maps depend on; a run must share them to use a shipped teacher
FIT_KEYS: tuple[str, ...] = ("input_size", "stride", "sigma", "paf_thickness")


def teacher_dir(source: str = SYNTHETIC) -> Path:
    """Where the teachers shipped for data source ``source`` lie: beside this module for the
    synthetic default, in a folder named by the source for the others."""
    return HERE if source == SYNTHETIC else HERE / source


def manifest_path(arch: str, source: str = SYNTHETIC) -> Path:
    return teacher_dir(source) / f"{arch}.json"


def weights_path(arch: str, source: str = SYNTHETIC) -> Path:
    return teacher_dir(source) / f"{arch}.pt"


def manifest(arch: str, source: str = SYNTHETIC) -> dict[str, Any] | None:
    """The record of the ``arch`` teacher shipped for ``source``, or None if kdtune ships
    none."""
    path = manifest_path(arch, source)
    if not (path.is_file() and weights_path(arch, source).is_file()):
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def shipped_source(cfg: Any) -> str:
    """The data source whose shipped teachers run ``cfg`` (a TrainConfig) would use."""
    from kdtune.data.sources import parse_data

    spec = parse_data(cfg.data)
    return SYNTHETIC if spec is None else spec.source.name


def shipped_teacher(arch: str, cfg: Any) -> tuple[Path | None, str]:
    """``(weights, why)``: the shipped ``arch`` teacher if it fits run ``cfg`` (a TrainConfig),
    else ``(None, the reason in words)``."""
    from kdtune.data.sources import SOURCES, parse_data

    spec = parse_data(cfg.data)
    if spec is None or not spec.source.shipped_teachers:
        shipped = ", ".join(name for name, s in SOURCES.items() if s.shipped_teachers)
        return None, f"kdtune ships teachers for {shipped} only, not {cfg.data!r}"
    record = manifest(arch, spec.source.name)
    if record is None:
        return None, f"kdtune ships no {arch} net for {spec.source.name}"
    if record["data"]["version"] != spec.folder:
        return None, (
            f"the shipped {arch} teacher was trained on {record['data']['version']}, "
            f"this run's data is {spec.folder} ({spec.canonical})"
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
    return weights_path(arch, spec.source.name), "fits"


def annotations_digest(root: Path, split: str = "train") -> str:
    """SHA-256 of a COCO root's ``person_keypoints_{split}2017.json``: what a teacher saw."""
    path = root / "annotations" / f"person_keypoints_{split}2017.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()
