"""When a benchmark may reuse a finished training run: only when everything that shapes it is
the same. One key for every benchmark that trains runs (``known_answer.py``, ``ratio_seeds.py``).

A run's key is the digest of: its whole training config; the data's fingerprint (a source's
version and settings, or a COCO root's annotations) and the number of validation images it is
scored on; the digest of its teacher's weights (shipped, given or trained by kdtune); the digest
of the kdtune package's source; the device kind, the CPU's model and the instruction set torch
uses on it, and torch's thread count. The folder
``<base>/<key>/`` holds the run and ``key.json``, the parts the key was made of (for a reader:
which commit, which teacher, which data).

The CPU is part of the key because a run is reproducible only on the same kind of machine:
measured, the same 16 (configuration, seed) runs of the quickstart's budget, same code and
thread count, scored 0.007 AP apart (sd of the per-run differences) on two machines, while on
one machine a run trained twice scored the same to the last digit (docs/known-answer.md).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

KEY_VERSION = 2  # bump with any change to what goes into the key
PACKAGE = Path(__file__).resolve().parents[1] / "kdtune"


def code_digest(package: Path = PACKAGE) -> str:
    """SHA-256 over the kdtune package's Python source (path and content of every file)."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def git_commit(repo: Path = PACKAGE.parent) -> str:
    """The checkout's commit, with ``+dirty`` when kdtune's files differ from it ("unknown"
    outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kdtune"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def teacher_digest(config: dict[str, Any], results: Path) -> str:
    """The digest of the weights the run's teacher has (found, shipped or trained and cached
    as the run itself would); "" for a level without a teacher."""
    from kdtune.config import TEACHER_OF, TrainConfig
    from kdtune.models import load_checkpoint, weights_digest
    from kdtune.teachers import resolve
    from kdtune.train import fit

    cfg = TrainConfig.from_dict(config)
    if cfg.level == "chain":
        cfg = replace(cfg, level="first")
    path = resolve(cfg, results, lambda _m: None, fit=fit)
    if path is None:
        return ""
    return weights_digest(load_checkpoint(path, TEACHER_OF[cfg.level]))


def shared_parts(config: dict[str, Any], results: Path, threads: int) -> dict[str, Any]:
    """What shapes every run of one budget besides its own config: the data, the validation
    images, the teacher, the code, the device and the threads."""
    import torch

    from kdtune.config import TrainConfig
    from kdtune.data.sources import data_fingerprint, resolve_data

    cfg = TrainConfig.from_dict(config)
    val = resolve_data(cfg.data, cfg.val_split, cfg.input_size, results, cfg.max_val_images)
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    return {
        "data": cfg.data,
        "data_fingerprint": data_fingerprint(cfg.data),
        "val_images": len(val),
        "teacher_digest": teacher_digest(config, results),
        "code_digest": code_digest(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "key_version": KEY_VERSION,
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_key(config: dict[str, Any], shared: dict[str, Any]) -> str:
    """The digest naming one run: its config and the shared parts."""
    from kdtune.config import TrainConfig

    full = TrainConfig.from_dict(config).to_dict()  # defaults filled: a spelled-out default
    full.pop("extra", None)  # is the same run; labels carried along shape nothing
    blob = json.dumps({"config": full, **shared}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_folder(base: Path, config: dict[str, Any], shared: dict[str, Any]) -> Path:
    """``base/<key>``, with ``key.json`` (what the key was made of) written on first use."""
    folder = base / run_key(config, shared)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "key.json"
    if not record.is_file():
        from kdtune.config import TrainConfig

        full = TrainConfig.from_dict(config).to_dict()
        record.write_text(json.dumps({"config": full, **shared, "commit": git_commit()}, indent=2))
    return folder


def train_or_reuse(
    config: dict[str, Any], folder: Path, results: Path
) -> tuple[dict[str, Any], bool]:
    """The run's summary: read from ``folder/summary.json`` where it finished before, else
    trained there now (resuming from its checkpoints). Returns ``(summary, reused)``."""
    summary_file = folder / "summary.json"
    if summary_file.is_file():
        return json.loads(summary_file.read_text()), True
    from kdtune.config import TrainConfig
    from kdtune.train import fit

    return fit(TrainConfig.from_dict(config), None, workdir=folder, results=results), False
