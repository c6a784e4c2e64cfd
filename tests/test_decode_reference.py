"""Tests of kdtune.decode_reference: the reference pipeline's peaks and grouping, golden
behaviour on hand-made maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_decode import GRID, STRIDE, gaussian, paint, person, two_persons

from kdtune.decode import Person
from kdtune.decode_reference import (
    REFERENCE_LIMB_ORDER,
    ReferenceOptions,
    decode_batch_reference,
    extract_peaks,
    upsample,
)
from kdtune.errors import KdtuneError
from kdtune.evaluate import decode_maps
from kdtune.skeleton import LIMBS, NECK, NUM_KEYPOINTS, OP18

EYES = [OP18.index("r_eye"), OP18.index("l_eye")]


def found(p: Person) -> list[str]:
    """The names of the joints a person holds."""
    return [OP18[j] for j in np.nonzero(p.keypoints[:, 2] > 0)[0]]


def test_limbs_are_grouped_in_the_reference_order() -> None:
    names = [(OP18[LIMBS[k][0]], OP18[LIMBS[k][1]]) for k in REFERENCE_LIMB_ORDER]
    assert names[:2] == [("neck", "r_sho"), ("neck", "l_sho")]
    assert names[-2:] == [("r_sho", "r_ear"), ("l_sho", "l_ear")]
    assert sorted(REFERENCE_LIMB_ORDER) == list(range(len(LIMBS)))


def test_upsampling_is_opencvs_bicubic() -> None:
    cv2 = pytest.importorskip("cv2")
    maps = np.random.default_rng(0).random((GRID, GRID, 3)).astype(np.float32)
    want = cv2.resize(maps, (0, 0), fx=STRIDE, fy=STRIDE, interpolation=cv2.INTER_CUBIC)
    got = upsample(torch.from_numpy(maps).permute(2, 0, 1)[None], STRIDE)[0].permute(1, 2, 0)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_peaks_are_strict_four_neighbour_maxima_above_the_threshold() -> None:
    heat = torch.zeros(1, NUM_KEYPOINTS, 12, 12)
    heat[0, 0, 5, 5] = heat[0, 0, 5, 6] = 0.5  # a plateau: no pixel is strictly greater
    heat[0, 1, 2, 2] = 0.09  # below the threshold
    heat[0, 2, 0, 11] = 0.4  # on the border: zero beyond it
    heat[0, 3, 4, 4], heat[0, 3, 5, 5] = 0.6, 0.7  # diagonal neighbours: both are maxima
    peaks = extract_peaks(heat, ReferenceOptions())[0]
    assert len(peaks[0]) == 0 and len(peaks[1]) == 0
    np.testing.assert_allclose(peaks[2], [[11, 0, 0.4]], rtol=1e-6)
    # 1.41 pixels apart: the left one suppresses the other, though it is weaker
    np.testing.assert_allclose(peaks[3], [[4, 4, 0.6]], rtol=1e-6)
    assert [len(p) for p in peaks[4:]] == [0] * (NUM_KEYPOINTS - 4)


def test_suppression_goes_by_column_not_by_score() -> None:
    heat = torch.zeros(1, NUM_KEYPOINTS, 12, 16)
    heat[0, 0, 5, 3] = 0.3  # weak, leftmost: kept
    heat[0, 0, 5, 6] = 0.9  # strong, 3 pixels to its right: suppressed
    heat[0, 0, 5, 10] = 0.5  # 4 from the suppressed one, 7 from the kept one: kept
    peaks = extract_peaks(heat, ReferenceOptions())[0]
    np.testing.assert_allclose(peaks[0], [[3, 5, 0.3], [10, 5, 0.5]], rtol=1e-6)


def test_one_person_golden() -> None:
    truth = person(64, 64, 90)
    heat, paf = paint([truth])
    (persons,) = decode_batch_reference(heat, paf, STRIDE)
    assert len(persons) == 1
    (p,) = persons
    # The eyes sit 4 pixels from the nose: their limbs own no PAF sample, so they are not joined
    # (kdtune's decoder pairs them by proximity). The ears come in by the redundant limbs.
    assert found(p) == [n for n in OP18 if n not in ("r_eye", "l_eye")]
    got = p.keypoints[p.keypoints[:, 2] > 0, :2]
    want = np.delete(truth[:, :2], EYES, axis=0)
    assert np.abs(got - want).max() <= 1.0  # whole pixels: no sub-pixel refinement
    assert np.array_equal(got, np.round(got))
    # 13 tree limbs joined: 14 joints counted; score (peaks + pairs) × (count − 1)
    assert p.score == pytest.approx(331.1777, rel=1e-4)


def test_two_persons_golden() -> None:
    truth = two_persons()
    heat, paf = paint(truth)
    (persons,) = decode_batch_reference(heat, paf, STRIDE)
    assert len(persons) == 2
    left, right = sorted(persons, key=lambda p: p.keypoints[NECK, 0])
    assert [round(p.score, 3) for p in persons] == [429.878, 394.877]  # best first
    assert "r_eye" not in found(left) and "l_eye" not in found(right)
    for got, want in ((left, truth[0]), (right, truth[1])):
        assert len(found(got)) == 17
        seen = got.keypoints[:, 2] > 0
        assert np.abs(got.keypoints[seen, :2] - want[seen, :2]).max() <= 1.0


def three_joint_maps(elbow_paf: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Neck, both shoulders and the right elbow; each limb's PAF a constant unit vector along
    it, the shoulder → elbow one scaled to ``elbow_paf``."""
    points = {"neck": (64, 40), "r_sho": (36, 40), "l_sho": (92, 40), "r_elb": (36, 80)}
    heat = torch.zeros(1, NUM_KEYPOINTS + 1, GRID, GRID)
    for name, (x, y) in points.items():
        heat[0, OP18.index(name)] = torch.from_numpy(gaussian(x, y))
    paf = torch.zeros(1, 2 * len(LIMBS), GRID, GRID)
    for (a, b), scale in (
        (("neck", "r_sho"), 1.0),
        (("neck", "l_sho"), 1.0),
        (("r_sho", "r_elb"), elbow_paf),
    ):
        k = LIMBS.index((OP18.index(a), OP18.index(b)))
        d = np.subtract(points[b], points[a]) / np.hypot(*np.subtract(points[b], points[a]))
        paf[0, 2 * k], paf[0, 2 * k + 1] = scale * d[0], scale * d[1]
    return heat, paf


