"""A COCO-scale rehearsal: the data cache, the teacher bank and an epoch at ``--images`` training
images (64 K by default, COCO train2017's persons at about 56 K).

The training split is the synthetic default's (``source_root('synthetic')``) tiled to the size
asked: every image linked (not copied) under a new id with its annotations, so that what scales
with the image count (decoding and the decoded cache, the bank of K views, an epoch) is measured
at that count; the images repeat, so the AP means nothing here. Measured, each with its wall time:

- the data cache: decoding the split into its cached tensors (size on disk);
- the bank at K views (``--views``, 8): the teacher's maps of every view (size on disk; whether
  it was copied into the GPU's memory, where it fits: ``resident``);
- one epoch of a second-level trial at ``--batch-size`` (bf16 with ``--amp``) from that bank;
- peak memory: the process's resident set (host) and torch's peak on the GPU.

    python benchmarks/rehearsal.py --device cuda --amp --images 65536 --batch-size 1024
    python benchmarks/rehearsal.py --images 64 --batch-size 8     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import emit

SHIPPED_MED = Path(__file__).resolve().parents[1] / "kdtune" / "teachers" / "med.pt"


def tiled_root(base: Path, out: Path, images: int) -> Path:
    """A COCO root at ``out`` whose training split is ``base``'s repeated to ``images`` images
    (linked), its validation split ``base``'s."""
    if (out / "annotations" / "person_keypoints_train2017.json").is_file():
        return out
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "train2017").mkdir(exist_ok=True)
    doc = json.loads((base / "annotations" / "person_keypoints_train2017.json").read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    new_images, new_anns, ann_id = [], [], 1
    for i in range(images):
        src = doc["images"][i % len(doc["images"])]
        name = f"{i + 1:012d}.jpg"
        link = out / "train2017" / name
        if not link.exists():
            os.symlink(base / "train2017" / src["file_name"], link)
        new_images.append({**src, "id": i + 1, "file_name": name})
        for ann in by_image.get(src["id"], []):
            new_anns.append({**ann, "id": ann_id, "image_id": i + 1})
            ann_id += 1
    tiled = {**doc, "images": new_images, "annotations": new_anns}
    (out / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(tiled))
    for split in ("val", "test"):
        name = f"person_keypoints_{split}2017.json"
        if not (out / f"{split}2017").exists():
            os.symlink(base / f"{split}2017", out / f"{split}2017")
            os.symlink(base / "annotations" / name, out / "annotations" / name)
    return out


def folder_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=65536)
    p.add_argument("--views", type=int, default=8, help="K: bank views per image")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--base", default="synthetic", help="the data source whose images are tiled")
    p.add_argument("--results", type=Path, default=Path("results/bench"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from kdtune.config import TrainConfig
    from kdtune.data.sources import resolve_data, source_root
    from kdtune.models import load_checkpoint
    from kdtune.paths import cache_dir
    from kdtune.teachers import resolve
    from kdtune.teachers.runs import open_bank, teacher_at_grid
    from kdtune.train import fit, pick_device

    results = args.results.resolve()
    cache = cache_dir(results)
    figures: dict[str, Any] = {"images": args.images, "views": args.views, "device": args.device}
    t0 = time.perf_counter()
    base = source_root(args.base, cache) if not Path(args.base).is_dir() else Path(args.base)
    root = tiled_root(base, cache / f"rehearsal-{args.images}", args.images)
    figures["tiling_s"] = time.perf_counter() - t0

    cfg = TrainConfig(
        data=str(root),
        level="second",
        epochs=1,
        eval_every=1,
        max_val_images=64,
        teacher_checkpoint=str(SHIPPED_MED),  # kdtune's med teacher: none is trained here
        teacher_views=args.views,
        batch_size=args.batch_size,
        lr_scaling="sqrt",
        amp=args.amp,
        device=args.device,
    ).validate()
    before = folder_bytes(cache)
    t0 = time.perf_counter()
    train = resolve_data(cfg.data, "train", cfg.input_size, results, None)
    figures["data_cache"] = {
        "images": len(train),
        "decode_s": time.perf_counter() - t0,
        "bytes": folder_bytes(cache) - before,
        "in_memory_bytes": sum(
            t.element_size() * t.nelement() for t in (train.images, train.keypoints, train.masks)
        ),
    }
    device = pick_device(cfg.device)
    teacher_path = resolve(cfg, results, print, fit=fit)
    assert teacher_path is not None
    net = teacher_at_grid(load_checkpoint(teacher_path, "med"), cfg).to(device).eval()
    before = folder_bytes(cache)
    t0 = time.perf_counter()
    bank = open_bank(cfg, net, train, device, results, print)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    resident = bank.resident_on(device)
    figures["bank"] = {
        "build_s": built,
        "bytes": folder_bytes(cache) - before,
        "resident_on_device": resident,
        "copy_to_device_s": time.perf_counter() - t0 if resident else None,
    }
    del bank, net
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = fit(cfg, None, workdir=Path(tmp), results=results)
        whole = time.perf_counter() - t0
    speed = float(summary["images_per_s"])
    figures["epoch"] = {
        "images_per_s": speed,
        "train_s": len(train) / speed if speed else None,
        "fit_wall_s": whole,  # set-up (the cache and bank found), the epoch, one evaluation
        "batch_size": args.batch_size,
        "amp": args.amp,
    }
    figures["peak_memory"] = {
        "host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cuda_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    emit(figures, args.json)
    return figures


if __name__ == "__main__":
    main()
