"""Shared fixtures: the real COCO mini set (where present) and a small synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest

MINIPOSE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-minipose"


@pytest.fixture(scope="session")
def minipose() -> Path:
    """``../shared/data/coco-minipose`` (60 real COCO images); the test is skipped without it."""
    if not (MINIPOSE / "annotations").is_dir():
        pytest.skip(f"real COCO mini set not found at {MINIPOSE}")
    return MINIPOSE


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO-format set (48 train, 24 val, 8 test images), written once."""
    from kdtune.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth"), n_train=48, n_val=24, n_test=8, seed=0)
