"""Generic value checks: they return the value or raise one line naming where and what."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdtune import checks
from kdtune.checks import Where
from kdtune.errors import KdtuneError

HERE = Where("f.yaml", "a.b")


def fails(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(KdtuneError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_where_names_source_and_key_path() -> None:
    assert Where("f.yaml").at("a").at("b").item(2).at("c.d").label == "f.yaml: a.b[2].c.d"
    assert Where("", "k").label == "k" and Where("f.yaml").label == "f.yaml"
    assert fails(HERE.fail, "bad\nthing", [1]) == "f.yaml: a.b: bad thing, got [1]"
    assert fails(Where("f.yaml").fail, "empty") == "f.yaml: empty"


def test_show_is_short_and_one_line() -> None:
    assert checks.show("x" * 500).startswith("'xxx") and len(checks.show("x" * 500)) <= 80
    assert checks.show("a\nb") == "'a\\nb'"
    nested: list[Any] = []
    nested.append(nested)
    assert len(checks.show(nested)) <= 80


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("1", {}, "must be a number, got '1'"),
        (True, {}, "must be a number, got True"),
        (10**400, {}, "number too large"),
        (math.inf, {}, "must be a finite number, got inf"),
        (1.5, {"high": 1.0}, "must be in [-inf, 1], got 1.5"),
        (0, {"low": 0.0, "low_open": True}, "must be in (0, inf], got 0"),
        (1, {"high": 1.0, "high_open": True}, "must be in [-inf, 1), got 1"),
    ],
)
def test_number_refuses(value: Any, kwargs: dict[str, Any], message: str) -> None:
    assert fails(checks.number, value, HERE, **kwargs).startswith(f"f.yaml: a.b: {message}")


@given(st.floats(-1e9, 1e9) | st.integers(-(10**9), 10**9))
def test_number_accepts_finite_reals(value: float) -> None:
    result = checks.number(value, HERE, low=-1e9, high=1e9)
    assert result == value and isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (2.0, {}, "must be an integer, got 2.0"),
        (False, {}, "must be an integer, got False"),
        (0, {"low": 1}, "must be at least 1, got 0"),
        (9, {"high": 8}, "must be at most 8, got 9"),
        (9, {"low": 1, "high": 8}, "must be between 1 and 8, got 9"),
    ],
)
def test_integer_refuses(value: Any, kwargs: dict[str, Any], message: str) -> None:
    assert fails(checks.integer, value, HERE, **kwargs) == f"f.yaml: a.b: {message}"


def test_string_and_boolean() -> None:
    assert checks.string("tpe", HERE, ("tpe", "grid")) == "tpe"
    assert fails(checks.string, " ", HERE).endswith("must be a non-empty string, got ' '")
    assert fails(checks.string, "x", HERE, ("tpe",)).endswith("must be one of: tpe, got 'x'")
    assert checks.boolean(False, HERE) is False
    assert fails(checks.boolean, 1, HERE).endswith("must be true or false, got 1")


def test_mapping() -> None:
    assert checks.mapping({"a": 1}, HERE, ("a", "b"), required=("a",)) == {"a": 1}
    assert checks.mapping({"z": 1}, HERE) == {"z": 1}
    assert fails(checks.mapping, [1], HERE) == "f.yaml: a.b: expected a mapping, got [1]"
    top = Where("f.yaml")
    assert fails(checks.mapping, "x", top) == "f.yaml: (top level): expected a mapping, got 'x'"
    assert fails(checks.mapping, {1: 2}, top) == "f.yaml: (top level): keys must be strings, got 1"
    assert fails(checks.mapping, {"c": 1}, HERE, ("a", "b")) == (
        "f.yaml: a.b.c: unknown key (expected one of: a, b)"
    )
    assert fails(checks.mapping, {}, HERE, ("a",), ("a",)) == "f.yaml: a.b.a: missing (required)"
