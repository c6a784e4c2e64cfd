"""A kill while a cache is being written: the data cache, the teacher bank, a trained teacher,
a run's final model. The write is interrupted mid-file (as a kill would stop it); nothing
truncated is ever found under the cache's name, and the next run builds it again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import small_config

from kdtune import train
from kdtune.bank import build_bank
from kdtune.data.coco import load_split
from kdtune.models import build_model, weights_digest
from kdtune.teachers.runs import bank_spec, teacher_at_grid


class Killed(BaseException):
    """Stands for the kill: not an Exception, so no handler of the code under test eats it."""


def killed_mid_write(real: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.save`` that writes half its bytes, then dies."""

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        import io

        buffer = io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, str | Path):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise Killed

    return save


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_data_cache(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.save
    monkeypatch.setattr(torch, "save", killed_mid_write(real))
    with pytest.raises(Killed):
        load_split(synth_root, "val", 128, tmp_path, max_images=4)
    assert [n for n in files(tmp_path) if n.endswith(".pt")] == []  # nothing under its name
    monkeypatch.setattr(torch, "save", real)
    rebuilt = load_split(synth_root, "val", 128, tmp_path, max_images=4)
    (cached,) = [n for n in files(tmp_path) if n.endswith(".pt")]
    again = load_split(synth_root, "val", 128, tmp_path, max_images=4)  # read from the cache
    assert torch.equal(again.images, rebuilt.images) and len(again) == 4
    (tmp_path / cached).write_bytes((tmp_path / cached).read_bytes()[:100])  # truncated file
    assert torch.equal(load_split(synth_root, "val", 128, tmp_path, 4).images, rebuilt.images)


@pytest.mark.slow
def test_teacher_bank(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kdtune.bank as bank

    cfg = small_config(synth_root, max_train_images=6, teacher_views=2)
    data = load_split(synth_root, "train", 128, tmp_path / "cache", max_images=6)
    torch.manual_seed(0)
    net = teacher_at_grid(build_model("med").eval(), cfg)
    spec = bank_spec(cfg, len(data), weights_digest(net), "test-data")
    root = tmp_path / "banks" / "bank"
    real = bank.run_teacher
    calls = {"n": 0}

    def dies_on_the_second_batch(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(bank, "run_teacher", dies_on_the_second_batch)
    with pytest.raises(Killed):
        build_bank(net, data, spec, root, device=torch.device("cpu"), batch_size=4)
    assert not root.exists()  # a partial bank never looks complete
    monkeypatch.setattr(bank, "run_teacher", real)
    built = build_bank(net, data, spec, root, device=torch.device("cpu"), batch_size=4)
    assert built.heat.shape[:2] == (len(data), 2) and float(abs(built.heat[:]).sum()) > 0


@pytest.mark.slow
def test_trained_teacher_and_final_model(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's model.pt (and so the teacher cache, which is a teacher run's model.pt) is
    written to a temporary file and renamed."""
    cfg = small_config(synth_root, epochs=1)
    real = torch.save
    saves: list[str] = []

    def dies_at_the_final_model(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        saves.append(Path(f).name if isinstance(f, str | Path) else "")
        if Path(str(f)).name.endswith("model.pt.tmp"):
            killed_mid_write(real)(obj, f, *args, **kwargs)
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_at_the_final_model)
    work = tmp_path / "run"
    with pytest.raises(Killed):
        train.fit(cfg, None, workdir=work, results=tmp_path)
    assert not (work / "model.pt").exists() and ".model.pt.tmp" in saves
    monkeypatch.setattr(torch, "save", real)
    summary = train.fit(cfg, None, workdir=tmp_path / "again", results=tmp_path)
    state = torch.load(tmp_path / "again" / "model.pt", weights_only=False)
    assert state["epoch"] == cfg.epochs and summary["final"]
