"""β schedules: golden values, the shape table, spec round trips and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdtune.errors import KdtuneError
from kdtune.schedules import ADAPTIVE_SHAPES, SHAPE_TABLE, SHAPES, parse_schedule
from kdtune.schedules import words as schedules_words


@pytest.mark.parametrize(
    ("spec", "progress", "beta"),
    [
        ("fixed:0.75", 0.0, 0.75),
        ("fixed:0.75", 1.0, 0.75),
        ("linear:0.9:0.5", 0.0, 0.9),
        ("linear:0.9:0.5", 0.5, 0.7),
        ("linear:0.9:0.5", 1.0, 0.5),
        ("cosine:0.9:0.5", 0.5, 0.7),
        ("cosine:0.9:0.5", 0.25, 0.5 + 0.4 * 0.5 * (1 + 0.5**0.5)),
        ("step:0.9:0.5", 0.49, 0.9),
        ("step:0.9:0.5", 0.5, 0.5),
        ("step:0.9:0.5,at=0.8", 0.7, 0.9),
        ("linear:0.9:0.5,warmup=0.2", 0.1, 0.9),
        ("linear:0.9:0.5,warmup=0.2", 0.6, 0.7),
        ("linear:0.9:0.5", 1.7, 0.5),  # progress is clamped to [0, 1]
        ("linear:0.9:0.5", -1.0, 0.9),
    ],
)
def test_golden_values(spec: str, progress: float, beta: float) -> None:
    assert parse_schedule(spec)(progress) == pytest.approx(beta)


def test_the_shape_table_is_the_one_list_of_shapes() -> None:
    assert SHAPES == tuple(s.name for s in SHAPE_TABLE) == ("fixed", "linear", "cosine", "step")
    assert ADAPTIVE_SHAPES == ("linear", "cosine", "step")
    for shape in SHAPE_TABLE:
        if shape.adaptive:  # every adaptive curve runs from its start to its end
            assert shape.curve(0.0, 0.9, 0.3, 0.5) == pytest.approx(0.9)
            assert shape.curve(1.0, 0.9, 0.3, 0.5) == pytest.approx(0.3)


def test_params_hold_the_shapes_own_options() -> None:
    assert parse_schedule("fixed:0.75").params() == {"shape": "fixed", "alpha": 0.25, "beta": 0.75}
    assert parse_schedule("step:0.9:0.5,at=0.3").params()["at"] == 0.3
    assert "at" not in parse_schedule("cosine:0.9:0.5").params()


unit = st.floats(0.0, 1.0, allow_nan=False).map(lambda x: round(x, 4))


@given(
    shape=st.sampled_from(SHAPES),
    start=unit,
    end=unit,
    warmup=st.floats(0.0, 0.9).map(lambda x: round(x, 3)),
    at=unit,
)
def test_a_spec_reads_back_as_the_same_schedule(
    shape: str, start: float, end: float, warmup: float, at: float
) -> None:
    if shape == "fixed":
        spec = f"fixed:{start}"
    else:
        opts = f",warmup={warmup}" + (f",at={at}" if shape == "step" else "")
        spec = f"{shape}:{start}:{end}{opts}"
    sched = parse_schedule(spec)
    again = parse_schedule(sched.spec)
    assert again == sched
    for p in (0.0, 0.3, 0.7, 1.0):
        assert 0.0 <= sched(p) <= 1.0


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("zigzag:0.9:0.5", "unknown shape"),
        ("linear:0.9", "should read linear:BETA_START:BETA_END"),
        ("linear:0.9:1.5", "must be in [0, 1]"),
        ("linear:0.9:0.5,at=0.3", "applies to step schedules only"),
        ("linear:0.9:0.5,warmup=1", "warmup must be below 1"),
        ("fixed:0.5,warmup=0.1", "takes no options"),
        ("linear:0.9:0.5,speed=2", "unknown option"),
        ("", "expected a spec"),
    ],
)
def test_malformed_specs_are_refused(spec: str, words: str) -> None:
    with pytest.raises(KdtuneError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_schedule(spec)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fixed:0.75", "α 0.25 / β 0.75"),
        ("fixed:0", "α 1 / β 0"),
        ("linear:0.9:0.5", "β 0.9 → 0.5 (linear)"),
        ("cosine:0.9:0.5,warmup=0.1", "β 0.9 → 0.5 (cosine, warm-up 0.1)"),
        ("step:0.5:0.9,at=0.3", "β 0.5 → 0.9 (step at 0.3)"),
        ("not a spec", "not a spec"),
    ],
)
def test_words_spell_out_alpha_and_beta(spec: str, expected: str) -> None:
    assert schedules_words(spec) == expected
