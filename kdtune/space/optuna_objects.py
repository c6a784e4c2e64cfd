"""The sampler and pruner of a search space: their specs as read from the file, the checking of
their options against Optuna's constructors, and the Optuna objects built from them.

Options are checked by introspection, so that a file may set any plain option of the Optuna
version installed: the constructor's parameters (``inspect.signature``) give the names and
which are required, their types (``typing.get_type_hints``, else the default's type) which
YAML values each takes. Parameters that take Python objects (callables, samplers) are not
settable from a file.

Internal to :mod:`kdtune.space`, which re-exports the public names; import them from there.
"""

from __future__ import annotations

import importlib.util
import inspect
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from kdtune import checks
from kdtune.checks import Where

SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
}
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "wilcoxon": "WilcoxonPruner",
    "patient": "PatientPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
# Sampler arguments a file may not set: the seed has its own key, the grid comes from search.grid.
_SAMPLER_RESERVED: dict[str, str] = {
    "seed": "set sampler.seed instead",
    "search_space": "list the points in search.grid instead",
}
_PACKAGES: dict[str, str] = {"cmaes": "cmaes"}  # sampler type -> the extra package it needs


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "none"
    options: dict[str, Any] = field(default_factory=dict)  # patient: wrapped_pruner is a PrunerSpec


# ---------------------------------------------------------------------------------------------
# Which YAML values a constructor parameter takes

# The YAML value kinds, by the Python type a parameter names.
_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}
_KIND_TEXT: dict[str, str] = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "None": "null",
    "dict": "a mapping",
}
_UNRESOLVED: Any = object()  # an annotation that names something not importable at run time


def _parameter_types(cls: type) -> dict[str, Any]:
    """The constructor's parameter types, by name; ``_UNRESOLVED`` where one cannot be had.

    Optuna's modules postpone annotations (strings) and import some names for type checking
    only, so ``typing.get_type_hints`` of the whole constructor can fail; each parameter is
    then resolved on its own.
    """
    init = inspect.unwrap(cls.__init__)  # type: ignore[misc]  # under @experimental_class
    try:
        return typing.get_type_hints(init)
    except Exception:
        pass
    namespace = getattr(init, "__globals__", {})
    return {
        name: _resolve(annotation, namespace)
        for name, annotation in getattr(init, "__annotations__", {}).items()
    }


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """One annotation as a type, evaluated by ``typing.get_type_hints`` in ``namespace``."""

    def holder() -> None: ...

    holder.__annotations__ = {"value": annotation}
    try:
        return typing.get_type_hints(holder, globalns=namespace)["value"]
    except Exception:  # NameError for a type-checking-only import, or a newer syntax
        return _UNRESOLVED


def _yaml_kinds(hint: Any) -> set[str] | None:
    """The YAML value kinds a type admits (``int | None`` -> {int, None}); None if it admits
    anything else (a callable, a sampler object, ...)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = set()
    for member in typing.get_args(hint) if union else (hint,):
        base = typing.get_origin(member) or member
        if member is None or member is type(None):
            kinds.add("None")
        elif base is typing.Literal and all(isinstance(v, str) for v in typing.get_args(member)):
            kinds.add("str")  # the constructor checks the value itself
        elif base in _KINDS:
            kinds.add(_KINDS[base])
        else:
            return None
    return kinds


def _option_kinds(param: inspect.Parameter, hint: Any) -> set[str] | None:
    """What a parameter takes: by its type, else by its default's type (None: not settable)."""
    if hint is not _UNRESOLVED:
        return _yaml_kinds(hint)
    default = param.default
    if default is not param.empty and type(default) in _KINDS:
        return {_KINDS[type(default)]}
    return None


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _option_value(raw: Any, where: Where, kinds: set[str]) -> Any:
    """Check one option value against the types its constructor parameter admits."""
    if raw is None and "None" in kinds:
        return None
    if isinstance(raw, bool):
        if "bool" in kinds:
            return raw
    elif isinstance(raw, int) and ("int" in kinds or "float" in kinds):
        if "int" not in kinds:
            return checks.number(raw, where)
        return raw
    elif isinstance(raw, float) and "float" in kinds:
        return checks.number(raw, where)
    elif (isinstance(raw, str) and "str" in kinds) or (isinstance(raw, dict) and "dict" in kinds):
        return raw
    where.fail(f"must be {' or '.join(sorted(_KIND_TEXT[k] for k in kinds))}", raw)


