"""The KD loss: golden values worked out by hand, and which inputs carry gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdtune.config import alpha_to_schedule
from kdtune.losses import kd_loss, masked_l2
from kdtune.schedules import parse_schedule

# Batch 2, one heatmap channel and two PAF channels on a 1x2 grid.
HEAT = [[[[1.0, 2.0]]], [[[0.0, 3.0]]]]
PAF = [[[[1.0, 1.0]], [[0.0, 0.0]]], [[[2.0, 0.0]], [[0.0, 1.0]]]]
# Against GT = 0: heat squares 1+4+0+9 = 14, PAF squares 1+1+0+0 + 4+0+0+1 = 7.
#   student = (14 + 7) / 2 / 2 = 5.25
# Against teacher = 1: heat (0,1,-1,2) -> 6, PAF (0,0,-1,-1, 1,-1,-1,0) -> 5.
#   distill = (6 + 5) / 2 / 2 = 2.75
# Masking sample 1's second cell removes heat 9 / 4 and PAF 1 / 1 (GT / teacher):
#   student = (5 + 6) / 4 = 2.75, distill = (2 + 4) / 4 = 1.5


def _stage(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(HEAT, requires_grad=requires_grad),
        torch.tensor(PAF, requires_grad=requires_grad),
    )


def _targets(value: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((2, 1, 1, 2), value), torch.full((2, 2, 1, 2), value)


ONES_MASK = torch.ones(2, 1, 1, 2)
HOLE_MASK = torch.tensor([[[[1.0, 1.0]]], [[[1.0, 0.0]]]])


def _loss(alpha: float, mask: torch.Tensor = ONES_MASK, stages: int = 1) -> dict[str, float]:
    gt, teacher = _targets(0.0), _targets(1.0)
    out = kd_loss([_stage()] * stages, *gt, mask, alpha, *teacher)
    return {k: v.item() for k, v in out.items()}


def test_golden_values() -> None:
    out = _loss(0.25)
    assert out["student"] == pytest.approx(5.25)
    assert out["distill"] == pytest.approx(2.75)
    assert out["total"] == pytest.approx(0.25 * 5.25 + 0.75 * 2.75)  # 3.375


def test_golden_values_with_mask() -> None:
    out = _loss(0.5, HOLE_MASK)
    assert out["student"] == pytest.approx(2.75)
    assert out["distill"] == pytest.approx(1.5)
    assert out["total"] == pytest.approx(2.125)


def test_stages_are_summed() -> None:
    out = _loss(0.25, stages=2)
    assert out["student"] == pytest.approx(10.5)
    assert out["distill"] == pytest.approx(5.5)


def test_masked_l2_golden() -> None:
    pred = torch.tensor([[[[3.0]]], [[[1.0]]]])
    assert float(masked_l2(pred, torch.zeros_like(pred), None)) == pytest.approx(2.5)
    mask = torch.tensor([[[[0.0]]], [[[1.0]]]])
    assert float(masked_l2(pred, torch.zeros_like(pred), mask)) == pytest.approx(0.25)


def _grads(alpha: float, gt: float, teacher: tuple | None) -> list[torch.Tensor]:
    stage = _stage(requires_grad=True)
    t_heat, t_paf = teacher if teacher is not None else (None, None)
    kd_loss([stage], *_targets(gt), ONES_MASK, alpha, t_heat, t_paf)["total"].backward()
    grads = [t.grad for t in stage]
    assert all(g is not None for g in grads)
    return [g for g in grads if g is not None]


def test_alpha_one_ignores_the_teacher() -> None:
    without = _grads(1.0, 0.0, None)
    with_teacher = _grads(1.0, 0.0, (torch.randn(2, 1, 1, 2), torch.randn(2, 2, 1, 2)))
    for a, b in zip(without, with_teacher, strict=True):
        assert torch.equal(a, b)
    out = _loss(1.0)
    assert out["distill"] == 0.0 and out["total"] == pytest.approx(5.25)


def test_alpha_one_never_touches_the_teacher() -> None:
    class Exploding(torch.Tensor):
        @classmethod
        def __torch_function__(cls, *args, **kwargs):
            raise AssertionError("teacher maps were used at alpha = 1")

    bomb = torch.zeros(2, 1, 1, 2).as_subclass(Exploding)
    out = kd_loss([_stage()], *_targets(0.0), ONES_MASK, 1.0, bomb, bomb)
    assert float(out["total"]) == pytest.approx(5.25)


def test_alpha_zero_ignores_ground_truth() -> None:
    teacher = _targets(1.0)
    a = _grads(0.0, 0.0, teacher)
    b = _grads(0.0, 7.0, teacher)
    for ga, gb in zip(a, b, strict=True):
        assert torch.equal(ga, gb)
    out = _loss(0.0)
    assert out["student"] == pytest.approx(5.25)  # still measured
    assert out["total"] == pytest.approx(2.75)


def test_mask_zeroes_contributions_and_gradients() -> None:
    heat, paf = _stage(requires_grad=True)
    out = kd_loss([(heat, paf)], *_targets(0.0), HOLE_MASK, 0.5, *_targets(1.0))
    out["total"].backward()
    assert heat.grad is not None and paf.grad is not None
    assert (heat.grad[1, :, :, 1] == 0).all() and (paf.grad[1, :, :, 1] == 0).all()
    assert (heat.grad[0] != 0).any()
    # Changing a prediction under the mask changes nothing.
    moved = (torch.tensor(HEAT), torch.tensor(PAF))
    moved[0][1, 0, 0, 1] = 100.0
    again = kd_loss([moved], *_targets(0.0), HOLE_MASK, 0.5, *_targets(1.0))
    assert again["total"].item() == pytest.approx(out["total"].item())


def test_teacher_gets_no_gradient() -> None:
    t_heat = torch.ones(2, 1, 1, 2, requires_grad=True)
    t_paf = torch.ones(2, 2, 1, 2, requires_grad=True)
    heat, paf = _stage(requires_grad=True)
    kd_loss([(heat, paf)], *_targets(0.0), ONES_MASK, 0.3, t_heat, t_paf)["total"].backward()
    assert t_heat.grad is None and t_paf.grad is None


def test_bf16_predictions_give_a_float32_loss() -> None:
    heat, paf = (t.to(torch.bfloat16) for t in _stage())
    out = kd_loss([(heat, paf)], *_targets(0.0), ONES_MASK, 0.25, *_targets(1.0))
    assert out["total"].dtype == torch.float32
    assert float(out["total"]) == pytest.approx(3.375)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        kd_loss([_stage()], *_targets(0.0), ONES_MASK, 1.5, None, None)
    with pytest.raises(ValueError, match="teacher"):
        kd_loss([_stage()], *_targets(0.0), ONES_MASK, 0.5, None, None)


def describe_loss(alpha: float) -> str:
    """A fixed weighting prints itself as its loss (what a trial's log line shows)."""
    return parse_schedule(alpha_to_schedule(alpha)).describe()


def test_describe_loss() -> None:
    assert describe_loss(0.25) == "L = 0.25*student + 0.75*distill"
    assert describe_loss(0.3) == "L = 0.3*student + 0.7*distill"
    assert describe_loss(1.0) == "L = 1*student + 0*distill"


@given(st.integers(min_value=0, max_value=100))
def test_describe_loss_weights_sum_to_one(percent: int) -> None:
    alpha = percent / 100
    text = describe_loss(alpha)
    a, b = (float(part.split("*")[0]) for part in text.removeprefix("L = ").split(" + "))
    assert a == pytest.approx(alpha) and a + b == pytest.approx(1.0)
