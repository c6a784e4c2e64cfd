"""Batched augmentation: identities, flips, and agreement between images, keypoints and maps."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdtune.augment import (
    BLACK,
    Affine,
    AugmentParams,
    apply,
    make_affine,
    normalize,
    sample_affine,
    transform_keypoints,
    warp_maps,
)
from kdtune.errors import KdtuneError
from kdtune.skeleton import FLIP_OP18, NUM_KEYPOINTS, OP18
from kdtune.targets import make_targets

S = 128
G = 16

# A standing person around the image centre, in OP18 order (x, y).
POSE = {
    "nose": (64, 30), "neck": (64, 44), "r_sho": (54, 44), "r_elb": (50, 58), "r_wri": (48, 70),
    "l_sho": (74, 44), "l_elb": (78, 58), "l_wri": (80, 70), "r_hip": (58, 74), "r_knee": (57, 90),
    "r_ank": (56, 104), "l_hip": (70, 74), "l_knee": (71, 90), "l_ank": (72, 104),
    "r_eye": (61, 27), "l_eye": (67, 27), "r_ear": (58, 29), "l_ear": (70, 29),
}  # fmt: skip


def person_batch(batch: int) -> torch.Tensor:
    """``batch`` copies of POSE as [B, 1, 18, 3], every keypoint labelled."""
    kp = torch.tensor([[*POSE[name], 2.0] for name in OP18])
    return kp.expand(batch, 1, NUM_KEYPOINTS, 3).clone()


def random_batch(seed: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images, keypoints on a 1/16-pixel lattice (some unlabelled) and binary masks."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, S, S), generator=gen, dtype=torch.uint8)
    xy = torch.randint(0, 16 * S, (batch, 2, NUM_KEYPOINTS, 2), generator=gen) / 16
    v = (torch.rand(batch, 2, NUM_KEYPOINTS, 1, generator=gen) < 0.7).float() * 2
    keypoints = torch.cat([xy, v], dim=-1) * (v > 0)
    masks = (torch.rand(batch, S, S, generator=gen) < 0.3).to(torch.uint8)
    return images, keypoints, masks


def flip_affine(batch: int) -> Affine:
    return make_affine(
        torch.ones(batch), torch.zeros(batch), torch.ones(batch, dtype=torch.bool), S
    )


def mixed_affine() -> Affine:
    """Four samples: rotate+scale+flip, rotate+shrink, pure flip, rotate+zoom+flip."""
    return make_affine(
        torch.tensor([1.2, 0.8, 1.0, 1.25]),
        torch.tensor([15.0, -20.0, 0.0, 20.0]),
        torch.tensor([True, False, True, True]),
        S,
    )


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised images back to uint8 (exact when within half a grey level)."""
    return ((images - BLACK) * 255).round().to(torch.uint8)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


def test_normalize_contract() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    out = normalize(images)
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([-0.5, -0.3, 0.5])
    with pytest.raises(KdtuneError, match="uint8"):
        normalize(out)


def test_identity_reproduces_inputs() -> None:
    images, keypoints, masks = random_batch(0)
    out_images, out_keypoints, out_masks = apply(images, keypoints, masks, Affine.identity(3, S))
    assert out_images.dtype == torch.float32 and out_masks.dtype == torch.uint8
    # grid_sample's coordinates are off by ~1e-5 px: a 300th of a grey level at most.
    assert torch.allclose(out_images, normalize(images), atol=3e-5)
    assert torch.equal(to_uint8(out_images), images)
    assert torch.equal(out_keypoints, keypoints)
    assert torch.equal(out_masks, masks)


def test_identity_keeps_maps() -> None:
    heat, paf = make_targets(person_batch(2))
    heat_w, paf_w = warp_maps(heat, paf, Affine.identity(2, S))
    assert torch.allclose(heat_w, heat, atol=3e-5) and torch.allclose(paf_w, paf, atol=3e-5)


