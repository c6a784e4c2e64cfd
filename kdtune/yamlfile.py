"""Reading YAML files, the one way kdtune does it: ``yaml.safe_load`` with duplicate keys refused.

Plain data only (no Python objects from tags); a key written twice in one mapping is an error
(PyYAML would silently keep the last one); merge keys (``<<: *anchor``) still override. Every
problem raises :class:`~kdtune.errors.KdtuneError` with one line that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdtune.checks import Where, join
from kdtune.errors import KdtuneError

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "load_yaml_mapping", "parse_yaml", "read_text"]

# The safe loader, libyaml's where present (the same data, faster).
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one mapping: ``key`` is its path (``search.weighting.fixed``)."""

    def __init__(self, key: str, line: int) -> None:
        super().__init__(f"{key}: duplicate key (again at line {line})")
        self.key = key
        self.line = line


class UniqueKeyLoader(_SAFE_LOADER):
    """The safe loader, refusing a key written twice in one mapping.

    Keys are compared as written (tag and text), before construction; a merged mapping's keys
    may be overridden. Errors name the key by its path in the document.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._paths: dict[int, str] = {}
        self._checked: set[int] = set()

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = _key_paths(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        self._refuse_duplicates(node)
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # a merged mapping (<<: {...}) is flattened into its host without a construct_mapping
        # of its own: check it before its keys are mixed with the host's
        self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.Node) -> None:
        if not isinstance(node, yaml.MappingNode) or id(node) in self._checked:
            return
        self._checked.add(id(node))  # once: flattening adds the merged keys to node.value
        seen: set[tuple[str, Any]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                path = join(self._paths.get(id(node), ""), key_node.value)
                raise DuplicateKeyError(path, key_node.start_mark.line + 1)
            seen.add(ident)


def _key_paths(root: yaml.Node) -> dict[int, str]:
    """The key path of every node (``a.b[2]``), by the first way the document reaches it."""
    paths: dict[int, str] = {}
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in paths:  # an alias of a node already seen (or a recursive one)
            continue
        paths[id(node)] = path
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                label = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                children.append((value_node, join(path, label)))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        stack.extend(reversed(children))  # depth first, in document order
    return paths


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` with duplicate keys refused; ``source`` names the text in errors.

    Raises KdtuneError on one line: ``source: not valid YAML: ... at line 3, column 5`` or
    ``source: a.b: duplicate key (again at line 7)``.
    """
    where = Where(source)
    loader = None
    try:
        loader = UniqueKeyLoader(text)
        return loader.get_single_data()
    except DuplicateKeyError as exc:
        where.at(exc.key).fail(f"duplicate key (again at line {exc.line})")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        where.fail(f"not valid YAML: {exc.problem or exc.context}{at}")
    except RecursionError:
        where.fail("not valid YAML: nested too deeply")
    except Exception as exc:  # the YAML reader's other complaints (bad characters, ...)
        where.fail(f"not valid YAML: {exc}")
    finally:
        if loader is not None:
            loader.dispose()


def read_text(path: Path, what: str) -> str:
    """A file's UTF-8 text; ``what`` names the kind of file in errors (``no such config file``)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KdtuneError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise KdtuneError(f"{path}: is a folder, not a {what} file") from None
    except UnicodeDecodeError as exc:
        raise KdtuneError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise KdtuneError(f"{path}: cannot read ({exc.strerror})") from None


def load_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file does not); errors name the file."""
    path = Path(path)
    raw = parse_yaml(read_text(path, what), str(path))
    if not isinstance(raw, dict):
        raise KdtuneError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw
