"""Does ``torch.compile`` speed up the student's training step? Eager against compiled.

The tiny student's forward, loss, backward and Adam step (the trial's model-only bound: one
fixed batch, no augmentation, targets or teacher), channels_last, with ``--amp`` under bf16
autocast. Eager and compiled runs alternate, ``--steps`` steps each, and the figures are medians
over ``--repeats``; the compiled net's first step (its compilation) is reported on its own. No
data pipeline makes a trial faster than this step, so a compile that does not lift it cannot
help the trial.

    python benchmarks/bench_compile.py --repeats 5 --amp
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from figures import emit

from kdtune.losses import kd_loss
from kdtune.models import build_model


def make_step(compiled: bool, batch: int, amp: bool, device: torch.device) -> Callable[[], None]:
    """One training step of a fresh tiny student on one fixed batch."""
    torch.manual_seed(0)
    model = build_model("tiny").to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
    heat = torch.rand(batch, 19, 16, 16, device=device)
    paf = torch.rand(batch, 38, 16, 16, device=device) * 2 - 1

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = net(x)
        outputs = [(h.float(), p.float()) for h, p in outputs]
        loss = kd_loss(outputs, heat, paf, None, alpha=1.0)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps, the device's queue drained before each clock reading."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = {
        "eager": make_step(False, args.batch_size, args.amp, device),
        "compiled": make_step(True, args.batch_size, args.amp, device),
    }
    first = {name: timed(step, 1, device) for name, step in steps.items()}  # compiles
    for step in steps.values():
        timed(step, 3, device)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.repeats):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            rates[name].append(
                args.steps * args.batch_size / timed(steps[name], args.steps, device)
            )
        print(f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in rates.items()))
    median = {name: statistics.median(v) for name, v in rates.items()}
    figures = {
        "images_per_s": median,
        "compiled_over_eager": median["compiled"] / median["eager"],
        "first_step_s": first,
        "runs": rates,
        "batch_size": args.batch_size,
        "amp": args.amp,
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "steps": args.steps,
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()
