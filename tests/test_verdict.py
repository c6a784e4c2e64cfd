"""The paired verdict's maths: AP recomputed from one matching equals COCOeval's (golden
values on real and synthetic ground truth), a bootstrap replicate equals COCOeval on the
replicate's images, and the paired bootstrap recovers a known difference and covers 0 when
there is none."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools.coco import COCO

from kdtune.errors import KdtuneError
from kdtune.evaluate import (
    ap_replicates,
    bootstrap_replicates,
    coco_keypoint_ap,
    gt_as_detections,
    image_draws,
    load_coco,
    load_matches,
    match_images,
    save_detections,
)
from kdtune.paired import Difference, paired_difference, sentence
from kdtune.verdict import (
    Failure,
    confirm_verdict,
    label,
    percent,
    rank,
    render,
    verdict_block,
)


def _noisy(gt: COCO, ids: list[int], *, seed: int, noise: float, drop: float = 0.0) -> list[dict]:
    """Ground-truth persons as detections, with keypoint noise (pixels), random scores, some
    persons dropped and a few false positives: detections with an AP strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    dets = []
    for d in gt_as_detections(gt, ids):
        if rng.random() < drop:
            continue
        kp = np.asarray(d["keypoints"], float).reshape(-1, 3)
        kp[:, :2] += rng.normal(0.0, noise, size=(len(kp), 2))
        dets.append({**d, "keypoints": kp.ravel().tolist(), "score": float(rng.random())})
    for i in ids[:5]:  # false positives
        dets.append(
            {"image_id": i, "category_id": 1, "keypoints": [5.0, 5.0, 2] * 17, "score": 0.5}
        )
    return dets


@pytest.fixture(scope="module")
def synth_val(synth_root: Path) -> tuple[COCO, list[int]]:
    gt = load_coco(synth_root / "annotations" / "person_keypoints_val2017.json")
    return gt, sorted(gt.getImgIds())


@pytest.mark.parametrize("noise", [0.0, 2.0, 6.0])
def test_ap_from_one_matching_equals_cocoeval_on_synthetic_ground_truth(
    synth_val: tuple[COCO, list[int]], noise: float
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=1, noise=noise, drop=0.2)
    assert match_images(gt, dets, ids).ap() == pytest.approx(
        coco_keypoint_ap(gt, dets, ids)["ap"], abs=1e-12
    )


def test_ap_from_one_matching_equals_cocoeval_on_real_coco(minipose: Path) -> None:
    gt = load_coco(minipose / "annotations" / "person_keypoints_val2017.json")
    ids = sorted(gt.getImgIds())
    dets = _noisy(gt, ids, seed=2, noise=6.0, drop=0.2)
    value = match_images(gt, dets, ids).ap()
    assert 0.05 < value < 0.95
    assert value == pytest.approx(coco_keypoint_ap(gt, dets, ids)["ap"], abs=1e-12)


def test_no_detection_and_no_person_give_zero(synth_val: tuple[COCO, list[int]]) -> None:
    gt, ids = synth_val
    assert match_images(gt, [], ids).ap() == 0.0
    m = match_images(gt, _noisy(gt, ids, seed=0, noise=1.0), ids)
    assert m.ap(np.zeros(len(ids))) == 0.0  # no image drawn: nothing to measure


def _replicate_by_cocoeval(gt: COCO, dets: list[dict], drawn: list[int]) -> float:
    """COCOeval on a replicate built as a new COCO set: each drawn image under a fresh id."""
    images, anns = [], []
    for new_id, old in enumerate(drawn, start=1):
        images.append({**gt.imgs[old], "id": new_id})
        anns += [
            {**a, "id": len(anns) + k + 1, "image_id": new_id}
            for k, a in enumerate(gt.imgToAnns.get(old, []))
        ]
    with contextlib.redirect_stdout(io.StringIO()):
        replicate = COCO()
        replicate.dataset = {
            "images": images,
            "annotations": anns,
            "categories": gt.dataset["categories"],
        }
        replicate.createIndex()
    moved = [
        {**d, "image_id": new_id}
        for new_id, old in enumerate(drawn, start=1)
        for d in dets
        if int(d["image_id"]) == old
    ]
    return coco_keypoint_ap(replicate, moved, range(1, len(drawn) + 1))["ap"]


