"""Arguments of control requests, checked on the daemon's side of the socket.

A request's ``args`` is whatever JSON a client sent; these turn it into the values a
command needs or a ``bad_request`` reply that says what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelined.ctl.protocol import BAD_REQUEST, CommandError
from pipelined.workers.ipc.names import BLOCK_RE, BLOCK_RULE

_MISSING: Any = object()


def get_arg(
    args: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING
) -> Any:
    """``args[name]`` checked against ``kind``; raises CommandError(bad_request) otherwise.

    ``bool`` is not accepted where ``int`` is asked (JSON keeps them apart; Python doesn't).
    """
    if name not in args:
        if default is _MISSING:
            raise CommandError(BAD_REQUEST, f"missing argument {name!r}")
        return default
    value = args[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise CommandError(
            BAD_REQUEST, f"argument {name!r} must be {wanted}, not {type(value).__name__}"
        )
    return value


def get_blocks(args: Mapping[str, Any]) -> list[str]:
    """The ``blocks`` argument: a list of block names, empty (or absent) if it names none."""
    blocks = get_arg(args, "blocks", list, [])
    for name in blocks:
        if not isinstance(name, str) or not BLOCK_RE.match(name):
            raise CommandError(
                BAD_REQUEST,
                f"'blocks' must list block names ({BLOCK_RULE}); got {name!r}",
            )
    return blocks