def _options(
    raw: Any,
    where: Where,
    cls: type,
    reserved: dict[str, str],
    nested: dict[str, Callable[[Any, Where], Any]] | None = None,
) -> dict[str, Any]:
    """Options validated against ``cls``'s constructor: names, YAML-able types, required ones."""
    if raw is None:
        raw = {}
    params = {
        name: p
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    hints = _parameter_types(cls)
    kinds = {name: _option_kinds(p, hints.get(name, _UNRESOLVED)) for name, p in params.items()}
    nested = nested or {}
    settable = [n for n in params if n not in reserved and (n in nested or kinds[n])]
    if not isinstance(raw, dict):
        where.fail("expected a mapping", raw)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            where.fail("keys must be strings", name)
        here = where.at(name)
        if name in reserved:
            here.fail(reserved[name])
        if name not in params:
            choices = ", ".join(settable) or "none"
            here.fail(f"unknown option for {cls.__name__} (expected one of: {choices})")
        if name in nested:
            out[name] = nested[name](value, here)
            continue
        allowed = kinds[name]
        if allowed is None:
            text = _type_text(params[name].annotation)
            here.fail(f"takes a Python object ({text}); not settable from a file")
        out[name] = _option_value(value, here, allowed)
    for name, p in params.items():
        if p.default is p.empty and name not in out and name not in reserved | nested.keys():
            where.at(name).fail(f"missing (required by {cls.__name__})")
    return out


# ---------------------------------------------------------------------------------------------
# The specs, read from the file


def parse_sampler(raw: Any, where: Where) -> SamplerSpec:
    if raw is None:
        return SamplerSpec()
    checks.mapping(raw, where, ("type", "seed", "options"))
    kind = checks.string(raw.get("type", "tpe"), where.at("type"), tuple(SAMPLERS))
    seed = raw.get("seed")
    if seed is not None:
        seed = checks.integer(seed, where.at("seed"), low=0, high=2**32 - 1)
    cls = getattr(optuna.samplers, SAMPLERS[kind])
    options = _options(raw.get("options"), where.at("options"), cls, _SAMPLER_RESERVED)
    return SamplerSpec(kind, seed, options)


def parse_pruner(raw: Any, where: Where) -> PrunerSpec:
    if raw is None:
        return PrunerSpec()
    checks.mapping(raw, where, ("type", "options"), required=("type",))
    kind = checks.string(raw["type"], where.at("type"), tuple(PRUNERS))
    cls = getattr(optuna.pruners, PRUNERS[kind])
    nested: dict[str, Callable[[Any, Where], Any]] = {}
    if kind == "patient":
        nested["wrapped_pruner"] = lambda v, at: None if v is None else parse_pruner(v, at)
    options = _options(raw.get("options"), where.at("options"), cls, {}, nested)
    return PrunerSpec(kind, options)


# ---------------------------------------------------------------------------------------------
# The Optuna objects


def construct(where: Where, factory: Callable[[], Any]) -> Any:
    """Call an Optuna constructor, turning its complaints into a file error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return factory()
        except (ValueError, TypeError, ArithmeticError) as exc:
            where.fail(str(exc).rstrip("."))


def build_sampler(spec: SamplerSpec, grid_size: int) -> optuna.samplers.BaseSampler:
    cls = getattr(optuna.samplers, SAMPLERS[spec.type])
    if spec.type == "grid":
        return cls({"point": list(range(grid_size))}, seed=spec.seed, **spec.options)
    return cls(seed=spec.seed, **spec.options)


def build_pruner(spec: PrunerSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    cls = getattr(optuna.pruners, PRUNERS[spec.type])
    options = dict(spec.options)
    if spec.type == "patient":
        wrapped = options.get("wrapped_pruner")  # absent or null: patience alone
        options["wrapped_pruner"] = None if wrapped is None else build_pruner(wrapped, max_epochs)
    if spec.type == "hyperband":
        options.setdefault("max_resource", max_epochs)  # steps are epochs
    return cls(**options)


def sampler_for(spec: SamplerSpec, grid_size: int, file: str) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``spec`` (a grid sampler walks the ``point`` index); errors name
    ``file``."""
    where = Where(file)
    package = _PACKAGES.get(spec.type)
    if package is not None and importlib.util.find_spec(package) is None:
        where.at("sampler.type").fail(
            f"{spec.type} needs the {package!r} package (pip install {package})"
        )
    sampler: optuna.samplers.BaseSampler = construct(
        where.at("sampler.options"), lambda: build_sampler(spec, grid_size)
    )
    return sampler


def pruner_for(spec: PrunerSpec, max_epochs: int, file: str) -> optuna.pruners.BasePruner:
    """The Optuna pruner of ``spec``; its steps are epochs. Errors name ``file``."""
    pruner: optuna.pruners.BasePruner = construct(
        Where(file).at("pruner.options"), lambda: build_pruner(spec, max_epochs)
    )
    return pruner
