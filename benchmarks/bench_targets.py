"""Teacher targets under augmentation: how wrong warped maps are, and what exact ones cost.

1. **Error of warped against exact maps.** For the default set's first ``--images`` training
   images and each augmentation below, "exact" is the teacher run on the augmented image;
   "warped" is the teacher run on the un-augmented image, its maps warped with the same affine
   (``kdtune.augment.warp_maps``, the approximate mode). Reported: ‖warped − exact‖² / ‖exact‖²
   over the 18 keypoint heatmaps and over the 38 PAF channels, and the mean peak of the keypoint
   maps (each channel's maximum, where the exact maximum exceeds 0.3). The flip row is also the
   test of "flip doubles the views": were the teacher flip-equivariant, its error would be 0.
2. **Trial speed.** Training images/s of a second-level trial (tiny, med teacher at 128) and of
   a first-level trial (med, Lightweight-OpenPose teacher fed 368×368) with warped, bank and live
   targets, runs alternating, medians over ``--repeats`` (evaluation and the bank's build
   excluded; the build is reported on its own).
3. With ``--full-bank``: the build time and size of the bank for all 4096 training images of the
   default set at the default K, with the shipped med teacher.

    python benchmarks/bench_targets.py --repeats 3 --json results/bench/targets.json
    python benchmarks/bench_targets.py --device cuda --amp --skip-errors --levels first \
        --first-images 2048 --batch-size 512 --modes bank live

``--device cuda`` runs the trials (and builds the bank) on the GPU and reports the peak GPU
memory; ``--modes`` and ``--levels`` pick which trials run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from figures import save

from kdtune.augment import AugmentParams, apply, make_affine, normalize, sample_affine, warp_maps
from kdtune.bank import TeacherBank, run_teacher
from kdtune.config import TrainConfig
from kdtune.data.sources import resolve_data
from kdtune.models import AtInputSize, build_model, load_checkpoint
from kdtune.teachers import manifest, weights_path
from kdtune.train import fit

AUGMENTATIONS: dict[str, dict[str, float]] = {
    "scale 0.75": {"scale": 0.75, "angle": 0.0, "flip": 0.0},
    "scale 1.25": {"scale": 1.25, "angle": 0.0, "flip": 0.0},
    "rotate 20°": {"scale": 1.0, "angle": 20.0, "flip": 0.0},
    "flip": {"scale": 1.0, "angle": 0.0, "flip": 1.0},
}


def teacher_net(arch: str) -> tuple[torch.nn.Module, str]:
    """The shipped ``arch`` teacher, or a freshly initialised one (speed only) where none is."""
    if manifest(arch) is not None:
        return load_checkpoint(weights_path(arch), arch), "shipped"
    torch.manual_seed(0)
    return build_model(arch).eval(), "untrained"


def warp_errors(net: torch.nn.Module, images: int, results: Path) -> dict[str, dict[str, float]]:
    data = resolve_data("synthetic", "train", 128, results, images)
    x0 = normalize(data.images)
    n = len(data)
    base_heat, base_paf = _batched(net, x0)
    rows: dict[str, dict[str, float]] = {}
    settings: dict[str, Any] = {
        name: make_affine(
            torch.full((n,), a["scale"]),
            torch.full((n,), a["angle"]),
            torch.full((n,), a["flip"] > 0),
            128,
        )
        for name, a in AUGMENTATIONS.items()
    }
    gen = torch.Generator().manual_seed(0)
    settings["random (default ranges)"] = sample_affine(n, AugmentParams(), gen, input_size=128)
    for name, affine in settings.items():
        x, _, _ = apply(data.images, data.keypoints, data.masks, affine)
        exact_heat, exact_paf = _batched(net, x)
        warped_heat, warped_paf = warp_maps(base_heat, base_paf, affine, 128)
        rows[name] = {
            "heat_rel_sq_error": _rel(warped_heat[:, :18], exact_heat[:, :18]),
            "paf_rel_sq_error": _rel(warped_paf, exact_paf),
            "peak_exact": _peak(exact_heat, exact_heat),
            "peak_warped": _peak(warped_heat, exact_heat),
        }
    return rows


def _batched(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    heats, pafs = [], []
    for start in range(0, x.shape[0], 64):
        heat, paf = run_teacher(net, x[start : start + 64], 16, amp=False)
        heats.append(heat)
        pafs.append(paf)
    return torch.cat(heats), torch.cat(pafs)


def _rel(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((approx - exact) ** 2).sum() / (exact**2).sum())


def _peak(maps: torch.Tensor, exact: torch.Tensor) -> float:
    peaks = maps[:, :18].amax(dim=(2, 3))
    strong = exact[:, :18].amax(dim=(2, 3)) > 0.3
    return float(peaks[strong].mean()) if strong.any() else float("nan")


def trial_speeds(
    level: str,
    teacher_file: Path,
    teacher_input_size: int,
    images: int,
    repeats: int,
    amp: bool,
    results: Path,
    *,
    modes: tuple[str, ...] = ("warped", "bank", "live"),
    device: str = "cpu",
    batch_size: int = 16,
    epochs: int = 1,
    data: str = "synthetic",
    views: int = 8,
) -> dict[str, Any]:
    """Median images/s per targets mode; the bank is built before the first timed run."""
    base = TrainConfig(
        data=data,
        device=device,
        batch_size=batch_size,
        teacher_views=views,
        level=level,
        schedule="fixed:0.75",
        epochs=epochs,
        eval_every=epochs,
        max_train_images=images,
        max_val_images=4,
        teacher_checkpoint=str(teacher_file),
        teacher_input_size=teacher_input_size,
        amp=amp,
    )
    speeds: dict[str, list[float]] = {mode: [] for mode in modes}
    build: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fit(
            replace(base, teacher_targets="bank"), None, workdir=Path(tmp) / "warm", results=results
        )
        banks = sorted((results / "cache" / "banks").glob("*/bank.json"), key=_mtime)
        bank = TeacherBank(banks[-1].parent)
        build = {
            "bank_build_s": bank.meta["build_s"],
            "bank_mb": bank.nbytes / 1e6,
            "views": bank.spec.images * bank.spec.views,
            "first_run_s": time.perf_counter() - started,
        }
        for r in range(repeats):
            for mode in speeds:
                cfg = replace(base, teacher_targets=mode)
                summary = fit(cfg, None, workdir=Path(tmp) / f"{mode}-{r}", results=results)
                speeds[mode].append(float(summary["images_per_s"]))
    return {
        "images_per_s": {m: statistics.median(v) for m, v in speeds.items()},
        "runs": speeds,
        **build,
    }


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def full_bank(results: Path, views: int, amp: bool) -> dict[str, Any]:
    """Build (or find) the bank of the shipped med teacher over all default training images."""
    from kdtune.teachers.runs import open_bank, teacher_at_grid

    cfg = TrainConfig(level="second", teacher_views=views, amp=amp)
    train = resolve_data("synthetic", "train", 128, results)
    net = teacher_at_grid(load_checkpoint(weights_path("med"), "med"), cfg).eval()
    bank = open_bank(cfg, net, train, torch.device("cpu"), results, print)
    return {
        "images": len(train),
        "views": views,
        "build_s": bank.meta["build_s"],
        "mb": bank.nbytes / 1e6,
        "root": str(bank.root),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256, help="images for the error table")
    parser.add_argument("--second-images", type=int, default=256, help="second-level trial images")
    parser.add_argument("--first-images", type=int, default=64, help="first-level trial images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (student and teacher)")
    parser.add_argument("--full-bank", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-errors", action="store_true", help="no warped-vs-exact table")
    parser.add_argument(
        "--levels", nargs="+", choices=["second", "first"], default=["second", "first"]
    )
    parser.add_argument(
        "--modes", nargs="+", choices=["warped", "bank", "live"], default=["warped", "bank", "live"]
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="the trials' batch size")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed trial")
    parser.add_argument("--views", type=int, default=8, help="the bank's views per image (K)")
    parser.add_argument("--data", default="synthetic", help="synthetic (default) or a COCO root")
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = args.results.resolve()
    report: dict[str, Any] = {"threads": torch.get_num_threads(), "amp": args.amp}

    for arch, label in (("med", "second level (med teacher)"), ("teacher", "first level")):
        if args.skip_errors:
            break
        net, origin = teacher_net(arch)
        if origin != "shipped":
            print(f"{label}: no shipped {arch!r} net; error table skipped")
            continue
        rows = warp_errors(AtInputSize(net, 128, 16).eval(), args.images, results)
        report[f"warp_error_{arch}"] = rows
        print(f"\n{label}: warped vs exact teacher maps ({args.images} images)")
        print(
            f"{'augmentation':26s} {'heat err':>9s} {'paf err':>9s} "
            f"{'peak exact':>11s} {'warped':>7s}"
        )
        for name, r in rows.items():
            print(
                f"{name:26s} {r['heat_rel_sq_error']:9.3f} {r['paf_rel_sq_error']:9.3f} "
                f"{r['peak_exact']:11.3f} {r['peak_warped']:7.3f}"
            )

    if not args.skip_speed:
        results.mkdir(parents=True, exist_ok=True)
        for level, arch, size, images in (
            ("second", "med", 128, args.second_images),
            ("first", "teacher", 368, args.first_images),
        ):
            if level not in args.levels:
                continue
            net, origin = teacher_net(arch)
            file = results / f"bench_{arch}_{origin}.pt"
            # a speed measurement: the checkpoint records the input it is fed here (the
            # reference fed its teacher 368), which kdtune checks a teacher's size against
            torch.save(
                {"arch": arch, "model": net.state_dict(), "config": {"input_size": size}}, file
            )
            out = trial_speeds(
                level,
                file,
                size,
                images,
                args.repeats,
                args.amp,
                results,
                modes=tuple(args.modes),
                device=args.device,
                batch_size=args.batch_size,
                epochs=args.epochs,
                data=args.data,
                views=args.views,
            )
            report[f"speed_{level}"] = {"teacher": origin, "teacher_input": size, **out}
            speeds = ", ".join(f"{m} {v:.1f}" for m, v in out["images_per_s"].items())
            print(
                f"\n{level} level ({images} images, {arch!r} teacher at {size}, {origin}): "
                f"images/s {speeds}; "
                f"bank of {out['views']} views built in {out['bank_build_s']:.1f} s, "
                f"{out['bank_mb']:.1f} MB"
            )
    if args.full_bank:
        report["full_bank"] = full_bank(results, TrainConfig().teacher_views, args.amp)
        fb = report["full_bank"]
        print(
            f"\nfull default bank: {fb['images']} images × {fb['views']} views, "
            f"built in {fb['build_s']:.1f} s, {fb['mb']:.0f} MB"
        )
    if args.device == "cuda":
        report["device_name"] = torch.cuda.get_device_name()
        report["cuda_peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    save(report, args.json)


if __name__ == "__main__":
    main()
