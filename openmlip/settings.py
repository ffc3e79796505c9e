"""Checking settings: one rule table per settings object, one way to apply it.

Every settings object (training: :class:`~openmlip.train.config.TrainConfig`, MD: :class:`~openmlip.md.spec.MDSettings`,
free energy: :class:`~openmlip.fe.engine.FESettings`) is a dataclass whose keys each have a :data:`Rule` — the kind of
value, the allowed values in words and a test — and is checked once, when it is built.  A bad value is one
error (the caller's type: :class:`~openmlip.errors.ConfigError`, or :class:`~openmlip.errors.SpecError` for a system
spec) naming the key, the value and what to write instead; an unknown key names the closest known one.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple, Type

from .errors import ConfigError, OpenMLIPError

#: (kind, allowed values in words, test); kinds: "int", "number" (a finite int or float), "bool", "str"
Rule = Tuple[str, str, Callable[[Any], bool]]

KIND_WORDS = {"int": "an integer", "number": "a finite number", "bool": "true or false", "str": "a string"}


def any_value(value: Any) -> bool:
    """The test of a rule whose kind is all it asks."""
    return True


NON_NEGATIVE_INT: Rule = ("int", ">= 0", lambda v: v >= 0)
POSITIVE_INT: Rule = ("int", ">= 1", lambda v: v >= 1)
POSITIVE_NUMBER: Rule = ("number", "> 0", lambda v: v > 0)


def is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"bool": bool, "str": str}[kind])


def check_value(key: str, value: Any, rule: Rule, error: Type[OpenMLIPError] = ConfigError) -> Any:
    """``value`` if it is of the rule's kind and passes its test (a "number" as float), else ``error``."""
    kind, allowed, ok = rule
    if not is_kind(value, kind):
        hint = ""
        if kind in ("int", "number") and isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads a number like 5e-3 without a decimal point as text: write 5.0e-3)"
            except ValueError:
                pass
        raise error(f"{key}={value!r} is not {KIND_WORDS[kind]}{hint}; set {key} to {KIND_WORDS[kind]} {allowed}")
    if not ok(value):
        problem = "is out of range" if kind in ("int", "number") else "is not allowed"
        raise error(f"{key}={value!r} {problem}; set {key} to {KIND_WORDS[kind]} {allowed}")
    return float(value) if kind == "number" else value


def check_values(values: Mapping[str, Any], rules: Mapping[str, Rule], where: str = "",
                 error: Type[OpenMLIPError] = ConfigError, optional: Iterable[str] = ()) -> Dict[str, Any]:
    """Every ruled key of ``values`` checked (keys in ``optional`` may be None), the others as they are; ``where``
    (e.g. ``"system.yaml: md"``) begins the error."""
    may_be_none = set(optional)
    out = dict(values)
    for key, rule in rules.items():
        if key in out and not (out[key] is None and key in may_be_none):
            try:
                out[key] = check_value(key, out[key], rule, error)
            except error as exc:
                if not where:
                    raise
                raise error(f"{where}: {exc}") from None
    return out


def check_known(values: Mapping[str, Any], known: Iterable[str], where: str,
                error: Type[OpenMLIPError] = ConfigError) -> None:
    """An ``error`` naming each key of ``values`` that is not in ``known`` (with the closest known key)."""
    known = list(known)
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise error(f"{where}: unknown setting(s) {', '.join(hints)}; known: {', '.join(known)}")


def str_list(key: str, value: Any, what: str, error: Type[OpenMLIPError] = ConfigError) -> List[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise error(f"{key}={value!r} is not a list of {what}; write {key}: [first, second, ...]")
    return list(value)
