"""The argument codec: a block's configuration as one command-line string, secrets kept off it.

The daemon launches each worker as ``python -m pipelined.workers <one string>``, so the
configuration has to survive as one argv element and come back exactly as it left.

Why JSON: the standard library writes and reads it quickly and exactly (floats by their
shortest repr, so -0.0 and every bit survive; NaN and ±Infinity by the json module's own
spelling, which is fine because both ends are Python), ``ensure_ascii`` turns any text,
lone surrogates and NUL included, into printable ASCII, and a person can still read it
in ``ps``. What JSON cannot say is carried by a tag: a JSON object with exactly one key
that starts with ``$``::

    {"$tuple": [...]}          tuple (JSON has one sequence type; lists stay lists)
    {"$bytes": "<base64>"}     bytes (4 characters per 3 bytes; \\u-escapes cost up to 6 per byte)
    {"$date": "2024-05-27"}    date
    {"$datetime": "…"}         datetime and time as isoformat(): exact to the microsecond
    {"$time": "…"}             and the UTC offset, plus ";fold=1" when fold is set
    {"$int": "-1f…"}           ints over 1024 bits, in hex: decimal conversion is quadratic
                               and Python refuses it past 4300 digits, hex is neither
    {"$dict": {...}}           a real dict whose only key starts with "$", so that
                               no key a user writes can be mistaken for a tag

Exact or refused, never silently changed: a subclass (an IntEnum, an OrderedDict, a
named timezone) would come back as its plain base, so it is refused, naming the path to
the value. Messages name paths, keys and types, never values, so they are safe to log.

The result is refused above the kernel's per-argument limit (MAX_ARG_STRLEN: 32 pages,
131072 bytes with the NUL) here, with advice, rather than as a bare E2BIG from exec in
the daemon. Nesting is limited by Python's recursion limit (about 500 levels here).

What is secret, and how it stays off the command line, is the worker contract's
(``pipelined.workers.contract``); this module only encodes values.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import reprlib
from collections.abc import Callable

__all__ = ["MAX_ARG_BYTES", "CodecError", "decode", "encode"]

MAX_ARG_BYTES = 131071
"""The longest argv element Linux execs: MAX_ARG_STRLEN (131072) less the NUL."""

_BIG_INT_BITS = 1024  # well under the 4300-digit (~14,000-bit) cap on int <-> str
_ROOT = "config"
_Path = tuple[str | int, ...]


class CodecError(ValueError):
    """A value the codec cannot carry, or a string it did not write."""


def encode(value: object, limit: int | None = MAX_ARG_BYTES) -> str:
    """Encode ``value`` as one printable-ASCII string that ``decode`` turns back into it.

    ``limit``: the longest string allowed (the kernel's, for a command line); None for
    none (a pipe).
    """
    try:
        text = _dumps(_to_json(value, (), set()))
    except RecursionError:
        raise CodecError(
            f"cannot encode {_ROOT}: it is nested too deeply for Python's recursion limit"
            " (flatten it, or move it to a file)"
        ) from None
    if limit is not None and len(text) > limit:
        raise CodecError(_too_long(value, len(text)))
    return text


def _dumps(tree: object) -> str:
    return json.dumps(tree, ensure_ascii=True, separators=(",", ":"))


def _to_json(value: object, path: _Path, active: set[int]) -> object:
    """``value`` as plain JSON types; ``active`` holds the containers above, to catch cycles."""
    # Exact types (``type(value) is``), never isinstance: a subclass would not come back.
    if value is None or type(value) in (bool, str, float):
        return value
    if type(value) is int:
        return value if value.bit_length() <= _BIG_INT_BITS else {"$int": format(value, "x")}
    if type(value) is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if type(value) is datetime.date:
        return {"$date": value.isoformat()}
    if type(value) is datetime.datetime or type(value) is datetime.time:
        _check_tzinfo(value, path)
        tag = "$datetime" if type(value) is datetime.datetime else "$time"
        return {tag: value.isoformat() + (";fold=1" if value.fold else "")}
    if type(value) is list or type(value) is tuple or type(value) is dict:
        if id(value) in active:
            raise CodecError(f"cannot encode {_where(path)}: it contains itself (break the cycle)")
        active.add(id(value))
        try:
            if type(value) is dict:
                return _dict_to_json(value, path, active)
            items = [_to_json(item, (*path, i), active) for i, item in enumerate(value)]
            return items if type(value) is list else {"$tuple": items}
        finally:
            active.discard(id(value))
    raise CodecError(f"cannot encode {_where(path)}: {_unsupported(value)}")


def _check_tzinfo(value: datetime.datetime | datetime.time, path: _Path) -> None:
    """Only unnamed fixed offsets survive isoformat(); a zone's rules or name would not."""
    tz = value.tzinfo
    if tz is None:
        return
    if type(tz) is datetime.timezone:
        offset = tz.utcoffset(None)
        if tz.tzname(None) == datetime.timezone(offset).tzname(None):
            return
    raise CodecError(
        f"cannot encode {_where(path)}: {_a(type(value))} with tzinfo {tz!r} is not supported:"
        " only unnamed fixed UTC offsets round-trip (use tzinfo=datetime.timezone(offset))"
    )


def _dict_to_json(value: dict[object, object], path: _Path, active: set[int]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise CodecError(
                f"cannot encode {_where(path)}: key {reprlib.repr(key)} is {_a(type(key))};"
                " only str keys are supported, as in TOML and JSON (convert it with str())"
            )
        out[key] = _to_json(item, (*path, key), active)
    if len(out) == 1 and next(iter(out)).startswith("$"):
        return {"$dict": out}
    return out


_ADVICE = {
    set: "use a list or tuple",
    frozenset: "use a list or tuple",
    complex: "store the real and imaginary parts as two floats",
    bytearray: "use bytes",
    memoryview: "use bytes",
}
_SUPPORTED = "None, bool, int, float, str, bytes, list, tuple, dict, datetime, date and time"
_BASES: tuple[type, ...] = (int, float, str, bytes, list, tuple, dict)
_BASES += (datetime.datetime, datetime.date, datetime.time)  # datetime before date, its base


def _unsupported(value: object) -> str:
    """Why ``value`` cannot be encoded, and what to use instead."""
    kind = type(value)
    for base in _BASES:
        if isinstance(value, base):
            return (
                f"{_a(kind)} (a subclass of {base.__name__}) is not supported: the worker would"
                f" get a plain {base.__name__} back (convert it to a plain {base.__name__})"
            )
    advice = _ADVICE.get(kind, f"the codec takes {_SUPPORTED}")
    return f"{_a(kind)} is not supported ({advice})"


def _a(kind: type) -> str:
    name = kind.__qualname__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _where(path: _Path) -> str:
    """``config['blocks'][2]['size']``: how a user would write the way to the value."""
    return _ROOT + "".join(f"[{step!r}]" for step in path)


def _too_long(value: object, size: int) -> str:
    part, part_size = _largest_part(value)
    culprit = f"; the largest part is {_where(part)} ({part_size:,} bytes)" if part else ""
    return (
        f"encoded arguments are {size:,} bytes; the kernel takes at most {MAX_ARG_BYTES:,}"
        f" in one argument (MAX_ARG_STRLEN){culprit} — move large data (tables, images,"
        " models) to a file and pass its path instead"
    )


def _largest_part(value: object) -> tuple[_Path, int]:
    """Follow the largest child while it is most of its parent: that is what to move out."""
    path: _Path = ()
    size = _encoded_size(value)
    while (type(value) is dict or type(value) is list or type(value) is tuple) and value:
        items = value.items() if type(value) is dict else enumerate(value)
        sized = [(_encoded_size(child), key, child) for key, child in items]
        child_size, key, child = max(sized, key=lambda s: s[0])
        if child_size * 2 < size:
            break
        path, value, size = (*path, key), child, child_size
    return path, size


def _encoded_size(value: object) -> int:
    return len(_dumps(_to_json(value, (), set())))


def decode(text: str) -> object:
    """The value ``encode`` turned into ``text``; CodecError if it did not write it."""
    try:
        tree = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise CodecError("cannot decode the arguments: they are nested too deeply") from None
    except (ValueError, TypeError) as e:
        raise CodecError(
            f"cannot decode the arguments: not a string encode() wrote ({e})"
        ) from None
    try:
        return _from_json(tree, ())
    except RecursionError:
        raise CodecError("cannot decode the arguments: they are nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """JSON lets a key repeat and json keeps the last; encode never repeats one."""
    out: dict[str, object] = {}
    for key, item in pairs:
        if key in out:
            raise ValueError(f"the key {reprlib.repr(key)} appears twice in one object")
        out[key] = item
    return out


def _from_json(tree: object, path: _Path) -> object:
    if type(tree) is list:
        return [_from_json(item, (*path, i)) for i, item in enumerate(tree)]
    if type(tree) is dict:
        if len(tree) == 1:
            [(key, payload)] = tree.items()
            if key.startswith("$"):
                return _untag(key, payload, path)
        return {key: _from_json(item, (*path, key)) for key, item in tree.items()}
    return tree


def _untag(tag: str, payload: object, path: _Path) -> object:
    if tag == "$tuple" and type(payload) is list:
        return tuple(_from_json(item, (*path, i)) for i, item in enumerate(payload))
    if tag == "$dict" and type(payload) is dict:
        return {key: _from_json(item, (*path, key)) for key, item in payload.items()}
    if type(payload) is str and tag in _SCALAR_TAGS:
        try:
            return _SCALAR_TAGS[tag](payload)
        except ValueError as e:
            raise CodecError(f"cannot decode {_where(path)}: a malformed {tag} ({e})") from None
    raise CodecError(
        f"cannot decode {_where(path)}: {tag!r} with {_a(type(payload))} is not a tag encode()"
        " writes"
    )


def _clock(kind: type[datetime.datetime] | type[datetime.time], text: str) -> object:
    """A datetime or time from isoformat() and the ";fold=1" that encode adds."""
    iso, _, fold = text.partition(";")
    if fold not in ("", "fold=1"):
        raise ValueError(f"unexpected suffix {fold!r}")
    # The offset is read here, not by fromisoformat(): Python 3.11 reads any offset under a
    # second ("+00:00:00.000001") as UTC.
    tz = None
    if offset := _OFFSET.search(iso):
        iso = iso[: offset.start()]
        sign, hours, minutes, seconds, micros = offset.groups(default="0")
        delta = datetime.timedelta(
            hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=int(micros)
        )
        tz = datetime.timezone(-delta if sign == "-" else delta)
    clock = kind.fromisoformat(iso)
    if clock.tzinfo is not None:
        raise ValueError("its UTC offset is not written as isoformat() writes it")
    return clock.replace(tzinfo=tz, fold=1 if fold else 0)


_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?\Z")
_SCALAR_TAGS: dict[str, Callable[[str], object]] = {
    "$bytes": lambda text: base64.b64decode(text, validate=True),
    "$int": lambda text: int(text, 16),
    "$date": datetime.date.fromisoformat,
    "$datetime": lambda text: _clock(datetime.datetime, text),
    "$time": lambda text: _clock(datetime.time, text),
}