def test_one_flip_mirrors_pixels_and_swaps_sides() -> None:
    images, keypoints, masks = random_batch(1)
    out_images, out_keypoints, out_masks = apply(images, keypoints, masks, flip_affine(3))
    assert torch.allclose(out_images, normalize(images).flip(-1), atol=3e-5)
    assert torch.equal(to_uint8(out_images), images.flip(-1))
    assert torch.equal(out_masks, masks.flip(-1))
    want = keypoints[:, :, list(FLIP_OP18)].clone()
    want[..., 0] = (S - 1 - want[..., 0]) * (want[..., 2] > 0)
    assert torch.equal(out_keypoints, want)


def test_flip_twice_is_identity() -> None:
    images, keypoints, masks = random_batch(2)
    flip = flip_affine(3)
    once = apply(images, keypoints, masks, flip)
    twice = apply(*once, flip)  # float images: taken as already normalised
    assert torch.equal(to_uint8(twice[0]), images)
    assert torch.equal(twice[1], keypoints)
    assert torch.equal(twice[2], masks)


def test_affine_geometry_golden() -> None:
    """A 90° turn about the centre: (x, y) → (c - (y - c), c + (x - c)) with c = 63.5."""
    affine = make_affine(torch.ones(1), torch.full((1,), 90.0), torch.zeros(1, dtype=torch.bool), S)
    kp = torch.zeros(1, 1, NUM_KEYPOINTS, 3)
    kp[0, 0, 0] = torch.tensor([100.0, 20.0, 2.0])
    out = transform_keypoints(kp, affine)
    assert out[0, 0, 0].tolist() == pytest.approx([107.0, 100.0, 2.0], abs=1e-4)
    doubled = make_affine(
        torch.full((1,), 2.0), torch.zeros(1), torch.zeros(1, dtype=torch.bool), S
    )
    kp[0, 0, 0] = torch.tensor([73.5, 53.5, 1.0])
    assert transform_keypoints(kp, doubled)[0, 0, 0].tolist() == pytest.approx([83.5, 43.5, 1.0])


