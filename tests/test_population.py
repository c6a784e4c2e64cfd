"""A population trains each member as that member would train alone on the same batches."""

from __future__ import annotations

import pytest
import torch

from kdtune.errors import KdtuneError
from kdtune.losses import kd_loss
from kdtune.models import build_model
from kdtune.population import MemberAdam, Population, member_losses, member_state

GRID = 16
# grouped and plain convolutions sum in different orders: in float32 the maps agree to about
# 1e-6. Training is compared with float64 nets (the losses are still summed in float32, as
# kd_loss does): the weights then agree to ~1e-7 after 4 steps here, while any real mistake
# (a member's own lr, α or statistics) moves a weight by about an lr step, ~1e-3
FORWARD_TOL = 1e-5
WEIGHT_TOL = 1e-6  # absolute


def _members(
    arch: str, seeds: list[int], dtype: torch.dtype = torch.float32
) -> list[torch.nn.Module]:
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(build_model(arch).to(dtype))
    return nets


def _batch(seed: int, b: int = 4, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(dtype) for t in _float_batch(seed, b))


def _float_batch(seed: int, b: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 128, 128, generator=g)
    gt_heat = torch.rand(b, 19, GRID, GRID, generator=g)
    gt_paf = torch.rand(b, 38, GRID, GRID, generator=g) - 0.5
    mask = (torch.rand(b, 1, GRID, GRID, generator=g) > 0.1).float()
    t_heat = torch.rand(b, 19, GRID, GRID, generator=g)
    t_paf = torch.rand(b, 38, GRID, GRID, generator=g) - 0.5
    return x, gt_heat, gt_paf, mask, t_heat, t_paf


@pytest.mark.parametrize("arch", ["tiny", "med"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_fused_net_computes_each_members_maps(arch: str, mode: str) -> None:
    members = _members(arch, [0, 1, 2])
    population = Population(members)
    for net in [*members, population]:
        net.train(mode == "train")
    x = _batch(0)[0]
    with torch.no_grad():
        (heat, paf), *_ = population(x)
        assert heat.shape == (4, 3, 19, GRID, GRID) and paf.shape == (4, 3, 38, GRID, GRID)
        for m, net in enumerate(members):
            (h, p), *_ = net(x)
            assert torch.allclose(heat[:, m], h, atol=FORWARD_TOL, rtol=FORWARD_TOL)
            assert torch.allclose(paf[:, m], p, atol=FORWARD_TOL, rtol=FORWARD_TOL)


def test_member_losses_are_kd_loss_per_member() -> None:
    members = _members("tiny", [3, 4, 5])
    population = Population(members)
    x, gt_heat, gt_paf, mask, t_heat, t_paf = _batch(1)
    alphas = torch.tensor([1.0, 0.25, 0.0])
    with torch.no_grad():
        losses = member_losses(population(x), gt_heat, gt_paf, mask, alphas, t_heat, t_paf)
        for m, net in enumerate(members):
            one = kd_loss(net(x), gt_heat, gt_paf, mask, float(alphas[m]), t_heat, t_paf)
            for term in ("student", "distill", "total"):
                assert losses[term][m].item() == pytest.approx(one[term].item(), rel=1e-5)


def test_members_train_as_they_would_alone() -> None:
    """Three tiny members (own seed, α and lr) stepped 4 times on the same batches end with the
    weights and BN statistics of the same nets trained one by one with torch's Adam (float64)."""
    seeds, alphas, lrs, decay = [0, 1, 2], [1.0, 0.5, 0.1], [1e-3, 3e-3, 5e-4], 1e-4
    alone = _members("tiny", seeds, torch.float64)
    population = Population(_members("tiny", seeds, torch.float64))
    optimizers = [
        torch.optim.Adam(n.parameters(), lr=lr, weight_decay=decay)
        for n, lr in zip(alone, lrs, strict=True)
    ]
    fused_opt = MemberAdam(population, lrs, weight_decay=decay)
    population.train()
    for net in alone:
        net.train()
    for step in range(4):
        x, gt_heat, gt_paf, mask, t_heat, t_paf = _batch(10 + step, dtype=torch.float64)
        for net, opt, a in zip(alone, optimizers, alphas, strict=True):
            opt.zero_grad()
            kd_loss(net(x), gt_heat, gt_paf, mask, a, t_heat, t_paf)["total"].backward()
            opt.step()
        fused_opt.zero_grad()
        losses = member_losses(
            population(x),
            gt_heat,
            gt_paf,
            mask,
            torch.tensor(alphas, dtype=torch.float64),
            t_heat,
            t_paf,
        )
        losses["total"].sum().backward()
        fused_opt.step()
    for m, net in enumerate(alone):
        mine = member_state(population, m)
        for key, want in net.state_dict().items():
            got = mine[key]
            assert got.shape == want.shape, key
            if want.dtype.is_floating_point:
                assert float((got - want).abs().max()) <= WEIGHT_TOL, (m, key)
            else:
                assert torch.equal(got, want), key


def test_a_member_taken_out_runs_as_a_plain_net() -> None:
    members = _members("tiny", [7, 8])
    population = Population(members).eval()
    plain = build_model("tiny").eval()
    plain.load_state_dict(member_state(population, 1))
    x = _batch(2)[0]
    with torch.no_grad():
        (h, _), *_ = plain(x)
        (fused_h, _), *_ = population(x)
    assert torch.allclose(h, fused_h[:, 1], atol=FORWARD_TOL, rtol=FORWARD_TOL)


def test_what_cannot_be_fused_is_refused() -> None:
    with pytest.raises(KdtuneError, match="only student nets"):
        Population([build_model("teacher")])
    with pytest.raises(KdtuneError, match="one architecture"):
        Population([build_model("tiny"), build_model("med")])
    with pytest.raises(KdtuneError, match="no members"):
        Population([])
    with pytest.raises(KdtuneError, match="learning rates"):
        MemberAdam(Population(_members("tiny", [0])), [0.0])
    with pytest.raises(KdtuneError, match="no member 2"):
        member_state(Population(_members("tiny", [0, 1])), 2)
