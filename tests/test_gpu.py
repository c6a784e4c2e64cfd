"""The CUDA path of a trial: training, resume, bf16 autocast, teacher targets on the device.

Marked ``gpu`` (left out of the default run) and skipped where no CUDA device is present;
``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import small_config

from kdtune.models import build_model
from kdtune.train import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

KEYS = ("train/loss", "train/student_loss", "val/loss", "val/ap", "perf/images_per_s")


def _finite(metrics: dict[str, Any]) -> bool:
    return all(math.isfinite(float(metrics[k])) for k in KEYS)


@pytest.mark.parametrize("targets", ["bank", "live", "warped"])
def test_a_short_trial_trains_on_cuda(synth_root: Path, tmp_path: Path, targets: str) -> None:
    cfg = small_config(synth_root, device="cuda", alpha=0.25, teacher_targets=targets)
    seen: list[dict[str, float]] = []
    summary = fit(cfg, lambda e, m, c: seen.append(m), workdir=tmp_path / "run", results=tmp_path)
    assert seen and all(_finite(m) for m in seen)
    state = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert summary["parameters"] == 111_769 and state["arch"] == "tiny"


def test_resume_on_cuda_continues_exactly(synth_root: Path, tmp_path: Path) -> None:
    cfg = small_config(synth_root, device="cuda", alpha=1.0, epochs=2, eval_every=1)
    whole = fit(cfg, None, workdir=tmp_path / "whole", results=tmp_path)
    stopped: list[Path] = []

    class Stop(Exception):
        pass

    def stop(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
        stopped.append(ckpt)
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop, workdir=tmp_path / "parts", results=tmp_path)
    resumed = fit(cfg, None, workdir=tmp_path / "parts", resume_from=stopped[0], results=tmp_path)
    # cuDNN's kernels need not be bitwise deterministic: close, not equal
    assert resumed["final"]["val/loss"] == pytest.approx(whole["final"]["val/loss"], rel=1e-2)
    history = json.loads((tmp_path / "parts" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_bf16_autocast_trial_on_cuda(synth_root: Path, tmp_path: Path) -> None:
    net = build_model("tiny").cuda().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(4, 3, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        heat, paf = net(x)[-1]
    assert heat.dtype == paf.dtype == torch.bfloat16 and heat.shape == (4, 19, 16, 16)
    cfg = small_config(synth_root, device="cuda", amp=True, alpha=0.25)
    seen: list[dict[str, float]] = []
    fit(cfg, lambda e, m, c: seen.append(m), workdir=tmp_path / "run", results=tmp_path)
    assert seen and all(_finite(m) for m in seen)
    assert torch.cuda.max_memory_allocated() > 0


def test_the_bank_lives_in_gpu_memory_and_gives_the_mapped_maps(
    synth_root: Path, tmp_path: Path
) -> None:
    """A bank-mode trial on CUDA copies its bank into the GPU (no host copy per step); the maps
    gathered there are the memory-mapped ones."""
    from kdtune.bank import TeacherBank

    logs: list[str] = []
    cfg = small_config(synth_root, device="cuda", alpha=0.25, teacher_targets="bank")
    fit(cfg, None, workdir=tmp_path / "run", results=tmp_path, log=logs.append)
    assert any("teacher bank copied into cuda" in line for line in logs), logs
    root = next((tmp_path / "cache" / "banks").iterdir())
    bank = TeacherBank(root)
    index, view = torch.tensor([0, 5, 3]), torch.tensor([1, 0, 7])
    mapped = bank.maps(index, view, torch.device("cuda"))
    assert bank.resident_on(torch.device("cuda"))
    held = bank.maps(index.cuda(), view.cuda(), torch.device("cuda"))
    assert all(torch.equal(a, b) for a, b in zip(mapped, held, strict=True))


def test_a_compiled_trial_on_cuda(synth_root: Path, tmp_path: Path) -> None:
    cfg = small_config(
        synth_root, device="cuda", amp=True, alpha=0.25, epochs=1, torch_compile=True
    )
    seen: list[dict[str, float]] = []
    fit(cfg, lambda e, m, c: seen.append(m), workdir=tmp_path / "run", results=tmp_path)
    assert seen and all(_finite(m) for m in seen)
