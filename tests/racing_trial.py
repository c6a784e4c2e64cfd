"""A toy trial for racing confirmations: :func:`toy_trial.toy_fit`'s curve and checkpoints,
and at the last epoch the validation detections a confirmation run keeps, scored by COCOeval
on a small ground truth, so that the verdict block judges real matchings without training.

A run's keypoints are the ground truth's plus Gaussian noise (pixels) whose size depends on
the training seed only and whose draw on the seed and the schedule: configurations of equal
quality, so that a race between them stays undecided at a small margin.
``config["extra"]["ann_file"]`` names the ground truth (:func:`write_ground_truth`); a run that
trains to its last epoch appends one line ``<schedule> <seed>`` to ``config["extra"]["calls"]``
(one resumed from its final checkpoint trains nothing and writes none), so that a test counts
the runs that trained.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import toy_trial

from kdtune.evaluate import DETECTIONS_FILE, save_detections

IMAGES, PERSONS = 24, 2


def write_ground_truth(path: Path) -> Path:
    """A COCO keypoints file: IMAGES images of PERSONS persons, every keypoint labelled."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(1, IMAGES + 1):
        images.append({"id": i, "width": 256, "height": 256, "file_name": f"{i}.jpg"})
        for p in range(PERSONS):
            x0, y0 = 20 + 110 * p, 30
            xy = rng.uniform(0, 90, size=(17, 2)) + np.array([x0, y0])
            kps = np.concatenate([xy, np.full((17, 1), 2.0)], axis=1).ravel().tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "keypoints": [round(v, 2) for v in kps],
                    "num_keypoints": 17,
                    "area": 90.0 * 90.0,
                    "bbox": [x0, y0, 90.0, 90.0],
                    "iscrowd": 0,
                }
            )
    names = [f"k{j}" for j in range(17)]
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}],
    }
    path.write_text(json.dumps(doc))
    return path


def racing_fit(
    config: dict[str, Any],
    report: Callable[[int, dict[str, float], Path], None],
    *,
    workdir: Path,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    extra = config.get("extra") or {}
    seed = int(config.get("seed", 0))
    epochs = int(config["epochs"])
    ann_file = Path(extra["ann_file"])

    def keeping(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
        if epoch == epochs:
            with open(extra["calls"], "a") as calls:  # a run trained to its end
                calls.write(f"{config['schedule']} {seed}\n")
            doc = json.loads(ann_file.read_text())
            rng = np.random.default_rng([seed, zlib.crc32(str(config["schedule"]).encode())])
            sd = 2.0 + float(np.random.default_rng(seed).uniform(0, 6))
            dets = []
            for ann in doc["annotations"]:
                kps = np.asarray(ann["keypoints"], float).reshape(17, 3)
                kps[:, :2] += rng.normal(0, sd, size=(17, 2))
                dets.append(
                    {
                        "image_id": ann["image_id"],
                        "keypoints": kps.ravel().tolist(),
                        "score": float(rng.uniform(0.5, 1.0)),
                    }
                )
            ids = [im["id"] for im in doc["images"]]
            save_detections(Path(ckpt) / DETECTIONS_FILE, ann_file, ids, dets)
        report(epoch, metrics, ckpt)

    return toy_trial.toy_fit(config, keeping, workdir=workdir, resume_from=resume_from)
