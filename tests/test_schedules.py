"""β schedules: golden values, the shape table, spec round trips and refusals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdtune import schedules
from kdtune.errors import KdtuneError
from kdtune.schedules import ADAPTIVE_SHAPES, SHAPE_TABLE, SHAPES, BetaSchedule, parse_schedule
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
            options = {o: BetaSchedule.option_default(o) for o in shape.options}
            assert shape.curve(0.0, 0.9, 0.3, options) == pytest.approx(0.9)
            assert shape.curve(1.0, 0.9, 0.3, options) == pytest.approx(0.3)


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


def _schedules_with_a_new_shape(tmp_path: Path) -> ModuleType:
    """A temporary copy of ``schedules.py`` with the two edits ARCHITECTURE.md's recipe asks for:
    one ``Shape`` record (``ramp``, with a new option ``by``) and ``by``'s field on
    ``BetaSchedule``."""
    source = Path(schedules.__file__).read_text()
    table = "SHAPE_TABLE: tuple[Shape, ...] = (\n"
    field = "    at: float = 0.5"
    assert source.count(table) == 1 and source.count(field) == 1
    ramp = (
        '    Shape("ramp", lambda q, s, e, o: e if q >= o["by"] else s + (e - s) * q / o["by"],'
        ' options=("by",)),\n'
    )
    source = source.replace(table, table + ramp).replace(field, field + "\n    by: float = 0.5")
    path = tmp_path / "schedules_with_ramp.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("schedules_with_ramp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_schedule_shape_recipe_a_new_option_flows_everywhere(tmp_path: Path) -> None:
    """The recipe is true: a shape's new option is parsed, and reaches the spec, the params and
    the curve (it is not accepted and then dropped)."""
    copy = _schedules_with_a_new_shape(tmp_path)
    assert "ramp" in copy.ADAPTIVE_SHAPES and "by" in copy.SHAPE_OPTIONS
    sched = copy.parse_schedule("ramp:0.9:0.5,by=0.25")
    assert sched.by == 0.25
    assert sched.spec == "ramp:0.9:0.5,by=0.25"
    assert copy.parse_schedule(sched.spec) == sched
    assert sched.params() == {
        "shape": "ramp",
        "beta_start": 0.9,
        "beta_end": 0.5,
        "warmup": 0.0,
        "by": 0.25,
    }
    # golden values: 0.9 → 0.5 over the first quarter, then held (with by=0.5 it would be 0.8)
    assert sched(0.125) == pytest.approx(0.7)
    assert sched(0.25) == pytest.approx(0.5)
    assert sched(0.9) == pytest.approx(0.5)
    assert copy.parse_schedule("ramp:0.9:0.5")(0.25) == pytest.approx(0.7)  # the default, 0.5
    with pytest.raises(KdtuneError, match="applies to ramp schedules only"):
        copy.parse_schedule("linear:0.9:0.5,by=0.2")
    assert copy.words("ramp:0.9:0.5,by=0.25") == "β 0.9 → 0.5 (ramp by 0.25)"
