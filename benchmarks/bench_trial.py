"""Speed of a second-level trial (med → tiny) against a reference-style loop, side by side.

Both train the tiny student with α = 0.25 on the same decoded synthetic training images:

- kdtune: ``train.fit`` as a search trial runs it: batched targets and augmentation in torch,
  the teacher's exact maps of each augmented view read from the bank (built once before the
  first timed run, as a search does on its driver), channels_last, batch 16 (and, with
  ``--amp``, bf16 autocast);
- reference: targets built per sample with Python loops inside a DataLoader, batch 8, the med
  teacher run live in fp32 on every batch.

Runs alternate (kdtune, reference, model only, kdtune, ...) so that the machine's noise hits
all three; the figures are medians over ``--repeats``. Training images per second only (no
evaluation).

"Model only" trains the same tiny student, with kdtune's batch size, precision and memory
format, on one fixed batch with fixed targets: no augmentation, no targets, no teacher. No loop
at that batch size and precision can beat it, so ``model_only / reference`` bounds the ratio any
data pipeline could reach on this machine.

    python benchmarks/bench_trial.py --repeats 3
    python benchmarks/bench_trial.py --device cuda --amp --batch-size 512 --images 4096

With ``--compile`` kdtune's trial runs compiled (``torch_compile``); the warm-up fit pays the
compilation, the timed fits reuse it. With ``--device cuda`` all three run on the GPU (the
reference loop still builds its targets on the CPU, in its DataLoader, as the reference does)
and the peak GPU memory is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import emit
from reference_loop import run_reference

from kdtune.config import TrainConfig
from kdtune.data.sources import resolve_data
from kdtune.models import build_model
from kdtune.train import fit, pick_device


def kdtune_speed(cfg: TrainConfig, work: Path, results: Path) -> float:
    """Median training images/s over the epochs of one fit (evaluation excluded)."""
    summary = fit(cfg, None, workdir=work, results=results)
    return float(summary["images_per_s"])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only_speed(cfg: TrainConfig, steps: int) -> float:
    """Images/s of the tiny student's forward, loss, backward and Adam step alone."""
    from kdtune.losses import kd_loss

    device = pick_device(cfg.device)
    torch.manual_seed(0)
    model = build_model("tiny").to(device)
    x = torch.randn(cfg.batch_size, 3, cfg.input_size, cfg.input_size, device=device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    grid = cfg.input_size // cfg.stride
    heat = torch.rand(cfg.batch_size, 19, grid, grid, device=device)
    paf = torch.rand(cfg.batch_size, 38, grid, grid, device=device) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        if cfg.amp:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                outputs = model(x)
        else:
            outputs = model(x)
        outputs = [(h.float(), p.float()) for h, p in outputs]
        loss = kd_loss(outputs, heat, paf, None, alpha=1.0)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="kdtune epochs per repeat")
    parser.add_argument("--images", type=int, default=256, help="training images")
    parser.add_argument(
        "--reference-steps", type=int, default=40, help="reference batches (of 8) per repeat"
    )
    parser.add_argument("--model-steps", type=int, default=30, help="model-only batches per repeat")
    parser.add_argument("--batch-size", type=int, default=16, help="kdtune's batch size")
    parser.add_argument(
        "--reference-batch-size", type=int, default=8, help="the reference loop's batch size"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", default="synthetic", help="synthetic (default) or a COCO root")
    parser.add_argument("--amp", action="store_true", help="kdtune with bf16 autocast")
    parser.add_argument(
        "--compile", action="store_true", help="kdtune's trial with torch_compile (timed warm)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = args.results.resolve()

    data = resolve_data(args.data, "train", 128, results, args.images)
    teacher_path = results / "bench_med_teacher.pt"
    if not teacher_path.is_file():
        teacher_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": "med", "model": build_model("med").state_dict()}, teacher_path)
    cfg = TrainConfig(
        data=args.data,
        level="second",
        schedule="fixed:0.75",
        epochs=args.epochs,
        eval_every=args.epochs,
        max_train_images=args.images,
        max_val_images=8,
        teacher_checkpoint=str(teacher_path),
        amp=args.amp,
        batch_size=args.batch_size,
        num_threads=args.threads,
        device=args.device,
        torch_compile=args.compile,
    ).validate()
    device = pick_device(args.device)
    # warm-up: decode the data, compute and cache the teacher's maps, let oneDNN pick kernels
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(cfg, None, workdir=Path(tmp), results=results)
    warmup_s = time.perf_counter() - started

    ours, theirs, bound = [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(kdtune_speed(cfg, Path(tmp), results))
        teacher = build_model("med")
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True)["model"])
        theirs.append(
            run_reference(
                build_model("tiny").to(device),
                teacher.to(device),
                data,
                steps=args.reference_steps,
                batch_size=args.reference_batch_size,
                device=device,
            )
        )
        bound.append(model_only_speed(cfg, steps=args.model_steps))
        print(
            f"repeat {r + 1}: kdtune {ours[-1]:.1f} img/s, reference {theirs[-1]:.1f} img/s, "
            f"model only {bound[-1]:.1f} img/s",
            flush=True,
        )
    figures = {
        "kdtune_images_per_s": statistics.median(ours),
        "reference_images_per_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
        "model_only_images_per_s": statistics.median(bound),
        "model_only_ratio": statistics.median(bound) / statistics.median(theirs),
        "kdtune_share_of_model_only": statistics.median(ours) / statistics.median(bound),
        "batch_size": cfg.batch_size,
        "reference_batch_size": args.reference_batch_size,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda_peak_memory_bytes": (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
        "repeats": args.repeats,
        "threads": args.threads,
        "amp": args.amp,
        "compile": args.compile,
        "images": args.images,
        "first_fit_with_teacher_maps_s": warmup_s,
        "kdtune_all": ours,
        "reference_all": theirs,
        "model_only_all": bound,
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()
