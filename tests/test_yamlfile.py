"""The one YAML loader: safe_load's data, duplicate keys refused, one-line errors naming the
file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdtune import api, yamlfile
from kdtune.errors import KdtuneError
from kdtune.yamlfile import load_yaml_mapping, parse_yaml

KEYS = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=6)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=15,
)
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def error(text: str) -> str:
    with pytest.raises(KdtuneError) as info:
        parse_yaml(text, "f.yaml")
    message = str(info.value)
    assert message.startswith("f.yaml: ") and "\n" not in message, message
    return message


@PROPERTY
@given(DATA)
def test_same_data_as_safe_load(value: Any) -> None:
    text = yaml.safe_dump(value)
    assert parse_yaml(text, "f.yaml") == yaml.safe_load(text)


@PROPERTY
@given(st.dictionaries(KEYS, SCALARS, min_size=1, max_size=5), st.data())
def test_duplicate_top_level_key_refused(mapping: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(mapping)))
    first = yaml.safe_dump(mapping)
    text = first + yaml.safe_dump({key: data.draw(SCALARS)})
    line = len(first.splitlines()) + 1  # the repeated key opens the second dump
    message = error(text)
    assert message.startswith(f"f.yaml: {key}: duplicate key (again at line {line})"), message


@PROPERTY
@given(st.lists(KEYS, min_size=1, max_size=3), KEYS, SCALARS)
def test_duplicate_nested_key_refused(path: list[str], key: str, value: Any) -> None:
    inner = yaml.safe_dump({key: value}, default_flow_style=True).strip()[1:-1]
    text = "".join(f"{'  ' * i}{k}:\n" for i, k in enumerate(path))
    text += f"{'  ' * len(path)}{{{inner}, {inner}}}\n"
    message = error(text)
    assert f": {'.'.join([*path, key])}: duplicate key" in message, message


def test_duplicates_in_lists_and_merged_mappings() -> None:
    assert "items[1].a: duplicate key (again at line 4)" in error(
        "items:\n  - {a: 1}\n  - {a: 1,\n  a: 2}\n"
    )
    assert "c.<<[1].z: duplicate key" in error("b: &w {x: 1}\nc: {<<: [*w, {z: 1, z: 2}]}\n")


def test_merge_keys_may_be_overridden() -> None:
    text = "b: &w {x: 1, y: 2}\nc:\n  <<: *w\n  x: 3\nd: *w\n"
    assert parse_yaml(text, "f.yaml") == {
        "b": {"x": 1, "y": 2},
        "c": {"x": 3, "y": 2},
        "d": {"x": 1, "y": 2},
    }


def test_keys_of_other_types_are_other_keys() -> None:
    assert parse_yaml("1: a\n'1': b\n", "f.yaml") == {1: "a", "1": "b"}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a: [1\n", "not valid YAML: did not find expected ',' or ']' at line 2"),
        ("a: 1\n  b: 2\n", "not valid YAML: mapping values are not allowed"),
        ("a: *nowhere\n", "not valid YAML: found undefined alias"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
        ("a: \x07\n", "not valid YAML"),
        ("[" * 5000, "not valid YAML"),
    ],
)
def test_malformed_yaml_is_one_line(text: str, shown: str) -> None:
    assert shown in error(text)


@PROPERTY
@given(st.text(max_size=120))
def test_any_text_loads_or_fails_on_one_line(text: str) -> None:
    try:
        parse_yaml(text, "f.yaml")
    except KdtuneError as exc:
        assert str(exc).startswith("f.yaml: ") and "\n" not in str(exc)


@pytest.mark.parametrize("loader", [load_yaml_mapping, api.load_yaml_mapping])
def test_load_yaml_mapping(tmp_path: Path, loader: Any) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 3\n")
    assert loader(good) == {"train": {"epochs": 3}}
    cases = {
        "list.yaml": ("- 1\n- 2\n", "expected a mapping of settings, got list"),
        "empty.yaml": ("", "expected a mapping of settings, got NoneType"),
        "text.yaml": ("just text\n", "expected a mapping of settings, got str"),
        "dup.yaml": ("a: 1\nb:\n  c: 1\n  c: 2\n", "b.c: duplicate key (again at line 4)"),
        "bad.yaml": ("a: [1\n", "not valid YAML"),
    }
    for name, (text, shown) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(KdtuneError) as info:
            loader(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and shown in str(info.value)
    (tmp_path / "latin.yaml").write_bytes(b"a: caf\xe9\n")
    with pytest.raises(KdtuneError, match=r"latin\.yaml: not UTF-8 text"):
        loader(tmp_path / "latin.yaml")
    with pytest.raises(KdtuneError, match=r"nope\.yaml: no such space file"):
        loader(tmp_path / "nope.yaml", "space")
    with pytest.raises(KdtuneError, match="is a folder, not a config file"):
        loader(tmp_path)


def test_pure_python_loader_behaves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml the loader is built on yaml.SafeLoader: same data, same refusals."""
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    spec = importlib.util.spec_from_file_location("yamlfile_pure", yamlfile.__file__)
    assert spec is not None and spec.loader is not None
    pure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pure)
    assert pure.UniqueKeyLoader.__mro__[1] is yaml.SafeLoader
    assert pure.parse_yaml("b: &w {x: 1}\nc: {<<: *w, x: 2}\n", "f.yaml")["c"] == {"x": 2}
    cases = {
        "a: 1\na: 2\n": "f.yaml: a: duplicate key (again at line 2)",
        "a:\n  - {x: 1,\n     x: 2}\n": "f.yaml: a[0].x: duplicate key (again at line 3)",
        "a: [1\n": "f.yaml: not valid YAML",
    }
    for text, shown in cases.items():
        for module in (yamlfile, pure):
            with pytest.raises(KdtuneError) as info:
                module.parse_yaml(text, "f.yaml")
            assert str(info.value).startswith(shown), str(info.value)
