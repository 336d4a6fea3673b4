"""``python -m pipelined.workers.probe READ_FD WRITE_FD``: a user block's class, asked.

The daemon never imports a user's block module: a module may call ``sys.exit()`` (an
argparse script), start threads, open the camera, print, or hang while it is imported,
and none of that may end, hang or change the daemon. So graph loading asks this
short-lived process, started as a worker is (the same interpreter, environment and
working directory), about each user block type: what its class declares (``params``,
inputs, output), and the answers of its checks (``Param`` checks, ``validate``,
``max_output_bytes``, ``packet_bytes``, ``input_kinds``) for the graph's values. Only
the answers go back, as codec-encoded lines on WRITE_FD; requests come on READ_FD.

Its own stdin is /dev/null and its stdout goes to its stderr, so a module that reads or
prints touches neither pipe. It ends when READ_FD reaches its end, without waiting for
threads a module started; the daemon kills its process group (anything a module
spawned) at the end of every load, and at once when an answer is late.
"""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path
from typing import Any

from . import codec
from .block import Block
from .registry import BlockTypeError, resolve

MAX_PROBLEMS = 100
MAX_TEXT = 4096
"""What of a block's words comes back: a reply stays small, whatever the block says."""


class Probe:
    """The classes imported in this process, and the answers about them."""

    def __init__(self) -> None:
        self.classes: dict[str, type[Block] | str] = {}  # a class, or why there is none

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        cls = self._class(request["type"], request.get("beside"))
        if isinstance(cls, str):
            return {"error": cls}
        op = request["op"]
        if op == "type":
            return _facts(cls)
        if op == "check":
            return {"ok": _check(cls.params[request["key"]], request["value"])}
        try:
            if op == "validate":
                problems = list(cls.validate(request["params"]))[:MAX_PROBLEMS]
                return {"ok": [_text(str(p)) for p in problems]}
            if op == "max_output_bytes":
                return _value(cls.max_output_bytes(request["params"], request["sizes"]))
            if op == "packet_bytes":
                return _value(cls.packet_bytes(request["params"]))
            if op == "input_kinds":
                return _value(cls.input_kinds(request["params"], request["offered"]))
        except NotImplementedError:
            return {"not_implemented": True}
        except BaseException as exc:  # user code: SystemExit and all
            return {"raised": _text(f"{type(exc).__name__}: {exc}")}
        return {"error": f"unknown request {op!r}"}

    def _class(self, type_name: str, beside: str | None) -> type[Block] | str:
        if type_name not in self.classes:
            try:
                self.classes[type_name] = resolve(type_name, Path(beside) if beside else None)
            except BlockTypeError as exc:
                self.classes[type_name] = str(exc)
            except BaseException as exc:  # sys.exit() while importing, say
                module = type_name.partition(":")[0]
                self.classes[type_name] = _text(
                    f"cannot import module {module!r} for block type {type_name!r}:"
                    f" {type(exc).__name__}: {exc}"
                )
        return self.classes[type_name]


def _facts(cls: type[Block]) -> dict[str, Any]:
    """What the loader reads of a class itself."""
    params = {}
    for key, param in cls.params.items():
        default = None if param.required else param.default
        try:
            codec.encode(default, limit=None)
        except codec.CodecError as exc:
            return {"error": f"{cls.__name__}: the default of parameter {key!r} cannot be given"
                    f" to a worker: {exc}"}  # fmt: skip
        params[key] = {
            "required": param.required,
            "default": default,
            "doc": param.doc,
            "state_path": bool(param.state_path),  # placed under the state directory
        }
    return {
        "ok": {
            "name": cls.__name__,
            "mro": [f"{c.__module__}:{c.__qualname__}" for c in cls.__mro__],
            "has_output": bool(cls.has_output),
            "min_inputs": int(cls.min_inputs),
            "max_inputs": None if cls.max_inputs is None else int(cls.max_inputs),
            "params": params,
            "event_kinds": [str(k) for k in getattr(cls, "event_kinds", ())][:100],
        }
    }


def _check(param: Any, value: Any) -> str | None:
    """The parameter's problem with ``value``, as the loader words it."""
    try:
        problem = param.problem(value)
    except BaseException as exc:  # a user block's check
        return _text(f"cannot be checked: {type(exc).__name__}: {exc}")
    return None if problem is None else _text(str(problem))


def _value(value: Any) -> dict[str, Any]:
    """A returned value as it is, or (when it cannot travel) as the loader would show it."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy's ints are sizes too
    elif isinstance(value, list | tuple):
        value = list(value)
    try:
        codec.encode(value, limit=None)
    except codec.CodecError:
        return {"shown": _text(repr(value))}
    return {"ok": value}


def _text(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def main(argv: list[str]) -> int:
    read_fd, write_fd = (int(a) for a in argv)
    replies = os.fdopen(write_fd, "w", encoding="ascii")
    requests = os.fdopen(read_fd, encoding="ascii")
    os.dup2(2, 1)  # what a module prints goes to stderr, never into the replies
    sys.stdout = sys.stderr
    probe = Probe()
    for line in requests:
        request = codec.decode(line)
        if not isinstance(request, dict):
            return 2  # not the daemon's: nothing to answer
        reply = probe.answer(request)
        replies.write(codec.encode(reply, limit=None) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # not waiting for threads a module started
