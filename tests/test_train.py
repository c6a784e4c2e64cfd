"""The trial: reporting, checkpoints, resume, teachers, divergence."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import small_config

from kdtune.config import TrainConfig
from kdtune.errors import KdtuneError
from kdtune.teachers import teacher_key
from kdtune.train import TrialDiverged, fit, host_rng_state, lr_factor


def small(synth_root: Path, **over: Any) -> TrainConfig:
    return small_config(synth_root, **over)


def test_teacher_level_summary_says_ground_truth_only(synth_root: Path, tmp_path: Path) -> None:
    cfg = small(synth_root, level="teacher", epochs=1, max_train_images=8, max_val_images=4)
    summary = fit(cfg, None, workdir=tmp_path / "run", results=tmp_path)
    assert summary["arch"] == "teacher" and summary["parameters"] == 4_091_698
    assert (summary["schedule"], summary["alpha"]) == ("fixed:0", 1.0)


def test_fit_reports_each_evaluation_and_writes_records(synth_root: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, dict[str, float], Path]] = []
    cfg = small(synth_root, schedule="linear:0.9:0.5", epochs=3, eval_every=2)
    summary = fit(
        cfg, lambda e, m, c: seen.append((e, m, c)), workdir=tmp_path / "run", results=tmp_path
    )
    assert [e for e, _, _ in seen] == [2, 3]  # every eval_every epochs, and the last
    for _, metrics, ckpt in seen:
        for key in (
            "train/student_loss",
            "train/distill_loss",
            "train/loss",
            "train/beta",
            "val/loss",
            "val/ap",
            "val/ap50",
            "perf/images_per_s",
        ):
            assert math.isfinite(metrics[key]), key
        assert (ckpt / "state.pt").is_file()
    # the linear schedule moves beta from 0.9 towards 0.5
    assert 0.5 < seen[-1][1]["train/beta"] < seen[0][1]["train/beta"] < 0.9
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [2, 3]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["parameters"] == summary["parameters"] == 111_769
    assert on_disk["schedule"] == "linear:0.9:0.5"
    assert (seen[-1][2] / "val_keypoints.png").is_file()


def _stopped_after_first_evaluation(cfg: TrainConfig, workdir: Path, results: Path) -> Path:
    """Run ``cfg`` in ``workdir`` and stop it at its first evaluation; that checkpoint."""
    stopped: list[Path] = []

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
        stopped.append(ckpt)
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop_after_first, workdir=workdir, results=results)
    return stopped[0]


def test_resume_continues_exactly_where_it_stopped(synth_root: Path, tmp_path: Path) -> None:
    cfg = small(synth_root, alpha=1.0, epochs=2, eval_every=1)
    whole = fit(cfg, None, workdir=tmp_path / "whole", results=tmp_path)
    first = _stopped_after_first_evaluation(cfg, tmp_path / "parts", tmp_path)
    resumed = fit(cfg, None, workdir=tmp_path / "parts", resume_from=first, results=tmp_path)
    assert resumed["final"]["val/loss"] == pytest.approx(whole["final"]["val/loss"], rel=1e-4)
    history = json.loads((tmp_path / "parts" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_how_often_a_run_is_evaluated_does_not_change_what_it_learns(
    synth_root: Path, tmp_path: Path
) -> None:
    """Evaluations read the model and draw nothing from the training's random streams, so a
    run evaluated every epoch ends with the weights of one evaluated only at its end (what lets
    confirmation runs evaluate once, and the truth table differ from a search in this alone)."""
    models = []
    for every in (1, 3):
        cfg = small(synth_root, schedule="linear:0.9:0.5", epochs=3, eval_every=every)
        summary = fit(cfg, None, workdir=tmp_path / f"every{every}", results=tmp_path)
        models.append(torch.load(summary["model"], map_location="cpu", weights_only=False))
    weights = [m["model"] for m in models]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


class _MappedToCuda(torch.Tensor):
    """A tensor that says it lives on CUDA (as ``torch.load(map_location="cuda")`` leaves the
    checkpoint's RNG states): only a copy to the CPU gives its data back, as on a real GPU."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> _MappedToCuda:
        made = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, inner.shape, dtype=inner.dtype, device="cuda"
        )
        made.inner = inner
        return made  # type: ignore[no-any-return]

    @classmethod
    def __torch_dispatch__(
        cls, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> torch.Tensor:
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") == torch.device("cpu"):
            return args[0].inner.to(dtype=kwargs.get("dtype") or args[0].inner.dtype)
        raise RuntimeError(f"{func} needs the data of a CUDA tensor")


def test_resume_restores_rng_states_as_cpu_bytes_whatever_the_map_location(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small(synth_root, alpha=1.0, epochs=2, eval_every=1)
    whole = fit(cfg, None, workdir=tmp_path / "whole", results=tmp_path)
    first = sorted((tmp_path / "whole" / "checkpoints").glob("epoch_*"))[0]
    real_load = torch.load

    def load_onto_cuda(*args: Any, **kwargs: Any) -> Any:
        state = real_load(*args, **kwargs)
        if isinstance(state, dict) and "rng" in state:
            state["rng"] = {k: _MappedToCuda(v) for k, v in state["rng"].items()}
        return state

    state = torch.Generator().manual_seed(3).get_state()
    with pytest.raises(TypeError, match="ByteTensor"):  # what a CUDA-mapped state meets
        torch.Generator().set_state(_MappedToCuda(state))
    restored = host_rng_state(_MappedToCuda(state))
    assert restored.device.type == "cpu" and restored.dtype == torch.uint8
    assert torch.equal(restored, state)
    monkeypatch.setattr(torch, "load", load_onto_cuda)
    resumed = fit(cfg, None, workdir=tmp_path / "resumed", resume_from=first, results=tmp_path)
    assert resumed["final"]["val/loss"] == pytest.approx(whole["final"]["val/loss"], rel=1e-4)


def test_alpha_one_needs_no_teacher(synth_root: Path, tmp_path: Path) -> None:
    fit(small(synth_root, alpha=1.0, epochs=1), None, workdir=tmp_path / "run", results=tmp_path)
    assert not (tmp_path / "cache" / "teachers").exists()


def test_teacher_is_trained_once_and_cached(synth_root: Path, tmp_path: Path) -> None:
    cfg = small(synth_root, alpha=0.25, epochs=1)
    fit(cfg, None, workdir=tmp_path / "a", results=tmp_path)
    teachers = list((tmp_path / "cache" / "teachers").glob("med-*/model.pt"))
    assert len(teachers) == 1
    stamp = teachers[0].stat().st_mtime_ns
    fit(small(synth_root, alpha=0.5, epochs=1), None, workdir=tmp_path / "b", results=tmp_path)
    assert teachers[0].stat().st_mtime_ns == stamp  # reused, not retrained
    assert teacher_key(cfg, tmp_path) != teacher_key(small(synth_root, teacher_epochs=2), tmp_path)


def test_given_teacher_of_the_wrong_architecture_is_refused(
    synth_root: Path, tmp_path: Path
) -> None:
    run = fit(
        small(synth_root, alpha=1.0, epochs=1), None, workdir=tmp_path / "tiny", results=tmp_path
    )
    cfg = small(
        synth_root, alpha=0.25, teacher_checkpoint=run["model"]
    )  # a tiny where a med belongs
    with pytest.raises(KdtuneError, match="med"):
        fit(cfg, None, workdir=tmp_path / "run", results=tmp_path)


def test_nan_loss_raises_trial_diverged(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kdtune.train as train

    real = train.kd_loss

    def poisoned(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = real(*args, **kwargs)
        return {**out, "total": out["total"] * float("nan")}

    monkeypatch.setattr(train, "kd_loss", poisoned)
    with pytest.raises(TrialDiverged):
        fit(
            small(synth_root, alpha=1.0, epochs=1), None, workdir=tmp_path / "run", results=tmp_path
        )


def test_a_huge_learning_rate_diverges_at_once(synth_root: Path, tmp_path: Path) -> None:
    """``lr: 1e6``: the first step's loss is not finite; the trial stops there."""
    cfg = small(synth_root, alpha=1.0, epochs=2, lr=1e6)
    with pytest.raises(TrialDiverged, match=r"loss became (nan|inf) at epoch 1"):
        fit(cfg, None, workdir=tmp_path / "run", results=tmp_path)


def test_chain_runs_both_levels(synth_root: Path, tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []
    cfg = small(synth_root, level="chain", alpha=0.3, alpha_second=0.25, epochs=1)
    summary = fit(cfg, lambda e, m, c: seen.append(m), workdir=tmp_path / "chain", results=tmp_path)
    assert summary["level"] == "chain" and summary["arch"] == "tiny"
    assert summary["first"]["arch"] == "med"
    assert "first/val/ap" in seen[-1]
    assert list(
        (tmp_path / "cache" / "teachers").glob("teacher-*/model.pt")
    )  # the level-one teacher


def test_lr_factor_warms_up_then_decays() -> None:
    total = 1000
    assert lr_factor(0, total) == pytest.approx(1 / 50)
    assert lr_factor(49, total) == pytest.approx(1.0)
    assert lr_factor(50, total) == pytest.approx(1.0)
    assert lr_factor(total, total) == pytest.approx(0.05)
    values = [lr_factor(s, total) for s in range(50, total)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_a_trial_reports_in_the_one_metric_vocabulary(synth_root: Path, tmp_path: Path) -> None:
    from kdtune.results import METRICS, REPORTED

    seen: list[dict[str, float]] = []
    fit(small(synth_root, epochs=1), lambda _e, m, _c: seen.append(m), workdir=tmp_path / "r",
        results=tmp_path)  # fmt: skip
    assert seen and set(seen[0]) == set(METRICS) | set(REPORTED)


def test_epochs_between_evaluations_still_show_progress(synth_root: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    fit(small(synth_root, epochs=3, eval_every=3), None, workdir=tmp_path / "r",
        results=tmp_path, log=lines.append)  # fmt: skip
    progress = [line for line in lines if line.startswith("epoch ") and "/3" in line]
    assert [line.split()[1] for line in progress] == ["1/3", "2/3"]
    assert any(line.startswith("epoch   3") and "AP" in line for line in lines)  # the evaluation


def test_a_public_layout_teacher_reaches_the_trial_with_its_own_input(
    synth_root: Path, tmp_path: Path
) -> None:
    from kdtune.models import PublicInput, build_model, load_checkpoint
    from kdtune.teachers import resolve
    from kdtune.teachers.runs import teacher_at_grid
    from kdtune.train import fit

    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": build_model("teacher").state_dict(), "iter": 370000}, path)
    cfg = small(synth_root, level="first", teacher_checkpoint=str(path), teacher_input_size=368)
    resolved = resolve(cfg, None, print, fit=fit)
    assert resolved == path  # a given checkpoint is used as it is
    teacher = load_checkpoint(resolved, "teacher")
    assert isinstance(teacher, PublicInput)
    at_grid = teacher_at_grid(teacher, cfg)  # what the bank, live targets and eval run
    assert any(isinstance(m, PublicInput) for m in at_grid.modules())


def _collect(into: list[dict[str, float]]) -> Any:
    return lambda _epoch, metrics, _ckpt: into.append(metrics)


def test_reading_the_loss_less_often_changes_nothing(synth_root: Path, tmp_path: Path) -> None:
    """``sync_every`` only sets when the host reads the summed losses: the same run, read after
    every step or once an epoch, gives the same metrics and weights."""
    runs = []
    for every in (1, 1000):
        cfg = small(synth_root, alpha=0.25, epochs=2, sync_every=every)
        seen: list[dict[str, float]] = []
        fit(cfg, _collect(seen), workdir=tmp_path / f"s{every}", results=tmp_path)
        state = torch.load(tmp_path / f"s{every}" / "model.pt", weights_only=True)
        runs.append((seen, state["model"]))
    (first, w1), (second, w2) = runs
    keys = ("train/loss", "train/student_loss", "train/distill_loss", "val/ap", "val/loss")
    for a, b in zip(first, second, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_a_diverged_run_is_caught_at_the_next_read(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read every 1000 steps (more than an epoch), a loss gone NaN is still caught that epoch."""
    cfg = small(synth_root, alpha=1.0, epochs=2, lr=1e6, sync_every=1000)
    with pytest.raises(TrialDiverged, match=r"loss became (nan|inf) at epoch 1, by step 1 "):
        fit(cfg, None, workdir=tmp_path / "run", results=tmp_path)


@pytest.mark.parametrize(
    ("scaling", "batch", "factor"),
    [
        ("none", 256, 1.0),
        ("sqrt", 64, 2.0),
        ("sqrt", 1024, 8.0),
        ("linear", 64, 4.0),
        ("linear", 8, 0.5),
        ("sqrt", 16, 1.0),
    ],
)
def test_scaled_lr_golden_values(scaling: str, batch: int, factor: float) -> None:
    cfg = TrainConfig(lr=0.004, batch_size=batch, lr_scaling=scaling).validate()
    assert cfg.scaled_lr == pytest.approx(0.004 * factor, rel=1e-12)


def test_the_optimizer_gets_the_scaled_lr(synth_root: Path, tmp_path: Path) -> None:
    cfg = small(synth_root, alpha=1.0, epochs=1, batch_size=4, lr=0.004, lr_scaling="linear")
    seen: list[dict[str, float]] = []
    fit(cfg, lambda e, m, c: seen.append(m), workdir=tmp_path / "run", results=tmp_path)
    # the cosine ends at 5 % of the peak: 0.05 x 0.004 x 4/16 at the last step
    assert seen[-1]["train/lr"] == pytest.approx(0.05 * 0.001, rel=1e-6)


@pytest.mark.slow
def test_a_compiled_trial_trains_like_an_eager_one(synth_root: Path, tmp_path: Path) -> None:
    """``torch_compile``: the same run compiled reaches finite losses close to the eager run's
    (compiled kernels round differently) and checkpoints the same network."""
    out = {}
    for compiled in (False, True):
        cfg = small(synth_root, alpha=0.25, epochs=1, torch_compile=compiled)
        seen: list[dict[str, float]] = []
        fit(cfg, _collect(seen), workdir=tmp_path / f"c{compiled}", results=tmp_path)
        out[compiled] = seen[-1]
    assert out[True]["train/loss"] == pytest.approx(out[False]["train/loss"], rel=1e-3)
    state = torch.load(tmp_path / "cTrue" / "model.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])


@pytest.mark.slow
@pytest.mark.parametrize("targets", ["bank", "live", "warped"])
def test_a_trial_is_deterministic_in_every_teacher_targets_mode(
    synth_root: Path, tmp_path: Path, targets: str
) -> None:
    """The same config trained twice (the teacher resolved and cached by the first run, read
    back by the second) gives the same metrics and weights, whichever targets it uses."""
    cfg = small(synth_root, schedule="linear:0.9:0.3", teacher_targets=targets, teacher_views=2)
    runs = []
    for name in ("a", "b"):
        seen: list[dict[str, float]] = []
        fit(cfg, _collect(seen), workdir=tmp_path / name, results=tmp_path)
        state = torch.load(tmp_path / name / "model.pt", weights_only=True)
        runs.append(
            ([{k: v for k, v in m.items() if k != "perf/images_per_s"} for m in seen], state)
        )
    (first, w1), (second, w2) = runs
    assert first == second and len(first) == cfg.epochs
    assert all(torch.equal(w1["model"][k], w2["model"][k]) for k in w1["model"])


def test_a_moving_average_is_what_is_evaluated_and_delivered(
    synth_root: Path, tmp_path: Path
) -> None:
    """With ``ema_decay`` the run learns exactly as without it (the average draws nothing from
    its random streams), but evaluates and saves the average: ``model`` holds the average, the
    trained weights sit under ``trained``."""
    plain = fit(small(synth_root, alpha=1.0, epochs=2), None, workdir=tmp_path / "plain")
    ema = fit(small(synth_root, alpha=1.0, epochs=2, ema_decay=0.9), None, workdir=tmp_path / "ema")
    plain_state = torch.load(plain["model"], map_location="cpu", weights_only=True)
    ema_state = torch.load(ema["model"], map_location="cpu", weights_only=True)
    assert "trained" not in plain_state
    for name, tensor in plain_state["model"].items():
        assert torch.equal(tensor, ema_state["trained"][name]), name
    moved = [
        name
        for name, tensor in plain_state["model"].items()
        if tensor.is_floating_point() and not torch.equal(tensor, ema_state["model"][name])
    ]
    assert moved, "the delivered weights are the trained ones, not their average"
    assert int(ema_state["ema_n_averaged"]) == 2 * math.ceil(16 / 8)  # one update per step
    assert ema["final"]["val/loss"] != plain["final"]["val/loss"]


def test_resume_keeps_the_moving_average(synth_root: Path, tmp_path: Path) -> None:
    cfg = small(synth_root, alpha=1.0, epochs=2, eval_every=1, ema_decay=0.8)
    whole = fit(cfg, None, workdir=tmp_path / "whole", results=tmp_path)
    first = _stopped_after_first_evaluation(cfg, tmp_path / "parts", tmp_path)
    resumed = fit(cfg, None, workdir=tmp_path / "parts", resume_from=first, results=tmp_path)
    assert resumed["final"]["val/loss"] == pytest.approx(whole["final"]["val/loss"], rel=1e-4)
    # a checkpoint resumed with another ema_decay is refused in one line, not half-loaded
    with pytest.raises(KdtuneError, match="ema_decay it was trained with"):
        fit(
            small(synth_root, alpha=1.0, epochs=2, eval_every=1),
            None,
            workdir=tmp_path / "other",
            resume_from=first,
            results=tmp_path,
        )


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True])
def test_ema_decay_outside_zero_one_is_refused(synth_root: Path, bad: Any) -> None:
    with pytest.raises(KdtuneError, match="ema_decay") as caught:
        small(synth_root, ema_decay=bad).validate()
    assert "\n" not in str(caught.value)
