"""Golden values and symmetries of the batched heatmap and PAF targets."""

from __future__ import annotations

import math

import pytest
import torch

from kdtune.errors import KdtuneError
from kdtune.skeleton import FLIP_HEATMAPS, FLIP_OP18, FLIP_PAFS, LIMBS, NUM_KEYPOINTS, OP18
from kdtune.targets import cell_centres, make_targets

S, STRIDE, SIGMA = 128, 8, 7.0
G = S // STRIDE


def people(*persons: dict[int, tuple[float, float]]) -> torch.Tensor:
    """A [1, P, 18, 3] tensor from {keypoint index: (x, y)} dicts (those listed are labelled)."""
    out = torch.zeros(1, len(persons), NUM_KEYPOINTS, 3)
    for p, points in enumerate(persons):
        for k, (x, y) in points.items():
            out[0, p, k] = torch.tensor([x, y, 2.0])
    return out


def gaussian(x: float, y: float, gx: int, gy: int) -> float:
    """The reference's value at cell (gx, gy) of a keypoint at (x, y), cut at ln(100)."""
    cx, cy = gx * STRIDE + STRIDE / 2 - 0.5, gy * STRIDE + STRIDE / 2 - 0.5
    exponent = ((cx - x) ** 2 + (cy - y) ** 2) / (2 * SIGMA**2)
    return 0.0 if exponent > 4.6052 else math.exp(-exponent)


def random_keypoints(generator: torch.Generator, batch: int = 4, persons: int = 3) -> torch.Tensor:
    """Keypoints on a 1/16-pixel lattice (so that mirrored arithmetic is exact), ~70% labelled."""
    xy = torch.randint(0, 16 * S, (batch, persons, NUM_KEYPOINTS, 2), generator=generator) / 16
    v = (torch.rand(batch, persons, NUM_KEYPOINTS, 1, generator=generator) < 0.7).float() * 2
    return torch.cat([xy, v], dim=-1)


def flip_keypoints(keypoints: torch.Tensor) -> torch.Tensor:
    """Mirror x about the image (x' = S - 1 - x) and swap left and right."""
    out = keypoints[:, :, list(FLIP_OP18)].clone()
    out[..., 0] = S - 1 - out[..., 0]
    return out


