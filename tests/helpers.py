"""Small helpers shared by the tests (imported as a plain module from the tests folder)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from kdtune.cli import main
from kdtune.config import TrainConfig


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``kdtune ARGS`` in-process; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def small_config(synth_root: Path, **over: Any) -> TrainConfig:
    """A second-level run on the small synthetic set, quick enough for a unit test: 16 training
    and 8 validation images, 2 epochs, one thread; a teacher trained for one epoch if needed."""
    base: dict[str, Any] = dict(
        level="second",
        data=str(synth_root),
        epochs=2,
        batch_size=8,
        max_train_images=16,
        max_val_images=8,
        teacher_epochs=1,
        teacher_recipe="ground_truth",
        num_threads=1,
    )
    base.update(over)
    return TrainConfig.from_dict(base)
