"""Canonical JSON lines, made fast: what ``tickrec replay`` prints and digests hash.

The canonical line of a record is ``json.dumps(record.to_dict(), sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=True)``. That call builds
a dict and a new encoder per record and sorts the keys every time: about 9 µs a
trade on the development VM, ten times what replaying the trade costs. A record
class always has the same keys, so ``line_maker`` writes, once per class, a
function that joins the sorted keys' fixed text with each value's JSON text
(2-3 µs a trade). Most of a book's line is its 20 floats: the shortest text that
reads back as the same double (``float.__repr__``, as ``json`` writes it) costs
about 0.3 µs a float here, and that is left as it is.
It gives the same characters as ``json.dumps`` for every value: the common types
(``int``, ``float``, ``str``, ``None`` and lists of them) are formatted here as
the ``json`` module's C encoder formats them, anything else goes through
``json.dumps`` itself (tests/test_jsonline.py holds the two equal over random
records).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

_dumps_args: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"),
                               "ensure_ascii": False, "allow_nan": True}
_float_repr = float.__repr__
_int_repr = int.__repr__
_INF = float("inf")


def canonical(value: Any) -> str:
    """``json.dumps`` with the canonical settings: the reference for anything."""
    return json.dumps(value, **_dumps_args)


def _float(v: float) -> str:
    if v - v == 0:                      # finite (nan - nan and inf - inf are nan)
        return _float_repr(v)
    if v == _INF:
        return "Infinity"
    return "-Infinity" if v == -_INF else "NaN"


def _sequence(v: list[Any] | tuple[Any, ...]) -> str:
    try:
        text = ",".join(map(_float_repr, v))       # the common case: a list of floats
    except TypeError:
        return "[" + ",".join([value_json(x) for x in v]) + "]"
    if "n" in text:                                 # nan or inf: json's own spelling
        return "[" + ",".join(map(value_json, v)) + "]"
    return "[" + text + "]"


_BY_TYPE: dict[type, Callable[[Any], str]] = {
    str: encode_basestring, int: _int_repr, float: _float, type(None): lambda _: "null",
    bool: lambda v: "true" if v else "false", list: _sequence, tuple: _sequence,
}


def value_json(v: Any) -> str:
    """One value's canonical JSON text (exact types only; subclasses and the rest
    go through ``json.dumps``)."""
    fmt = _BY_TYPE.get(type(v))
    return fmt(v) if fmt is not None else canonical(v)


# an annotation's type, with or without "| None", and how a value of exactly that
# type is written inline (anything else, None included, goes through value_json)
_INLINE = {"int": "_i(x) if type(x) is _int else _v(x)",
           "str": "_s(x) if type(x) is _str else _v(x)",
           # finite floats only: x - x is nan for nan and for ±inf
           "float": "_fr(x) if type(x) is _float and x - x == 0 else _v(x)",
           "list[float]": "_l(x) if type(x) is _list else _v(x)",
           "list[int]": "_l(x) if type(x) is _list else _v(x)"}


def line_maker(fields: dict[str, str], constants: dict[str, Any] | None = None
               ) -> Callable[[Any], str]:
    """A function ``f(record) -> str`` giving ``canonical({name: getattr(record,
    name) for name in fields} | constants)``, the keys sorted. ``fields`` maps
    each attribute to its annotation (``"int"``, ``"float | None"``...), which picks
    the inline test for its usual type. Built once per record class: the keys' text
    is fixed, only the values are formatted per call."""
    keys = sorted(set(fields) | set(constants or {}))
    parts: list[str] = []
    env: dict[str, Any] = {"_v": value_json, "_s": encode_basestring, "_i": _int_repr,
                           "_fr": _float_repr, "_l": _sequence, "_str": str, "_int": int,
                           "_float": float, "_list": list}
    for n, key in enumerate(keys):
        head = ("{" if n == 0 else ",") + canonical(key) + ":"
        if constants and key in constants:
            parts.append(repr(head + canonical(constants[key])))
            continue
        if not key.isidentifier():
            raise ValueError(f"not an attribute name: {key!r}")
        inline = _INLINE.get(fields[key].replace(" | None", ""))
        if inline is None:
            parts.append(f"{head!r} + _v(r.{key})")
        else:
            parts.append(f"{head!r} + ('null' if (x := r.{key}) is None else {inline})")
    body = " + ".join(parts) + " + '}'" if parts else "'{}'"
    source = f"def line(r):\n    return {body}\n"
    exec(compile(source, f"<jsonline {','.join(keys)}>", "exec"), env)  # noqa: S102
    line: Callable[[Any], str] = env["line"]
    return line


__all__ = ["canonical", "line_maker", "value_json"]