@pytest.mark.parametrize(("elbow_paf", "joined"), [(0.04, False), (0.05, False), (0.06, True)])
def test_a_limb_below_the_paf_threshold_is_not_joined(elbow_paf: float, joined: bool) -> None:
    (persons,) = decode_batch_reference(*three_joint_maps(elbow_paf), STRIDE)
    assert len(persons) == 1
    want = ["neck", "r_sho", "r_elb", "l_sho"] if joined else ["neck", "r_sho", "l_sho"]
    assert found(persons[0]) == want


def test_two_joints_are_not_a_person() -> None:
    heat, paf = three_joint_maps(0.0)
    heat[0, OP18.index("l_sho")] = 0
    assert decode_batch_reference(heat, paf, STRIDE) == [[]]


def test_batches_decode_like_single_images() -> None:
    maps = [paint(two_persons()), paint([person(64, 60, 90)]), paint([])]
    heat = torch.cat([maps[i % 3][0] for i in range(20)])  # more than one chunk
    paf = torch.cat([maps[i % 3][1] for i in range(20)])
    batch = decode_batch_reference(heat, paf)
    assert [len(p) for p in batch] == [[2, 1, 0][i % 3] for i in range(20)]
    for i in (0, 1, 17, 19):
        single = decode_batch_reference(heat[i : i + 1], paf[i : i + 1])[0]
        for a, b in zip(batch[i], single, strict=True):
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
            assert a.score == b.score


def test_noise_maps_decode_to_valid_persons() -> None:
    gen = torch.Generator().manual_seed(0)
    heat = torch.rand(2, 19, GRID, GRID, generator=gen)
    paf = torch.rand(2, 38, GRID, GRID, generator=gen) - 0.5
    for persons in decode_batch_reference(heat, paf):
        for p in persons:
            assert p.keypoints.shape == (NUM_KEYPOINTS, 3)
            assert (p.keypoints[:, 2] > 0).sum() >= 2
            assert ((p.keypoints[:, :2] >= 0) & (p.keypoints[:, :2] < GRID * STRIDE)).all()


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="heatmaps"):
        decode_batch_reference(torch.zeros(1, 5, GRID, GRID), torch.zeros(1, 38, GRID, GRID))
    with pytest.raises(ValueError, match="pafs"):
        decode_batch_reference(torch.zeros(1, 19, GRID, GRID), torch.zeros(2, 38, GRID, GRID))


def test_decode_maps_picks_the_decoder() -> None:
    heat, paf = paint(two_persons())
    ref = decode_maps(heat, paf, STRIDE, "reference")
    assert [p.score for p in ref[0]] == [p.score for p in decode_batch_reference(heat, paf)[0]]
    own = decode_maps(heat, paf, STRIDE, "kdtune")
    assert len(own[0]) == 2 and found(own[0][0]) != found(ref[0][0])  # kdtune finds the eyes
    with pytest.raises(KdtuneError, match="decoder: one of kdtune, reference, got 'nope'"):
        decode_maps(heat, paf, STRIDE, "nope")


def test_ceiling_on_real_coco_is_lower_with_the_reference_decoder(
    minipose: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {}
    for decoder in ("kdtune", "reference"):
        args = ["data", "ceiling", "--data", str(minipose), "--results", str(tmp_path)]
        code, out, err = run_cli([*args, "--decoder", decoder], capsys)
        assert code == 0, err
        figures[decoder] = json.loads(out)
        assert figures[decoder]["decoder"] == decoder
    # measured: 0.512 and 0.260 (README, "Decoders")
    assert figures["reference"]["val/ap"] == pytest.approx(0.260, abs=0.02)
    assert figures["kdtune"]["val/ap"] > figures["reference"]["val/ap"] + 0.2


def test_the_decoders_benchmark_runs(synth_root: Path, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = tmp_path / "decoders.json"
    args = ["--data", str(synth_root), "--samples", "10", "--results", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "decoders.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["images"] == 24 and figures["maps"] == "ground truth"
    assert 0.0 < figures["reference/ap"] < figures["kdtune/ap"] <= 1.0
    low, high = figures["difference_95ci"]
    assert low <= figures["kdtune_minus_reference"] <= high