def flip_maps(heatmaps: torch.Tensor, pafs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror maps along the width, permuting channels and negating the PAFs' x components."""
    heat = heatmaps[:, list(FLIP_HEATMAPS)].flip(-1)
    paf = pafs[:, list(FLIP_PAFS)].flip(-1).clone()
    paf[:, 0::2] = -paf[:, 0::2]
    return heat, paf


def test_cell_centres_follow_the_reference_convention() -> None:
    assert cell_centres(4, 8).tolist() == [3.5, 11.5, 19.5, 27.5]
    c = cell_centres(G, STRIDE)
    assert torch.equal(c.flip(0), S - 1 - c)  # cell G-1-g is the mirror of cell g


def test_shapes_dtype_and_empty_batch() -> None:
    heat, paf = make_targets(torch.zeros(2, 0, 18, 3))
    assert heat.shape == (2, 19, G, G) and paf.shape == (2, 38, G, G)
    assert heat.dtype == paf.dtype == torch.float32
    assert torch.all(heat[:, :18] == 0) and torch.all(heat[:, 18] == 1) and torch.all(paf == 0)


def test_single_keypoint_golden_values() -> None:
    nose = OP18.index("nose")
    x, y = 20.0, 36.0
    heat, paf = make_targets(people({nose: (x, y)}))
    for gx, gy in [(2, 4), (1, 4), (4, 4), (2, 2), (3, 6), (5, 4), (2, 7), (10, 10)]:
        assert heat[0, nose, gy, gx].item() == pytest.approx(gaussian(x, y, gx, gy), rel=1e-6)
    assert heat[0, nose, 4, 2].item() == pytest.approx(math.exp(-0.5 / 98), rel=1e-6)
    assert heat[0, nose, 4, 4].item() == pytest.approx(math.exp(-240.5 / 98), rel=1e-6)
    assert heat[0, nose, 4, 5].item() == 0.0  # d = 23.5 px > 3σ: cut
    assert heat[0, nose, 2, 3].item() > 0.01  # d² = 298.5 px²: kept, just inside the cut
    others = [k for k in range(NUM_KEYPOINTS) if k != nose]
    assert torch.all(heat[0, others] == 0)
    assert torch.allclose(heat[0, 18], 1 - heat[0, nose])
    assert torch.all(paf == 0)


def test_background_is_one_minus_max() -> None:
    heat, _ = make_targets(people({0: (27.5, 27.5), 5: (40.0, 34.0), 9: (90.0, 100.0)}))
    assert torch.allclose(heat[0, 18], 1 - heat[0, :18].amax(dim=0))
    assert heat[0, 18, 3, 3] == 0.0  # keypoint 0 sits on that cell's centre
    assert heat[0, 18].max() == 1.0


def test_heatmap_takes_the_max_over_persons_not_the_sum() -> None:
    one, _ = make_targets(people({0: (40.0, 40.0)}))
    two, _ = make_targets(people({0: (40.0, 40.0)}, {0: (44.0, 40.0)}))
    other, _ = make_targets(people({0: (44.0, 40.0)}))
    assert torch.equal(two[0, 0], torch.maximum(one[0, 0], other[0, 0]))
    assert two.max() <= 1.0


# A horizontal limb in grid units: cell centres sit at g + 0.4375. From (2.6875, 5.6875) to
# (6.1875, 5.6875): rows 5 (d = 0.25) and 6 (d = 0.75) are within 1 cell, row 4 (d = 1.25) is not;
# columns 3, 4, 5 project between the ends, columns 2 and 6 do not.
LIMB = 0
A_PX, B_PX = (21.5, 45.5), (49.5, 45.5)


def test_horizontal_limb_exact_cells() -> None:
    a, b = LIMBS[LIMB]
    _, paf = make_targets(people({a: A_PX, b: B_PX}))
    expected = torch.zeros(G, G)
    expected[5:7, 3:6] = 1.0
    assert torch.equal(paf[0, 2 * LIMB], expected)
    assert torch.all(paf[0, 2 * LIMB + 1] == 0)
    assert torch.all(paf[0, 2:] == 0)


def test_reversed_limb_points_the_other_way() -> None:
    a, b = LIMBS[LIMB]
    _, paf = make_targets(people({a: B_PX, b: A_PX}))
    assert paf[0, 2 * LIMB, 5, 4].item() == -1.0


def test_limb_thickness_widens_the_band() -> None:
    a, b = LIMBS[LIMB]
    _, paf = make_targets(people({a: A_PX, b: B_PX}), paf_thickness=1.5)
    assert torch.equal(
        paf[0, 2 * LIMB, :, 4].nonzero().flatten(), torch.tensor([4, 5, 6])
    )  # row 4: d = 1.25


def test_diagonal_limb_is_a_unit_vector() -> None:
    a, b = LIMBS[3]
    _, paf = make_targets(people({a: (20.0, 20.0), b: (80.0, 100.0)}))
    x, y = paf[0, 6], paf[0, 7]
    on = (x != 0) | (y != 0)
    assert on.sum() > 10
    assert torch.allclose(x[on], torch.full_like(x[on], 0.6))
    assert torch.allclose(y[on], torch.full_like(y[on], 0.8))


def test_overlapping_persons_average() -> None:
    a, b = LIMBS[LIMB]
    # Person 2 is vertical at grid x = 4.6875 (columns 4 and 5), rows 3..7.
    _, paf = make_targets(people({a: A_PX, b: B_PX}, {a: (37.5, 21.5), b: (37.5, 65.5)}))
    x, y = paf[0, 2 * LIMB], paf[0, 2 * LIMB + 1]
    assert (x[5, 4].item(), y[5, 4].item()) == (0.5, 0.5)  # both persons
    assert (x[6, 5].item(), y[6, 5].item()) == (0.5, 0.5)
    assert (x[5, 3].item(), y[5, 3].item()) == (1.0, 0.0)  # person 1 only
    assert (x[3, 4].item(), y[3, 4].item()) == (0.0, 1.0)  # person 2 only
    assert (x[7, 5].item(), y[7, 5].item()) == (0.0, 1.0)
    assert (x[8, 4].item(), y[8, 4].item()) == (0.0, 0.0)  # past person 2's end


def test_zero_length_and_half_labelled_limbs_are_skipped() -> None:
    a, b = LIMBS[LIMB]
    _, same = make_targets(people({a: (40.0, 40.0), b: (40.0, 40.0)}))
    one_end = people({a: A_PX, b: B_PX})
    one_end[0, 0, b, 2] = 0
    _, half = make_targets(one_end)
    assert torch.all(same == 0) and torch.all(half == 0)


def test_unlabelled_keypoints_contribute_nothing() -> None:
    gen = torch.Generator().manual_seed(1)
    kps = random_keypoints(gen, batch=2, persons=2)
    ghost = torch.rand(2, 1, NUM_KEYPOINTS, 3, generator=gen) * S
    ghost[..., 2] = 0  # coordinates but no label
    with_ghost = make_targets(torch.cat([kps, ghost], dim=1))
    without = make_targets(kps)
    assert torch.equal(with_ghost[0], without[0]) and torch.equal(with_ghost[1], without[1])


def test_flip_symmetry_is_exact() -> None:
    kps = random_keypoints(torch.Generator().manual_seed(0), batch=6, persons=3)
    heat, paf = make_targets(kps)
    heat_f, paf_f = make_targets(flip_keypoints(kps))
    want_heat, want_paf = flip_maps(heat, paf)
    assert torch.equal(heat_f, want_heat)
    assert torch.equal(paf_f, want_paf)
    assert (paf != 0).any()  # the check is not vacuous


def test_batch_equals_single_calls() -> None:
    kps = random_keypoints(torch.Generator().manual_seed(2), batch=5, persons=3)
    heat, paf = make_targets(kps, sigma=5.0, paf_thickness=1.2)
    for i in range(kps.shape[0]):
        h1, p1 = make_targets(kps[i : i + 1], sigma=5.0, paf_thickness=1.2)
        assert torch.equal(heat[i : i + 1], h1) and torch.equal(paf[i : i + 1], p1)


def test_other_sizes() -> None:
    heat, paf = make_targets(people({0: (10.0, 10.0)}), input_size=64, stride=4)
    assert heat.shape == (1, 19, 16, 16) and paf.shape == (1, 38, 16, 16)
    assert heat[0, 0, 2, 2].item() == pytest.approx(math.exp(-(0.5**2 * 2) / 98), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({}, (1, 2, 17, 3)),
        ({}, (2, 18, 3)),
        ({"stride": 7}, (1, 1, 18, 3)),
        ({"stride": 0}, (1, 1, 18, 3)),
        ({"sigma": 0.0}, (1, 1, 18, 3)),
        ({"paf_thickness": -1.0}, (1, 1, 18, 3)),
    ],
)
def test_bad_input_is_rejected(kwargs: dict[str, float], shape: tuple[int, ...]) -> None:
    with pytest.raises(KdtuneError):
        make_targets(torch.zeros(shape), **kwargs)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    kps = random_keypoints(torch.Generator().manual_seed(3), batch=8, persons=4)
    heat, paf = make_targets(kps)
    heat_c, paf_c = make_targets(kps.cuda())
    assert heat_c.device.type == "cuda"
    assert torch.allclose(heat_c.cpu(), heat, atol=1e-6)
    assert torch.allclose(paf_c.cpu(), paf, atol=1e-6)
