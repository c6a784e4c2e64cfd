"""The data-source registry: names, settings, generated roots, fingerprints; the COCO-like
variant's defects and a toy source registered and loaded through the public loader."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.data import sources, synth
from kdtune.data.cocolike import Defects, add_defects, oks_sigmas
from kdtune.data.sources import (
    SYNTHETIC,
    SYNTHETIC_COCOLIKE,
    SYNTHETIC_DIR,
    DataSource,
    data_fingerprint,
    parse_data,
    resolve_data,
)
from kdtune.errors import KdtuneError

# COCO's keypoint evaluation: per-keypoint σ (nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles), as published with the OKS definition
COCO_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]
) / 10  # fmt: skip


@pytest.fixture
def small_synthetic(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The synthetic default written tiny (4 train, 3 val, 2 test images); the calls made."""
    calls: list[Path] = []
    real = synth.write_synthetic

    def small(out: Path) -> Path:
        calls.append(out)
        return real(out, n_train=4, n_val=3, n_test=2)

    monkeypatch.setattr(synth, "write_synthetic", small)
    return calls


# ------------------------------------------------------------------------ the synthetic default


def test_resolve_synthetic_generates_once_and_loads(
    tmp_path: Path, small_synthetic: list[Path]
) -> None:
    ps = resolve_data("synthetic", "val", 64, results=tmp_path)
    assert len(ps) == 3 and ps.input_size == 64
    root = tmp_path / "cache" / SYNTHETIC_DIR
    assert (root / "annotations" / "person_keypoints_test2017.json").is_file()
    assert len(resolve_data("synthetic", "train", 64, results=tmp_path, max_images=2)) == 2
    assert len(small_synthetic) == 1 and small_synthetic[0] != root  # written, then renamed
    left = {p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"}  # the writer's lock
    assert left == {root, tmp_path / "cache" / "data"}


def test_resolve_coco_path(minipose: Path, tmp_path: Path) -> None:
    ps = resolve_data(str(minipose), "val", 32, results=tmp_path, max_images=2)
    assert len(ps) == 2
    assert list((tmp_path / "cache" / "data").glob("val-32-*.pt"))


def test_data_fingerprint(minipose: Path, synth_root: Path, tmp_path: Path) -> None:
    a = data_fingerprint(str(minipose))
    assert a == data_fingerprint(str(minipose)) and len(a) == 16
    assert data_fingerprint(str(synth_root)) != a
    assert data_fingerprint("synthetic") == data_fingerprint("synthetic", results=tmp_path)
    assert data_fingerprint("synthetic") not in (a, data_fingerprint(str(synth_root)))
    with pytest.raises(KdtuneError, match="not found"):
        data_fingerprint(str(tmp_path / "nowhere"))


def test_synthetic_fingerprint_is_unchanged_by_the_registry() -> None:
    """Banks and teacher caches keyed before the registry still match: the golden value is the
    fingerprint of the synthetic default as the loader computed it at commit ecd9456."""
    assert data_fingerprint("synthetic") == "16d55dda0e945133"


def test_cocolike_fingerprints_follow_the_settings() -> None:
    base = data_fingerprint(SYNTHETIC_COCOLIKE)
    assert base != data_fingerprint(SYNTHETIC)
    assert data_fingerprint(f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.15") == base  # the default
    assert data_fingerprint(f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.2") != base
    assert data_fingerprint(f"{SYNTHETIC_COCOLIKE}:seed=1") != base


# ----------------------------------------------------------------------------- the registry


def test_a_toy_source_registered_in_the_table_loads_through_the_public_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe of ARCHITECTURE.md: one record in SOURCES, nothing else."""
    written: list[Mapping[str, float]] = []

    def write(out: Path, values: Mapping[str, float], cache: Path) -> None:
        written.append(dict(values))
        synth.write_synthetic(out, n_train=3, n_val=2, n_test=1, seed=int(values["seed"]))

    toy = DataSource(
        name="toy",
        summary="three training images",
        version="toy-v1",
        write=write,
        settings=(sources.Setting("seed", 7, 0, None, "a test's choice", integer=True),),
    )
    monkeypatch.setitem(sources.SOURCES, "toy", toy)
    ps = resolve_data("toy", "train", 64, results=tmp_path)
    assert len(ps) == 3 and written == [{"seed": 7.0}]
    other = resolve_data("toy:seed=8", "train", 64, results=tmp_path)
    assert written[-1] == {"seed": 8.0} and not torch.equal(ps.images, other.images)
    assert len(resolve_data("toy", "val", 64, results=tmp_path)) == 2 and len(written) == 2
    assert data_fingerprint("toy") != data_fingerprint("toy:seed=8")
    from kdtune.config import TrainConfig

    assert TrainConfig(data="toy:seed=3").validate().data == "toy:seed=3"
    with pytest.raises(KdtuneError, match="seed must be in"):
        TrainConfig(data="toy:seed=-1").validate()


def test_a_source_without_settings_takes_none() -> None:
    with pytest.raises(KdtuneError, match="synthetic takes no settings"):
        parse_data("synthetic:jitter=1")
    assert parse_data("/some/coco/root") is None
    spec = parse_data(SYNTHETIC_COCOLIKE)
    assert spec is not None and spec.canonical == (
        "synthetic-cocolike:jitter=1,unlabelled_joints=0.15,unannotated_persons=0.1,seed=0"
    )


def test_every_setting_states_its_source() -> None:
    for source in sources.SOURCES.values():
        for s in source.settings:
            assert len(s.source) > 20 and s.source.startswith(f"{s.default:g}"), (source, s)


RATES = ("unlabelled_joints", "unannotated_persons")


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from([*RATES, "jitter"]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.integers(-5, 5).map(float),
    ),
)
def test_rates_are_checked(key: str, value: float) -> None:
    ok = math.isfinite(value) and value >= 0 and (key == "jitter" or value < 1)
    text = f"{SYNTHETIC_COCOLIKE}:{key}={value!r}"
    if ok:
        spec = parse_data(text)
        assert spec is not None and spec.values[key] == pytest.approx(value)
    else:
        with pytest.raises(KdtuneError) as err:
            parse_data(text)
        message = str(err.value)
        assert "\n" not in message and key in message and message.startswith("data: ")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_settings_text_is_accepted_or_refused_in_one_line(text: str) -> None:
    try:
        parse_data(f"{SYNTHETIC_COCOLIKE}:{text}")
    except KdtuneError as err:
        assert "\n" not in str(err)


def test_a_bad_rate_on_the_command_line_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdtune.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(f"data: '{SYNTHETIC_COCOLIKE}:unannotated_persons=1'\nepochs: 1\n")
    args = ["train", "--config", str(config), "-o", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as code:
        main([*args, "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2
    assert "\n" not in err and "unannotated_persons must be in [0, 1), got '1'" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- COCO-like defects


def test_oks_sigmas_are_cocos() -> None:
    np.testing.assert_allclose(oks_sigmas(), COCO_SIGMAS)


def _doc(persons: int, seed: int = 0) -> dict[str, Any]:
    """A COCO document of 100 × 200 images, one fully labelled person each (area 2500)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(persons):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 200})
        xy = rng.uniform(20, 80, size=(17, 2))
        kps = [float(v) for x, y in xy for v in (round(x, 2), round(y, 2), 2.0)]
        anns.append({"id": 10 * i + 1, "image_id": i, "keypoints": kps, "num_keypoints": 17,
                     "area": 2500.0, "iscrowd": 0, "bbox": [0, 0, 50, 50]})  # fmt: skip
    crowd = {"id": 99999, "image_id": 0, "keypoints": [0.0] * 51, "area": 10.0, "iscrowd": 1}
    return {"images": images, "annotations": [*anns, crowd], "categories": []}


def test_defects_at_their_rates() -> None:
    doc = _doc(2000)
    out = add_defects(doc, Defects(jitter=1.0, unlabelled_joints=0.15, unannotated_persons=0.1))
    assert doc == _doc(2000)  # the input is left as it was
    before = {a["id"]: a for a in doc["annotations"]}
    kept = [a for a in out["annotations"] if not a.get("iscrowd")]
    assert any(a["id"] == 99999 for a in out["annotations"])  # crowds are kept
    # persons removed: binomial(2000, 0.1), sd 13.4
    assert abs((2000 - len(kept)) - 200) < 4 * 13.4
    xyv = np.array([a["keypoints"] for a in kept]).reshape(len(kept), 17, 3)
    orig = np.array([before[a["id"]]["keypoints"] for a in kept]).reshape(len(kept), 17, 3)
    dropped = xyv[..., 2] == 0
    n = dropped.size
    assert abs(dropped.mean() - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n)
    assert all(a["num_keypoints"] == int((np.array(a["keypoints"][2::3]) > 0).sum()) for a in kept)
    # jitter: sd σ_k × sqrt(area) = σ_k × 50 per axis, per joint
    moved = (xyv[..., :2] - orig[..., :2])[~dropped]
    joint = np.broadcast_to(np.arange(17), dropped.shape)[~dropped]
    for k in (0, 11):
        sd = moved[joint == k].std(axis=0)
        np.testing.assert_allclose(sd, COCO_SIGMAS[k] * 50, rtol=0.1)


def test_no_defects_changes_nothing_but_the_rounding() -> None:
    doc = _doc(50)
    out = add_defects(doc, Defects(jitter=0.0, unlabelled_joints=0.0, unannotated_persons=0.0))
    assert out == doc


def test_a_persons_defects_do_not_depend_on_the_others() -> None:
    d = Defects()
    whole = {a["id"]: a for a in add_defects(_doc(40), d)["annotations"]}
    part = _doc(40)
    part["annotations"] = part["annotations"][20:]
    for a in add_defects(part, d)["annotations"]:
        assert whole[a["id"]] == a


def test_jittered_joints_stay_in_the_image() -> None:
    doc = _doc(200)
    out = add_defects(doc, Defects(jitter=20.0, unlabelled_joints=0.0, unannotated_persons=0.0))
    xyv = np.array([a["keypoints"] for a in out["annotations"][:-1]]).reshape(-1, 17, 3)
    assert xyv[..., 0].min() >= 0 and xyv[..., 0].max() <= 99
    assert xyv[..., 1].min() >= 0 and xyv[..., 1].max() <= 199


def test_cocolike_variant_same_images_defective_training_labels_clean_validation(
    tmp_path: Path, small_synthetic: list[Path]
) -> None:
    clean = {s: resolve_data(SYNTHETIC, s, 64, results=tmp_path) for s in ("train", "val")}
    text = f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.5,unannotated_persons=0.3"
    like = {s: resolve_data(text, s, 64, results=tmp_path) for s in ("train", "val")}
    assert len(small_synthetic) == 1  # the images are the default's, written once
    for s in ("train", "val"):
        assert torch.equal(clean[s].images, like[s].images)
    assert torch.equal(clean["val"].keypoints, like["val"].keypoints)
    assert torch.equal(clean["val"].masks, like["val"].masks)
    assert like["val"].ann_file == clean["val"].ann_file  # scored on the default's clean file
    labelled = lambda ps: int((ps.keypoints[..., 2] > 0).sum())  # noqa: E731
    assert labelled(like["train"]) < labelled(clean["train"])
    root = sources.data_root(text, tmp_path)
    assert (
        root.name.startswith(f"{SYNTHETIC_DIR}-cocolike-v1-") and (root / "train2017").is_symlink()
    )
    # a changed rate is a different set, with its own root and decoded cache
    again = resolve_data(
        f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.2", "train", 64, results=tmp_path
    )
    assert sources.data_root(f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.2", tmp_path) != root
    assert labelled(again) > labelled(like["train"])
    doc = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    assert all(a["image_id"] // 1_000_000 == 1 for a in doc["annotations"])


def test_a_search_space_names_a_source_or_a_folder(tmp_path: Path) -> None:
    from kdtune.space import load_space

    text = Path(__file__).resolve().parents[1].joinpath("search_spaces", "quickstart.yaml")
    raw = text.read_text()
    space = tmp_path / "s.yaml"
    space.write_text(re.sub(r"(?m)^data: .*$", f"data: {SYNTHETIC_COCOLIKE}:seed=2", raw))
    from kdtune.space.parse import check_paths

    loaded = load_space(space)
    assert loaded.data == f"{SYNTHETIC_COCOLIKE}:seed=2"
    check_paths(loaded)  # a source is no folder, and needs none
    space.write_text(re.sub(r"(?m)^data: .*$", f"data: {SYNTHETIC_COCOLIKE}:seed=0.5", raw))
    with pytest.raises(KdtuneError, match="seed must be an integer"):
        load_space(space)
