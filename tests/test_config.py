"""TrainConfig: one run's settings from plain data, validated; the reference weighting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdtune.config import DECODERS, TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError
from kdtune.export import reference_config
from kdtune.schedules import parse_schedule


@given(st.floats(0.0, 1.0, allow_nan=False))
def test_alpha_becomes_a_fixed_schedule_with_that_alpha(alpha: float) -> None:
    sched = parse_schedule(alpha_to_schedule(alpha))
    assert sched.shape == "fixed"
    assert sched.alpha == pytest.approx(alpha, abs=1e-6)  # a spec keeps 6 significant digits


@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(), st.booleans(), st.none()))
def test_alpha_out_of_range_or_not_a_number_is_refused(value: Any) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and 0 <= value <= 1
    )
    if ok:
        alpha_to_schedule(value)
    else:
        with pytest.raises(KdtuneError, match="alpha"):
            alpha_to_schedule(value)


@given(
    st.one_of(
        st.sampled_from(DECODERS),
        st.text(max_size=20),
        st.integers(),
        st.none(),
        st.booleans(),
        st.lists(st.sampled_from(DECODERS), max_size=2),
    )
)
def test_decoder_is_kdtune_or_reference(value: Any) -> None:
    raw = {"decoder": value}
    if isinstance(value, str) and value in DECODERS:
        assert TrainConfig.from_dict(raw).decoder == value
        return
    with pytest.raises(KdtuneError) as info:
        TrainConfig.from_dict(raw, where="f.yaml")
    message = str(info.value)
    assert message.startswith("f.yaml: decoder: ") and "\n" not in message
    if isinstance(value, str):  # a string that is no decoder: the message lists the decoders
        assert f"one of kdtune, reference, got {value!r}" in message


def test_from_dict_round_trips_through_to_dict() -> None:
    cfg = TrainConfig.from_dict({"alpha": 0.3, "lr": 1e-3, "aug_scale": [0.8, 1.2]})
    assert cfg.schedule == "fixed:0.7" and cfg.aug_scale == (0.8, 1.2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"lr": 0}, "lr: must be a positive number"),
        ({"lr": "fast"}, "lr: must be a number"),
        ({"epochs": 1.5}, "epochs: must be an integer"),
        ({"epochs": 0}, "epochs: must be a positive integer"),
        ({"amp": "yes"}, "amp: must be true or false"),
        ({"aug_scale": [1.2]}, "aug_scale: must be a pair of numbers"),
        ({"aug_scale": [1.2, 0.8]}, "aug_scale: need 0 < low <= high"),
        ({"level": "third"}, "unknown level 'third'"),
        ({"input_size": 100}, "must be a multiple of stride 8"),
        ({"teacher_recipe": "magic"}, "teacher_recipe: one of auto, shipped"),
        ({"device": "tpu"}, "device: one of auto, cpu, cuda"),
        ({"schedule": "linear:2:0.5"}, "must be in [0, 1]"),
    ],
)
def test_bad_settings_are_refused_in_one_line(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(KdtuneError) as info:
        TrainConfig.from_dict(raw, where="f.yaml")
    message = str(info.value)
    assert message.startswith("f.yaml: ") and words in message and "\n" not in message


@pytest.mark.parametrize(
    ("level", "schedule", "schedule_second"),
    [("second", "fixed:0.75", None), ("first", "fixed:0.7", None), ("teacher", "fixed:0", None)],
)
def test_reference_config_is_the_hand_picked_alpha_of_each_level(
    level: str, schedule: str, schedule_second: str | None
) -> None:
    best = TrainConfig(level=level, schedule="cosine:0.9:0.2", lr=1e-3, seed=4)
    ref = reference_config(best)
    assert ref.schedule == schedule
    assert (ref.lr, ref.seed, ref.level) == (1e-3, 4, level)  # all else as in the best


def test_reference_config_of_a_chain_sets_both_levels() -> None:
    best = TrainConfig(level="chain", schedule="fixed:0.1", schedule_second="linear:0.9:0.5")
    ref = reference_config(best)
    assert (ref.schedule, ref.schedule_second) == ("fixed:0.7", "fixed:0.75")


def test_export_refuses_to_hold_out_the_split_that_selected(tmp_path: Path) -> None:
    from kdtune.export import export_best
    from kdtune.results import COMPLETE, SEARCH_FILE, SearchResult, TrialRecord

    config = TrainConfig(val_split="val").to_dict()
    trial = TrialRecord("t1", COMPLETE, config, history=[{"epoch": 1, "val/ap": 0.2}])
    (tmp_path / "s").mkdir()
    SearchResult("s", "s.yaml", str(tmp_path / "s"), trials=[trial]).save(
        tmp_path / "s" / SEARCH_FILE
    )
    with pytest.raises(KdtuneError, match="selected its best trial on the 'val' split"):
        export_best("s", tmp_path / "best.yaml", results=tmp_path, holdout_split="val")
    assert not (tmp_path / "best.yaml").exists()


@given(st.one_of(st.integers(-5, 10_000), st.floats(allow_nan=True), st.text(max_size=4)))
def test_sync_every_is_a_positive_integer(value: Any) -> None:
    if isinstance(value, int) and value >= 1:
        assert TrainConfig.from_dict({"sync_every": value}).sync_every == value
    else:
        with pytest.raises(KdtuneError, match="sync_every"):
            TrainConfig.from_dict({"sync_every": value})


@given(st.one_of(st.sampled_from(["none", "sqrt", "linear"]), st.text(max_size=8), st.integers()))
def test_lr_scaling_is_one_of_three_rules(value: Any) -> None:
    if value in ("none", "sqrt", "linear"):
        assert TrainConfig.from_dict({"lr_scaling": value}).lr_scaling == value
    else:
        with pytest.raises(KdtuneError, match="lr_scaling"):
            TrainConfig.from_dict({"lr_scaling": value})
