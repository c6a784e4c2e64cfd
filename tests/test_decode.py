"""Tests of kdtune.decode: peak localisation, PAF grouping, COCO results."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.decode import LIMB_ORDER, Person, decode_batch, find_peaks, persons_to_coco
from kdtune.skeleton import COCO17, LIMBS, NECK, NUM_KEYPOINTS, OP18, coco17_to_op18

STRIDE, SIZE, SIGMA = 8, 128, 7.0
GRID = SIZE // STRIDE
CENTRES = np.arange(GRID) * STRIDE + STRIDE / 2 - 0.5  # input pixel of each cell's centre

# A frontal person of height 1, centred on (0, 0), COCO-17 order ("l_" on the image's right).
_TEMPLATE = np.array(
    [[0, -.42], [.04, -.45], [-.04, -.45], [.08, -.43], [-.08, -.43],
     [.12, -.3], [-.12, -.3], [.16, -.1], [-.16, -.1], [.18, .08], [-.18, .08],
     [.08, .05], [-.08, .05], [.09, .27], [-.09, .27], [.1, .48], [-.1, .48]],
)  # fmt: skip


def person(cx: float, cy: float, height: float) -> np.ndarray:
    """OP18 keypoints ``[18, 3]`` (x, y, v=2) of the template person, in input pixels."""
    coco = np.concatenate([_TEMPLATE * height + (cx, cy), np.full((17, 1), 2.0)], axis=1)
    return coco17_to_op18(coco)


def gaussian(x: float, y: float) -> np.ndarray:
    """``[G, G]``: a Gaussian of ``SIGMA`` pixels centred on input pixel (x, y)."""
    return np.exp(-((CENTRES[None, :] - x) ** 2 + (CENTRES[:, None] - y) ** 2) / (2 * SIGMA**2))


def paint(persons: list[np.ndarray], thickness: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference targets for one image, written out plainly (the documented convention).

    Heatmaps: max over persons of a Gaussian at the cell centres ``g * stride + stride/2 - 0.5``.
    PAFs: the unit vector of a limb on cells within ``thickness`` cells of it, averaged.
    """
    cx, cy = np.meshgrid(CENTRES, CENTRES)
    heat = np.zeros((NUM_KEYPOINTS + 1, GRID, GRID), dtype=np.float32)
    paf = np.zeros((len(LIMBS), 2, GRID, GRID), dtype=np.float32)
    count = np.zeros((len(LIMBS), GRID, GRID), dtype=np.float32)
    for kps in persons:
        for j, (x, y, v) in enumerate(kps):
            if v > 0:
                heat[j] = np.maximum(heat[j], gaussian(x, y))
        for k, (a, b) in enumerate(LIMBS):
            if kps[a, 2] <= 0 or kps[b, 2] <= 0:
                continue
            d = (kps[b, :2] - kps[a, :2]) / STRIDE
            length = float(np.hypot(*d))
            if length == 0:
                continue
            u = d / length
            ox, oy = (cx - kps[a, 0]) / STRIDE, (cy - kps[a, 1]) / STRIDE
            along, across = ox * u[0] + oy * u[1], np.abs(ox * u[1] - oy * u[0])
            on = (along >= 0) & (along <= length) & (across <= thickness)
            paf[k, :, on] += u
            count[k, on] += 1
    heat[-1] = 1 - heat[:-1].max(axis=0)
    paf /= np.maximum(count, 1)[:, None]
    return torch.from_numpy(heat)[None], torch.from_numpy(paf.reshape(-1, GRID, GRID))[None]


def two_persons() -> list[np.ndarray]:
    return [person(34, 62, 80), person(94, 66, 70)]


def test_limb_order_grows_from_the_neck() -> None:
    reached = {NECK}
    for k in LIMB_ORDER[:-2]:
        a, b = LIMBS[k]
        assert a in reached and b not in reached
        reached.add(b)
    assert reached == set(range(NUM_KEYPOINTS))
    redundant = {(OP18[LIMBS[k][0]], OP18[LIMBS[k][1]]) for k in LIMB_ORDER[-2:]}
    assert redundant == {("r_sho", "r_ear"), ("l_sho", "l_ear")}
    assert sorted(LIMB_ORDER) == list(range(len(LIMBS)))


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(0, SIZE - 1),
    y=st.floats(0, SIZE - 1),
    upsample=st.sampled_from([1, 2, 4]),
)
def test_a_gaussian_peak_decodes_back_to_its_pixel(x: float, y: float, upsample: int) -> None:
    heat = torch.zeros(1, 4, GRID, GRID)
    heat[0, 3] = torch.from_numpy(gaussian(x, y))
    peaks = find_peaks(heat, STRIDE, upsample, 0.1)
    assert peaks.joint.tolist() == [3]
    assert np.hypot(peaks.xy[0, 0] - x, peaks.xy[0, 1] - y) < 1.0
    assert peaks.score[0] > 0.5


def test_plateau_gives_one_peak() -> None:
    heat = torch.zeros(1, 1, 4, 4)
    heat[0, 0, 1, 1:3] = 1.0  # two equal neighbours
    peaks = find_peaks(heat, stride=8, upsample=1, thresh=0.1)
    assert len(peaks.score) == 1


def test_two_persons_round_trip() -> None:
    truth = two_persons()
    heat, paf = paint(truth)
    (persons,) = decode_batch(heat, paf, stride=STRIDE)
    assert len(persons) == 2
    decoded = sorted(persons, key=lambda p: p.keypoints[NECK, 0])
    for got, want in zip(decoded, truth, strict=True):
        assert (got.keypoints[:, 2] > 0.5).all()  # every joint found
        assert np.abs(got.keypoints[:, :2] - want[:, :2]).max() < 2.0
        assert 0.5 < got.score <= 1.0