def test_a_bootstrap_replicate_equals_cocoeval_on_its_images(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=3, noise=4.0, drop=0.1)
    reps = bootstrap_replicates(gt, {"a": dets}, ids, samples=4, seed=5)["a"]
    rng = np.random.default_rng(5)  # the same draws as bootstrap_replicates
    for value in reps:
        drawn = [ids[int(j)] for j in rng.integers(0, len(ids), len(ids))]
        assert value == pytest.approx(_replicate_by_cocoeval(gt, dets, drawn), abs=1e-12)


def test_saved_detections_give_the_same_matching(
    synth_val: tuple[COCO, list[int]], synth_root: Path, tmp_path: Path
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=4, noise=3.0)
    path = tmp_path / "val_detections.json"
    save_detections(path, synth_root / "annotations" / "person_keypoints_val2017.json", ids, dets)
    assert load_matches(path).ap() == pytest.approx(match_images(gt, dets, ids).ap(), abs=1e-3)
    path.write_text("{not json")
    with pytest.raises(KdtuneError, match="not a kdtune detections file"):
        load_matches(path)


def _configs(gt: COCO, ids: list[int], *, noise: float, drop: float, base: int) -> dict:
    """One configuration trained with seeds 0, 1, 2: a matching per seed."""
    return {
        s: match_images(gt, _noisy(gt, ids, seed=base + s, noise=noise, drop=drop), ids)
        for s in range(3)
    }


