"""A population fit trains each member as ``train.fit`` trains it alone on the same batches;
a pruned member leaves and the others go on; members that cannot share batches are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import small_config

from kdtune.config import TrainConfig
from kdtune.errors import KdtuneError
from kdtune.population_fit import (
    PRUNED,
    MemberPruned,
    check_members,
    fit_population,
    member_peak_bytes,
    members_that_fit,
    populations,
)
from kdtune.teachers import resolve
from kdtune.train import fit

# Float32 grouped and plain convolutions sum in different orders (maps agree to ~1e-6). Adam's
# first steps move a weight by about lr·sign(g), so a gradient within rounding of 0 can move a
# weight by up to 2·lr per step the other way: 4 steps × 2 × 6e-3 (the largest lr here) ≈ 0.05
# bounds it. Measured on this CPU: at most 0.013; two different members differ by more than 1.
WEIGHT_TOL = 0.05
LOSS_REL = 1e-3  # train and val losses (measured: within 1e-4)
AP_TOL = 0.02
MEMBERS = (("fixed:0", 0, 4e-3), ("linear:0.9:0.5", 1, 2e-3), ("fixed:0.5", 2, 6e-3))


def _configs(synth_root: Path, tmp_path: Path, **over: Any) -> list[TrainConfig]:
    cfgs = [
        small_config(synth_root, schedule=s, seed=seed, lr=lr, data_seed=5, eval_every=1, **over)
        for s, seed, lr in MEMBERS
    ]
    # kdtune would train each seed its own teacher: the members share one, as a search does
    teacher = resolve(cfgs[1], tmp_path, lambda _m: None, fit=fit)
    return [
        TrainConfig.from_dict({**c.to_dict(), "teacher_checkpoint": str(teacher)}) for c in cfgs
    ]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_members_train_as_alone_and_a_pruned_member_leaves(
    synth_root: Path, tmp_path: Path
) -> None:
    cfgs = _configs(synth_root, tmp_path)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def report(m: int) -> Any:
        def one(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
            assert (ckpt / "state.pt").is_file()
            seen[m].append(epoch)
            if m == 1:
                raise MemberPruned(f"pruned at epoch {epoch}")

        return one

    pop = [tmp_path / f"member{m}" for m in range(3)]
    outcomes = fit_population(cfgs, [report(m) for m in range(3)], workdirs=pop, results=tmp_path)
    assert seen == {0: [1, 2], 1: [1], 2: [1, 2]}  # member 1 left after its first evaluation
    assert [o.state for o in outcomes] == ["finished", PRUNED, "finished"]
    assert outcomes[1].summary is None and not (pop[1] / "model.pt").exists()
    alone = [fit(c, None, workdir=tmp_path / f"alone{m}", results=tmp_path) for m, c in
             enumerate(cfgs)]  # fmt: skip
    for m in (0, 2):
        assert _max_diff(_weights(pop[m]), _weights(tmp_path / f"alone{m}")) <= WEIGHT_TOL, m
        mine, theirs = outcomes[m].summary, alone[m]
        assert mine is not None
        assert mine["final"]["val/ap"] == pytest.approx(theirs["final"]["val/ap"], abs=AP_TOL)
        assert mine["final"]["val/loss"] == pytest.approx(theirs["final"]["val/loss"], rel=LOSS_REL)
        assert json.loads((pop[m] / "summary.json").read_text())["schedule"] == MEMBERS[m][0]
    # the comparison can fail: another member's net is far from this one's
    assert _max_diff(_weights(pop[0]), _weights(tmp_path / "alone2")) > 20 * WEIGHT_TOL
    # the pruned member's one evaluation is the alone run's first
    first_alone = json.loads((tmp_path / "alone1" / "metrics.json").read_text())[0]
    for key in ("train/loss", "train/beta", "train/lr", "val/loss"):
        assert outcomes[1].history[0][key] == pytest.approx(first_alone[key], rel=LOSS_REL), key


def test_members_that_cannot_share_batches_are_refused(synth_root: Path) -> None:
    base = small_config(synth_root)
    with pytest.raises(KdtuneError, match="differs from member 0 in batch_size"):
        check_members([base, small_config(synth_root, batch_size=4)])
    with pytest.raises(KdtuneError, match="data seeds differ"):
        check_members([base, small_config(synth_root, seed=1)])
    check_members([base, small_config(synth_root, seed=1, data_seed=0, lr=1e-3, alpha=0.5)])
    with pytest.raises(KdtuneError, match="level 'teacher'"):
        check_members([small_config(synth_root, level="teacher")])
    with pytest.raises(KdtuneError, match="no members"):
        check_members([])


def test_runs_group_into_populations_by_seed(synth_root: Path) -> None:
    runs = [
        small_config(synth_root, schedule=spec, seed=seed, lr=lr)
        for seed in (0, 1, 2)
        for spec, lr in (("fixed:0", 4e-3), ("fixed:0.5", 2e-3), ("linear:0.9:0.5", 4e-3))
    ]
    assert populations(runs, 8) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert populations(runs, 2) == [[0, 1], [2], [3, 4], [5], [6, 7], [8]]
    for group in populations(runs, 3):
        check_members([runs[i] for i in group])  # each group can train as one
    other = small_config(synth_root, seed=0, batch_size=4)
    assert populations([runs[0], other, runs[1]], 8) == [[0, 2], [1]]
    with pytest.raises(KdtuneError, match="at least 1"):
        populations(runs, 0)


def test_members_that_fit_a_cpu_are_those_asked_for(synth_root: Path) -> None:
    cfg = small_config(synth_root, device="cpu")
    assert members_that_fit(cfg, 8) == 8
    with pytest.raises(KdtuneError, match="at least 1"):
        members_that_fit(cfg, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_members_that_fit_a_gpu_follow_its_memory(synth_root: Path) -> None:
    cfg = small_config(synth_root, device="cuda", batch_size=64)
    one = member_peak_bytes(cfg, torch.device("cuda"))
    free = torch.cuda.mem_get_info()[0]
    assert 0 < one < free
    got = members_that_fit(cfg, 10**6)  # the free memory moves a little between the readings
    assert abs(got - 0.8 * free / one) <= 0.05 * got + 1
    huge = small_config(synth_root, device="cuda", batch_size=2**20)
    with pytest.raises(KdtuneError, match=r"lower train\.batch_size"):
        members_that_fit(huge, 8)
    too_many = [small_config(synth_root, device="cuda", batch_size=64, seed=0)] * (2 * got + 2)
    with pytest.raises(KdtuneError, match=r"do not fit the device's free memory"):
        fit_population(too_many, workdirs=[Path(f"/nonexistent/{i}") for i in range(2 * got + 2)])