def test_keypoints_leaving_the_image_are_dropped() -> None:
    kp = torch.zeros(1, 1, NUM_KEYPOINTS, 3)
    kp[0, 0, 0] = torch.tensor([5.0, 64.0, 2.0])  # near the left edge: out once zoomed
    kp[0, 0, 1] = torch.tensor([64.0, 64.0, 2.0])  # the centre stays
    zoom = make_affine(torch.full((1,), 1.25), torch.zeros(1), torch.zeros(1, dtype=torch.bool), S)
    out = transform_keypoints(kp, zoom)
    assert out[0, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert out[0, 0, 1, 2].item() == 2.0


def test_bright_blob_moves_with_its_keypoint() -> None:
    """A blob drawn at l_wri is found, after augmentation, where the keypoint went (renamed
    r_wri where the sample was flipped)."""
    affine = mixed_affine()
    keypoints = person_batch(4)
    wrist = OP18.index("l_wri")
    images = torch.zeros(4, 3, S, S, dtype=torch.uint8)
    x, y = (int(v) for v in POSE["l_wri"])
    images[:, 0, y - 1 : y + 2, x - 1 : x + 2] = 255
    out_images, out_keypoints, _ = apply(
        images, keypoints, torch.zeros(4, S, S, dtype=torch.uint8), affine
    )
    for i in range(4):
        name = FLIP_OP18[wrist] if affine.flipped[i] else wrist
        want = out_keypoints[i, 0, name, :2]
        flat = out_images[i, 0].argmax()
        found = torch.tensor([flat % S, flat // S], dtype=torch.float32)
        assert torch.dist(found, want) <= 1.5, (i, found, want)


def test_masks_stay_binary_and_empty_outside() -> None:
    _, _, masks = random_batch(3, batch=4)
    ones = torch.ones_like(masks)
    out_masks = apply(
        torch.zeros(4, 3, S, S, dtype=torch.uint8), torch.zeros(4, 0, 18, 3), masks, mixed_affine()
    )[2]
    assert out_masks.dtype == torch.uint8 and set(out_masks.unique().tolist()) <= {0, 1}
    shrunk = apply(
        torch.zeros(4, 3, S, S, dtype=torch.uint8), torch.zeros(4, 0, 18, 3), ones, mixed_affine()
    )[2]
    assert (
        shrunk[1, 0, 0] == 0 and shrunk[1, 64, 64] == 1
    )  # sample 1 shrinks: corners come from outside


def test_outside_regions_are_black_and_background() -> None:
    white = torch.full((4, 3, S, S), 255, dtype=torch.uint8)
    out = apply(
        white, torch.zeros(4, 0, 18, 3), torch.zeros(4, S, S, dtype=torch.uint8), mixed_affine()
    )[0]
    assert out[1, :, 0, 0].tolist() == [-0.5] * 3 and out[1, :, 64, 64].tolist() == pytest.approx(
        [0.5] * 3
    )
    heat, paf = make_targets(person_batch(4))
    heat_w, paf_w = warp_maps(heat, paf, mixed_affine())
    assert heat_w[1, 18, 0, 0].item() == 1.0 and torch.all(heat_w[1, :18, 0, 0] == 0)
    assert torch.all(paf_w[1, :, 0, 0] == 0)


def test_pure_flip_maps_match_targets_of_flipped_keypoints() -> None:
    keypoints = person_batch(2)
    flip = flip_affine(2)
    heat_w, paf_w = warp_maps(*make_targets(keypoints), flip)
    heat_a, paf_a = make_targets(transform_keypoints(keypoints, flip))
    assert torch.allclose(heat_w, heat_a, atol=1e-5) and torch.allclose(paf_w, paf_a, atol=1e-5)


def test_warped_teacher_maps_agree_with_targets_of_augmented_keypoints() -> None:
    """Rotations, scales and flips: per-keypoint peaks land on the same cell (±1), heatmaps
    correlate, PAF vectors point the same way (cos > 0.92; without turning the vectors the
    -20° sample scores 0.88, and without the flip permutation the heatmaps correlate ~0.35)."""
    keypoints = person_batch(4)
    affine = mixed_affine()
    heat_w, paf_w = warp_maps(*make_targets(keypoints), affine)
    heat_a, paf_a = make_targets(transform_keypoints(keypoints, affine))
    for i in range(4):
        assert correlation(heat_w[i, :18], heat_a[i, :18]) > 0.9
        peak_w, peak_a = heat_w[i, :18].flatten(1).argmax(1), heat_a[i, :18].flatten(1).argmax(1)
        assert torch.all((peak_w // G - peak_a // G).abs() <= 1)
        assert torch.all((peak_w % G - peak_a % G).abs() <= 1)
        vec_w, vec_a = paf_w[i].reshape(19, 2, G, G), paf_a[i].reshape(19, 2, G, G)
        on = vec_a.norm(dim=1) > 0
        cos = (vec_w * vec_a).sum(1)[on] / vec_w.norm(dim=1)[on].clamp_min(1e-6)
        assert cos.mean() > 0.92, (i, cos.mean())


def test_batch_equals_single_samples() -> None:
    images, keypoints, masks = random_batch(4, batch=4)
    affine = mixed_affine()
    batched = apply(images, keypoints, masks, affine)
    heat, paf = make_targets(keypoints)
    maps = warp_maps(heat, paf, affine)
    for i in range(4):
        one = apply(images[i : i + 1], keypoints[i : i + 1], masks[i : i + 1], affine[i])
        for got, want in zip(one, batched, strict=True):
            assert torch.allclose(got, want[i : i + 1], atol=1e-6)
        one_maps = warp_maps(heat[i : i + 1], paf[i : i + 1], affine[i])
        for got, want in zip(one_maps, maps, strict=True):
            assert torch.allclose(got, want[i : i + 1], atol=1e-6)


def test_sampling_is_deterministic_and_within_range() -> None:
    params = AugmentParams(scale=(0.75, 1.25), rotate=20.0, flip=0.5)
    a = sample_affine(256, params, torch.Generator().manual_seed(7))
    b = sample_affine(256, params, torch.Generator().manual_seed(7))
    c = sample_affine(256, params, torch.Generator().manual_seed(8))
    assert torch.equal(a.matrix, b.matrix) and torch.equal(a.flipped, b.flipped)
    assert not torch.equal(a.matrix, c.matrix)
    linear = a.matrix[:, :, :2]
    scale = linear.det().abs().sqrt()
    assert scale.min() >= 0.75 - 1e-5 and scale.max() <= 1.25 + 1e-5
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 1, 1]))  # 2nd row: s·(±sin, cos)
    assert angle.abs().max() <= 20.0 + 1e-4
    assert torch.equal(linear.det() < 0, a.flipped)
    assert 0.3 < a.flipped.float().mean() < 0.7
    centre = torch.full((256, 2, 1), (S - 1) / 2)
    assert torch.allclose(linear @ centre + a.matrix[:, :, 2:], centre, atol=1e-4)  # centre fixed


def test_no_augmentation_params_give_identity() -> None:
    params = AugmentParams(scale=(1.0, 1.0), rotate=0.0, flip=0.0)
    affine = sample_affine(5, params, torch.Generator().manual_seed(0))
    assert torch.equal(affine.matrix, Affine.identity(5, S).matrix)


def test_shape_mismatch_is_rejected() -> None:
    images, keypoints, masks = random_batch(5, batch=2)
    with pytest.raises(KdtuneError, match="affine"):
        apply(images, keypoints, masks, Affine.identity(3, S))
    with pytest.raises(KdtuneError, match="masks"):
        apply(images, keypoints, masks[:, :64], Affine.identity(2, S))
    with pytest.raises(KdtuneError, match="transforms"):
        transform_keypoints(keypoints, Affine.identity(1, S))
    with pytest.raises(KdtuneError, match="transforms"):
        warp_maps(torch.zeros(2, 19, G, G), torch.zeros(2, 38, G, G), Affine.identity(1, S))
    with pytest.raises(KdtuneError, match="input_size"):
        warp_maps(torch.zeros(2, 19, G, G), torch.zeros(2, 38, G, G), Affine.identity(2, S), 256)


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(lo=finite, hi=finite, rotate=finite, flip=finite)
def test_params_are_validated(lo: float, hi: float, rotate: float, flip: float) -> None:
    valid = 0 < lo <= hi and 0 <= rotate <= 180 and 0 <= flip <= 1
    if valid:
        params = AugmentParams(scale=(lo, hi), rotate=rotate, flip=flip)
        assert params.scale == (lo, hi)
    else:
        with pytest.raises(KdtuneError):
            AugmentParams(scale=(lo, hi), rotate=rotate, flip=flip)


@given(angle=st.floats(-180, 180), scale=st.floats(0.5, 2.0), flipped=st.booleans())
def test_keypoints_follow_the_matrix(angle: float, scale: float, flipped: bool) -> None:
    """Distances between labelled keypoints scale by ``scale`` whatever the turn and flip."""
    affine = make_affine(torch.tensor([scale]), torch.tensor([angle]), torch.tensor([flipped]), S)
    kp = torch.zeros(1, 1, NUM_KEYPOINTS, 3)
    kp[0, 0, 0] = torch.tensor([60.0, 60.0, 2.0])
    kp[0, 0, 1] = torch.tensor([66.0, 68.0, 2.0])  # 10 px apart, near the centre
    out = transform_keypoints(kp, affine)[0, 0]
    kept = out[out[:, 2] > 0]
    assert kept.shape[0] == 2
    assert math.isclose(torch.dist(kept[0, :2], kept[1, :2]).item(), 10 * scale, rel_tol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    images, keypoints, masks = random_batch(6, batch=4)
    affine = mixed_affine()
    cpu = apply(images, keypoints, masks, affine)
    gpu = apply(images.cuda(), keypoints.cuda(), masks.cuda(), affine)
    for got, want in zip(gpu, cpu, strict=True):
        assert got.device.type == "cuda"
        assert torch.allclose(got.cpu().float(), want.float(), atol=1e-4)
    heat, paf = make_targets(person_batch(4))
    maps_gpu = warp_maps(heat.cuda(), paf.cuda(), affine)
    for got, want in zip(maps_gpu, warp_maps(heat, paf, affine), strict=True):
        assert torch.allclose(got.cpu(), want, atol=1e-4)