def test_the_paired_bootstrap_recovers_a_known_difference(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    good = _configs(gt, ids, noise=1.0, drop=0.0, base=10)
    poor = _configs(gt, ids, noise=4.0, drop=0.4, base=20)
    known = np.mean([good[s].ap() - poor[s].ap() for s in range(3)])
    assert known > 0.2  # constructed so
    diff = paired_difference(good, poor, samples=400, seed=0)
    assert diff.mean == pytest.approx(known)
    assert diff.low > 0 and diff.low < diff.mean < diff.high
    assert diff.sign == 1 and diff.seeds == 3 and diff.images == len(ids)
    back = paired_difference(poor, good, samples=400, seed=0)
    assert back.mean == pytest.approx(-known) and back.sign == -1


def test_with_no_difference_the_interval_covers_zero(synth_val: tuple[COCO, list[int]]) -> None:
    gt, ids = synth_val
    same = _configs(gt, ids, noise=3.0, drop=0.2, base=30)
    exact = paired_difference(same, dict(same), samples=200, seed=0)
    assert (exact.mean, exact.low, exact.high) == (0.0, 0.0, 0.0) and exact.sign == 0
    # two configurations drawn from the same process, with other seeds: noise, no effect
    a = _configs(gt, ids, noise=3.0, drop=0.2, base=40)
    b = _configs(gt, ids, noise=3.0, drop=0.2, base=50)
    diff = paired_difference(a, b, samples=400, seed=0)
    assert diff.low < 0 < diff.high and diff.sign == 0


def test_a_paired_difference_needs_shared_seeds_and_images(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    a = _configs(gt, ids, noise=1.0, drop=0.0, base=60)
    with pytest.raises(KdtuneError, match="share no training seed"):
        paired_difference(a, {7: a[0]})
    fewer = {s: match_images(gt, [], ids[:-1]) for s in range(3)}
    with pytest.raises(KdtuneError, match="other images"):
        paired_difference(a, fewer)


def test_confirm_verdict_ranks_by_mean_and_compares_with_default_and_runner_up(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    matches = {
        "fixed:0.9": _configs(gt, ids, noise=1.0, drop=0.0, base=70),
        "fixed:0.75": _configs(gt, ids, noise=4.0, drop=0.4, base=80),
        "linear:0.9:0.5": _configs(gt, ids, noise=2.5, drop=0.2, base=90),
    }
    v = confirm_verdict(matches, "fixed:0.75", samples=200)
    assert v["recommended"] == "fixed:0.9"
    assert [r["schedule"] for r in v["ranking"]] == ["fixed:0.9", "linear:0.9:0.5", "fixed:0.75"]
    means = [r["mean"] for r in v["ranking"]]
    assert means == sorted(means, reverse=True)
    assert [c["role"] for c in v["comparisons"]] == ["seed default", "runner-up"]
    assert [c["against"] for c in v["comparisons"]] == ["fixed:0.75", "linear:0.9:0.5"]
    assert v["sentence"].startswith("α 0.1 / β 0.9 beats the seed default α 0.25 / β 0.75 by +")
    assert "Holm, 6 claims at 5% family-wise" in v["sentence"]
    assert v["sentence"].endswith(f"(3 seeds × {len(ids)} images)")
    # the default itself ranked first: compared with the runner-up
    w = confirm_verdict({k: matches[k] for k in ("fixed:0.9", "fixed:0.75")}, "fixed:0.9")
    assert w["sentence"].startswith("the seed default α 0.1 / β 0.9 beats α 0.25 / β 0.75 by +")


def test_rank_and_standard_error() -> None:
    standings = rank({"a": {0: 0.2, 1: 0.4}, "b": {0: 0.35}, "c": {}})
    assert [s.schedule for s in standings] == ["b", "a"]
    assert standings[1].mean == pytest.approx(0.3)
    assert standings[1].se == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)
    assert standings[0].se == 0.0


@given(
    mean=st.floats(-0.5, 0.5),
    spread=st.floats(0.0, 0.2),
    shift=st.floats(-0.2, 0.2),
)
def test_the_sentence_follows_the_interval(mean: float, spread: float, shift: float) -> None:
    low, high = mean + shift - spread, mean + shift + spread
    d = Difference(mean, low, high, (mean, mean), 2, 10)
    text = sentence("A", "B", d)
    if low > 0:
        assert text.startswith("A beats B by ")
    elif high < 0:
        assert text.startswith("A trails B by ")
    else:
        assert text.startswith("A is not distinguishable from B: ")
    assert text.endswith("(2 seeds × 10 images)")
    one = sentence("A", "B", Difference(mean, low, high, (mean,), 1, 10))
    assert "on these images only; one seed, no claim" in one and "beats" not in one


def test_labels() -> None:
    assert label("fixed:0.75") == "α 0.25 / β 0.75 [fixed:0.75]"
    assert label("fixed:1") == "α 0 / β 1 [fixed:1]"
    assert label("cosine:0.9:0.5") == "β 0.9 → 0.5 (cosine) [cosine:0.9:0.5]"
    assert label("not-a-spec") == "not-a-spec"


# --- the block, on simulated confirmations ----------------------------------------------------


def _simulator() -> Any:
    """benchmarks/verdict_calibration.py: ImageMatches of simulated configurations."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verdict_calibration", module)
    spec.loader.exec_module(module)
    return module


SIM = _simulator()


def _runs(configs: dict[str, float], seeds: int, *, seed: int = 0, images: int = 80) -> dict:
    sc = SIM.Scenario("test", seed_sd=0.05, image_sd=0.05, run_sd=0.2, images=images)
    return SIM.simulate(sc, configs, seeds, np.random.default_rng(seed))


def test_batched_replicates_equal_ap_on_each_draw(synth_val: tuple[COCO, list[int]]) -> None:
    gt, ids = synth_val
    draws = image_draws(len(ids), 30, seed=4)
    for m in (
        match_images(gt, _noisy(gt, ids, seed=5, noise=3.0, drop=0.2), ids),
        match_images(gt, [], ids),
        _runs({"a": 0.0}, 1)["a"][0],
    ):
        w = draws if len(m.image_ids) == len(ids) else image_draws(len(m.image_ids), 30, 4)
        expected = [m.ap(row) for row in w]
        assert ap_replicates(m, w) == pytest.approx(expected, abs=1e-12)
        assert ap_replicates(m, np.zeros((2, len(m.image_ids)))).tolist() == [0.0, 0.0]


def test_the_block_states_worth_default_and_equivalence_with_words() -> None:
    runs = _runs({"fixed:0": 0.0, "fixed:0.5": 0.6, "fixed:0.75": 0.0, "linear:0.9:0.5": 0.6}, 4)
    block = verdict_block(runs, default="fixed:0.75", margin=0.02, samples=300)
    assert json.loads(json.dumps(block, allow_nan=False)) == block  # JSON-native
    best = block["recommended"]
    assert best in ("fixed:0.5", "linear:0.9:0.5")
    roles = {c["against"]: c["roles"] for c in block["comparisons"]}
    assert "distillation's worth" in roles["fixed:0"]
    assert "seed default" in roles["fixed:0.75"]
    outcome = {c["against"]: c["outcome"] for c in block["comparisons"]}
    assert outcome["fixed:0"] == "beats" and outcome["fixed:0.75"] == "beats"
    twin = "linear:0.9:0.5" if best == "fixed:0.5" else "fixed:0.5"
    assert outcome[twin] in ("equivalent", "undecided")
    assert block["family"] == {
        "method": "Holm",
        "level": pytest.approx(0.05),
        "pairs": 6,
        "claims": 12,
        "model_claims": 0,
        "looks": 1,
    }
    assert block["model"] is None
    text = render(block)
    assert "distillation's worth: " in text and "ground truth alone (α 1 / β 0)" in text
    assert "against the seed default: " in text and "the seed default α 0.25 / β 0.75" in text
    assert "equivalent to the best within ±0.02 AP: " in text
    assert "all claims together at 5% family-wise (Holm over 6 pairs" in text
    assert block["race"]["leader"] == best
    assert set(block["race"]["beaten"]) == {"fixed:0", "fixed:0.75"}
    assert block["race"]["stop"] == (outcome[twin] == "equivalent")


def test_equal_configurations_are_equivalent_and_the_race_stops() -> None:
    runs = _runs({"fixed:0": 0.3, "fixed:0.5": 0.3}, 5, images=300)
    block = verdict_block(runs, default="fixed:0", margin=0.05, samples=300)
    (c,) = block["comparisons"]
    assert c["outcome"] == "equivalent" and block["equivalent"] == [c["against"]]
    assert "is equivalent to" in c["sentence"] and "within ±0.05 AP" in c["sentence"]
    assert block["race"] == {
        "leader": block["recommended"],
        "beaten": [],
        "beats_leader": [],
        "equivalent": [c["against"]],
        "undecided": [],
        "stop": True,
        "why": "the rest are beaten or equivalent within ±0.05 AP",
    }


def test_an_undecided_comparison_says_how_many_more_seeds_would_tell() -> None:
    runs = _runs({"fixed:0.5": 0.0, "fixed:0.75": 0.0}, 3, images=400)
    block = verdict_block(runs, default="fixed:0.75", margin=0.005, samples=300)
    (c,) = block["comparisons"]
    assert c["outcome"] == "undecided" and not block["race"]["stop"]
    assert block["race"]["undecided"] == ["fixed:0.75"] or block["race"]["undecided"] == [
        "fixed:0.5"
    ]
    assert c["more_seeds"] >= 1
    assert f"is undecided: {c['mean']:+.3f} AP" in c["sentence"]
    assert f"about {c['more_seeds']} more seed" in c["sentence"]
    # on few images the images' own spread decides: more seeds alone would not
    few = _runs({"fixed:0.5": 0.0, "fixed:0.75": 0.0}, 3, images=12)
    (d,) = verdict_block(few, default="fixed:0.75", samples=300)["comparisons"]
    assert d["outcome"] == "undecided" and d["more_seeds"] is None
    assert "more seeds alone are unlikely to tell" in d["sentence"]


def test_a_failed_run_is_listed_and_keeps_its_configuration_from_the_recommendation() -> None:
    runs = _runs({"fixed:0.5": 1.0, "fixed:0.75": 0.0, "fixed:0": 0.0}, 3)
    runs["fixed:0.5"][2] = Failure("diverged")  # the best configuration is unstable
    block = verdict_block(runs, default="fixed:0.75", samples=200)
    assert block["recommended"] != "fixed:0.5"
    assert block["failures"] == [{"schedule": "fixed:0.5", "seed": 2, "reason": "diverged"}]
    assert block["passed_over"] == ["fixed:0.5"]
    assert block["ranking"][0]["schedule"] == block["recommended"]  # unstable ones rank below
    assert block["ranking"][-1]["schedule"] == "fixed:0.5"
    assert block["seeds"] == [0, 1, 2]  # every configuration without failures finished these
    unstable = next(r for r in block["ranking"] if r["schedule"] == "fixed:0.5")
    assert unstable["failed"] == {"2": "diverged"} and sorted(unstable["values"]) == ["0", "1"]
    text = render(block)
    assert "not recommended: α 0.5 / β 0.5 [fixed:0.5] ranks higher but failed 1 run" in text
    assert "failed: α 0.5 / β 0.5 [fixed:0.5] seed 2 (diverged); counted against it" in text
    # ranking and tests on the same seeds: a seed one stable configuration lacks is left out
    del runs["fixed:0.75"][1]
    assert verdict_block(runs, default="fixed:0.75", samples=200)["seeds"] == [0, 2]


def test_one_seed_makes_no_claim_and_says_so() -> None:
    runs = _runs({"fixed:0.5": 1.0, "fixed:0.75": 0.0}, 1)
    block = verdict_block(runs, default="fixed:0.75", samples=200)
    (c,) = block["comparisons"]
    assert not c["seeds_measured"] and c["outcome"] == "undecided" and c["more_seeds"] is None
    assert "on these images only; one seed says nothing about other seeds" in c["sentence"]
    assert block["family"]["claims"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": 0.0}, "^margin: must be a positive AP difference"),
        ({"margin": -0.01}, "^margin: must be a positive AP difference"),
        ({"confidence": 1.0}, "^confidence: must be between 0 and 1"),
        ({"confidence": 0.0}, "^confidence: must be between 0 and 1"),
        ({"samples": 10}, "^verdict: samples must be an integer of at least 100"),
        ({"looks": 0}, "^verdict: looks must be a positive integer"),
    ],
)
def test_bad_input_is_refused_in_one_line(kwargs: dict, message: str) -> None:
    runs = _runs({"fixed:0.5": 0.0, "fixed:0.75": 0.0}, 2)
    with pytest.raises(KdtuneError, match=message) as info:
        verdict_block(runs, default="fixed:0.75", **kwargs)
    assert "\n" not in str(info.value)


def test_inputs_the_block_cannot_judge_are_refused() -> None:
    runs = _runs({"fixed:0.5": 0.0, "fixed:0.75": 0.0}, 2)
    with pytest.raises(KdtuneError, match="expected a matching or a Failure, got float"):
        verdict_block({"fixed:0.5": {0: 0.5}}, default="fixed:0.75")
    with pytest.raises(KdtuneError, match="no configuration finished"):
        verdict_block({"fixed:0.5": {0: Failure("failed")}}, default="fixed:0.75")
    with pytest.raises(KdtuneError, match="no seed that every configuration finished"):
        verdict_block(
            {"fixed:0.5": {0: runs["fixed:0.5"][0]}, "fixed:0.75": {1: runs["fixed:0.75"][1]}},
            default="fixed:0.75",
        )
    other = _runs({"fixed:0.75": 0.0}, 1, images=81)
    with pytest.raises(KdtuneError, match="evaluated on other images"):
        verdict_block(
            {"fixed:0.5": {0: runs["fixed:0.5"][0]}, "fixed:0.75": other["fixed:0.75"]},
            default="fixed:0.75",
        )


@pytest.mark.parametrize(
    ("level", "text"), [(0.05, "5%"), (0.025, "2.5%"), (0.05 / 3, "1.67%"), (0.01, "1%")]
)
def test_a_family_level_prints_without_rounding_it_away(level: float, text: str) -> None:
    assert percent(level) == text


# --- claims by the pooled model -----------------------------------------------------------------


class _Model:
    """A stand-in for :class:`kdtune.pooled.Fit` (the block's ``Model`` protocol): every pair
    of weightings ``diff`` apart (the first in sort order higher), standard error ``se``."""

    model = "stand-in"
    runs, seeds, dof = 30, 4, 40

    def __init__(self, diff: float, se: float, *, fits: bool = True) -> None:
        self.diff, self.se, self.fits = diff, se, fits
        self.lack_of_fit = 0.5 if fits else 0.001

    def difference(self, a: str, b: str) -> tuple[float, float]:
        return (self.diff if a < b else -self.diff), self.se

    def best(self, specs: Any) -> str:
        return min(specs)

    def record(self, specs: Any) -> dict[str, Any]:
        gain = {s: {"mean": 0.0, "se": self.se} for s in specs}
        return {"model": self.model, "runs": self.runs, "seeds": self.seeds, "gain": gain}


EQUALS = {"fixed:0.5": 0.0, "fixed:0.6": 0.0, "fixed:0": 0.0}


def test_a_tight_model_declares_equivalent_what_the_race_alone_cannot() -> None:
    runs = _runs(EQUALS, 3)
    alone = verdict_block(runs, default="fixed:0.75", margin=0.02, samples=300)
    assert {c["outcome"] for c in alone["comparisons"]} == {"undecided"}
    block = verdict_block(
        runs, default="fixed:0.75", margin=0.02, samples=300, model=_Model(0.001, 0.001)
    )
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    assert block["recommended"] == "fixed:0"  # the model's best among the undecided
    assert {(c["outcome"], c["by"]) for c in block["comparisons"]} == {
        ("equivalent", "pooled model")
    }
    assert block["family"]["claims"] == 9 and block["family"]["model_claims"] == 3
    assert block["model"]["claims"] is True and block["race"]["stop"]
    for c in block["comparisons"]:
        # the model's difference, signed as recommendation − other, with its 95 % interval
        assert c["model"]["mean"] == pytest.approx(-0.001 if c["against"] < "fixed:0" else 0.001)
        assert c["model"]["low"] < c["model"]["mean"] < c["model"]["high"]
        assert c["claim_level"] is not None and c["claim_level"] <= 0.05 / 6 + 1e-12
    text = render(block)
    assert "(by the pooled model)" in text and "differs/equivalent/equivalent by the model" in text
    assert 'claims "by the pooled model" rest on AP being smooth in β̄' in text


def test_no_claim_rests_on_a_model_that_does_not_fit_its_runs() -> None:
    runs = _runs(EQUALS, 3)
    block = verdict_block(
        runs, default="fixed:0.75", margin=0.02, samples=300, model=_Model(0.001, 0.001, fits=False)
    )
    assert {c["outcome"] for c in block["comparisons"]} == {"undecided"}
    assert block["family"]["claims"] == 6 and block["family"]["model_claims"] == 0
    assert block["model"]["claims"] is False and "picked" in block  # it still picks
    assert "does not fit the runs: no claim rests on it" in render(block)


@pytest.mark.parametrize(
    ("diff", "se", "why"),
    [
        (0.018, 0.0005, "the race's means disagree with the model's"),
        (0.001, 0.01, "the model too unsure"),
        (0.03, 0.0005, "the model's difference beyond the margin"),
    ],
)
def test_the_model_claims_nothing_it_cannot_back(diff: float, se: float, why: str) -> None:
    runs = _runs(EQUALS, 12, images=200)
    block = verdict_block(
        runs, default="fixed:0.75", margin=0.02, samples=300, model=_Model(diff, se)
    )
    assert block["family"]["model_claims"] == 3
    assert not [c for c in block["comparisons"] if c.get("by") == "pooled model"], why
