"""One typed parser for every config dataclass: a plain dict (JSON, CLI flags) -> the dataclass.

Values are checked at the boundary against the dataclass's type annotations (``bool`` and
``int`` kept apart, an integral float such as JSON's ``1e3`` taken as an integer, nested
dataclasses from nested dicts, tuples and lists element by element), and against per-field
limits given as ``dataclasses.field(metadata=limits(min=.., max=.., gt=.., choices=..))``.
Every refusal is a :class:`ConfigError` naming the section and field and what is accepted::

    crawl.max_pages: 'ten' is not accepted; accepted: an integer from 1 to 10000000
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from brivl.errors import ConfigError

__all__ = ["ConfigError", "bounded", "config_from_dict", "describe", "limits", "read_json_config"]

T = TypeVar("T")
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def limits(*, min: float | None = None, max: float | None = None, gt: float | None = None,
           choices: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """Field metadata for :func:`config_from_dict`: inclusive ``min``/``max``, exclusive
    ``gt``, or a tuple of ``choices``."""
    found = {"min": min, "max": max, "gt": gt, "choices": choices}
    return {"limits": {k: v for k, v in found.items() if v is not None}}


def bounded(default: Any, *, min: float | None = None, max: float | None = None,
            gt: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with ``default`` and :func:`limits` (a list/dict default is copied
    per instance)."""
    meta = limits(min=min, max=max, gt=gt, choices=choices)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "") -> T:
    """``cls`` built from ``data`` (``None``: all defaults), every value checked."""
    section = section or cls.__name__
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: {_show(data)} is not accepted; accepted: an object of "
                          f"{cls.__name__} fields")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; accepted: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        where = f"{section}.{name}"
        rules = known[name].metadata.get("limits", {})
        values[name] = _check_limits(_coerce(value, hints[name], where, rules), rules, where,
                                     shown=value)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def read_json_config(path: str | Path, what: str = "--config") -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or non-object file is a
    :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path}: not valid JSON (line {exc.lineno}, column "
                          f"{exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: holds {type(data).__name__}; accepted: a JSON object "
                          "of config fields")
    return data


# --- types -------------------------------------------------------------------------------------
# ``rules`` (a field's limits) travel along so that a refusal states them with the type.
Rules = Mapping[str, Any]


def _coerce(value: Any, hint: Any, where: str, rules: Rules) -> Any:
    """``value`` as ``hint`` says, or a ConfigError naming ``where``."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, hint, args, where, rules)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, Mapping) or isinstance(value, hint):
            return config_from_dict(hint, value, where)
        raise _refuse(value, hint, where, rules)
    if hint in _NAMES:
        return _scalar(value, hint, where, rules)
    if origin in (tuple, list):
        return _sequence(value, hint, where, rules)
    if origin is dict or hint is dict:
        return _mapping(value, hint, where, rules)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _refuse(value, hint, where, rules)
    return value


def _coerce_union(value: Any, hint: Any, args: tuple, where: str, rules: Rules) -> Any:
    if value is None and type(None) in args:
        return None
    for option in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, option, where, rules)
        except ConfigError:
            continue
    raise _refuse(value, hint, where, rules)


def _scalar(value: Any, hint: type, where: str, rules: Rules) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool):
        pass  # true/false is not a number
    elif hint is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        return value
    raise _refuse(value, hint, where, rules)


def _sequence(value: Any, hint: Any, where: str, rules: Rules) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise _refuse(value, hint, where, rules)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _refuse(value, hint, where, rules)
        return tuple(_coerce(v, a, f"{where}[{i}]", rules)
                     for i, (v, a) in enumerate(zip(value, args, strict=True)))
    item = args[0] if args else Any
    items = [_coerce(v, item, f"{where}[{i}]", rules) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _mapping(value: Any, hint: Any, where: str, rules: Rules) -> dict[str, Any]:
    args = typing.get_args(hint)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _refuse(value, hint, where, rules)
    item = args[1] if len(args) == 2 else Any
    return {k: _coerce(v, item, f"{where}.{k}", rules) for k, v in value.items()}


# --- limits ------------------------------------------------------------------------------------
def _check_limits(value: Any, rules: Rules, where: str, shown: Any = None) -> Any:
    """``value`` when within ``rules`` (each element of a list), else a ConfigError that
    shows the value as given (``shown``), not as converted."""
    if not rules or value is None:
        return value
    many = isinstance(value, (list, tuple))
    for item in value if many else [value]:
        given = item if many or shown is None else shown
        if "choices" in rules and item not in rules["choices"]:
            raise ConfigError(f"{where}: {_show(given)} is not accepted; accepted: one of "
                              f"{', '.join(map(str, rules['choices']))}")
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not _within(
                item, rules):
            raise ConfigError(f"{where}: {_show(given)} is not accepted; accepted: "
                              f"{_range_text(rules, isinstance(item, int))}")
    return value


def _within(number: float, rules: Rules) -> bool:
    return (rules.get("min", -math.inf) <= number <= rules.get("max", math.inf)
            and number > rules.get("gt", -math.inf))


def _range_text(rules: Rules, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    low, high, gt = rules.get("min"), rules.get("max"), rules.get("gt")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if gt is not None:
        return f"{kind} > {gt}" + (f" and <= {high}" if high is not None else "")
    if low is not None:
        return "a positive integer" if integer and low == 1 else f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def _refuse(value: Any, hint: Any, where: str, rules: Rules) -> ConfigError:
    accepted = describe(hint, rules)
    return ConfigError(f"{where}: {_show(value)} is not accepted; accepted: {accepted}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(hint: Any, rules: Rules | None = None) -> str:
    """What a type annotation (and a field's limits) accepts, in words."""
    rules = rules or {}
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [describe(a, rules) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if dataclasses.is_dataclass(hint):
        return f"an object of {hint.__name__} fields"
    if hint in (int, float) and set(rules) & {"min", "max", "gt"}:
        return _range_text(rules, hint is int)
    if "choices" in rules and hint is str:
        return f"one of {', '.join(map(str, rules['choices']))}"
    if hint in _NAMES:
        return _NAMES[hint]
    if origin in (tuple, list):
        item = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe(a, rules) for a in args)})"
        if rules:
            return f"a list, each {describe(item, rules)}"
        return f"a list of {_PLURALS.get(item, describe(item))}"
    if origin is dict or hint is dict:
        return "an object"
    return getattr(hint, "__name__", str(hint))