def test_round_trip_with_kdtune_targets() -> None:
    targets = pytest.importorskip("kdtune.targets")
    truth = two_persons()
    heat, paf = targets.make_targets(
        torch.from_numpy(np.stack(truth))[None], input_size=SIZE, stride=STRIDE, sigma=SIGMA
    )
    (persons,) = decode_batch(heat, paf, stride=STRIDE)
    assert len(persons) == 2
    decoded = sorted(persons, key=lambda p: p.keypoints[NECK, 0])
    for got, want in zip(decoded, truth, strict=True):
        assert np.abs(got.keypoints[:, :2] - want[:, :2]).max() < 2.0


def test_redundant_limb_merges_a_head_cut_off_the_body() -> None:
    heat, paf = paint([person(64, 64, 90)])
    neck_nose = LIMBS.index((NECK, OP18.index("nose")))
    paf[:, 2 * neck_nose : 2 * neck_nose + 2] = 0
    (persons,) = decode_batch(heat, paf, stride=STRIDE, short_limb=0)
    assert len(persons) == 1
    assert (persons[0].keypoints[:, 2] > 0).all()


def test_short_limb_without_paf_is_joined_by_proximity() -> None:
    kps = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    nose, r_eye, r_ear = OP18.index("nose"), OP18.index("r_eye"), OP18.index("r_ear")
    kps[[nose, r_eye, r_ear]] = [(60, 60, 2), (57, 58, 2), (54, 60, 2)]
    heat, _ = paint([kps])
    paf = torch.zeros(1, 2 * len(LIMBS), GRID, GRID)
    (persons,) = decode_batch(heat, paf, stride=STRIDE)
    assert len(persons) == 1
    assert np.nonzero(persons[0].keypoints[:, 2])[0].tolist() == sorted([nose, r_eye, r_ear])
    assert decode_batch(heat, paf, stride=STRIDE, short_limb=0) == [[]]


def test_empty_and_noise_maps() -> None:
    zeros = decode_batch(torch.zeros(3, 19, GRID, GRID), torch.zeros(3, 38, GRID, GRID))
    assert zeros == [[], [], []]
    gen = torch.Generator().manual_seed(0)
    heat, paf = torch.rand(5, 19, GRID, GRID, generator=gen), torch.rand(5, 38, GRID, GRID) - 0.5
    out = decode_batch(heat, paf)
    assert len(out) == 5
    for persons in out:
        for p in persons:
            assert p.keypoints.shape == (NUM_KEYPOINTS, 3)
            assert (p.keypoints[:, 2] > 0).sum() >= 3
            assert ((p.keypoints[:, :2] >= -0.5) & (p.keypoints[:, :2] <= SIZE - 0.5)).all()


def test_batch_decodes_like_single_images() -> None:
    maps = [paint(two_persons()), paint([person(64, 60, 90)]), paint([])]
    heat = torch.cat([h for h, _ in maps])
    paf = torch.cat([p for _, p in maps])
    batch = decode_batch(heat, paf)
    assert [len(p) for p in batch] == [2, 1, 0]
    for i, (h, p) in enumerate(maps):
        single = decode_batch(h, p)[0]
        for a, b in zip(batch[i], single, strict=True):
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="heatmaps"):
        decode_batch(torch.zeros(1, 5, GRID, GRID), torch.zeros(1, 38, GRID, GRID))
    with pytest.raises(ValueError, match="pafs"):
        decode_batch(torch.zeros(1, 19, GRID, GRID), torch.zeros(2, 38, GRID, GRID))
    with pytest.raises(ValueError, match="stride"):
        decode_batch(torch.zeros(1, 19, GRID, GRID), torch.zeros(1, 38, GRID, GRID), stride=0)


def test_persons_to_coco_maps_back_to_the_original_image() -> None:
    kps = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    kps[OP18.index("l_wri")] = (10.0, 20.0, 0.8)
    kps[NECK] = (50.0, 50.0, 0.9)  # not a COCO keypoint: dropped
    kps[OP18.index("nose")] = (0.5, 16.0, 0.7)
    (res,) = persons_to_coco([Person(kps, 0.25)], image_id=7, scale=0.5, pad=(0.0, 16.0))
    assert res["image_id"] == 7 and res["category_id"] == 1 and res["score"] == 0.25
    values = np.array(res["keypoints"]).reshape(17, 3)
    assert values.shape == (17, 3) and all(isinstance(v, float) for v in res["keypoints"])
    expected = np.zeros((17, 3))
    expected[COCO17.index("l_wri")] = (20.0, 8.0, 0.8)
    expected[COCO17.index("nose")] = (1.0, 0.0, 0.7)
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert persons_to_coco([], image_id=7) == []


@pytest.mark.slow
def test_decoding_128_images_is_fast() -> None:
    maps = [paint(two_persons()), paint([person(64, 60, 90)]), paint([])]
    heat = torch.cat([maps[i % 3][0] for i in range(128)])
    paf = torch.cat([maps[i % 3][1] for i in range(128)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is small and shared: time one core
    try:
        decode_batch(heat[:4], paf[:4])  # warm-up
        start = time.perf_counter()
        out = decode_batch(heat, paf)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 1.0
    assert sum(map(len, out)) == 43 * 2 + 43
