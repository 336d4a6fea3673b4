"""User block types, asked of a short-lived worker process: their code never runs here.

Graph loading needs to know what a user's block class declares and what its checks say
of the graph's values. Importing the module in the daemon would let it end the daemon
(``sys.exit()`` in an argparse script), hang it, or change it (threads, signal handlers,
``sys.path``, an open camera). So ``UserTypes`` hands out a ``RemoteBlock`` per user type:
its facts (name, ``params``, inputs, output) fetched once, its checks forwarded, each
answered by ``python -m pipelined.workers.probe`` (workers/probe.py), started as a
worker is (the same interpreter, environment and working directory) when the first user
type of a load is met, and killed with everything it started when the load ends.

Every answer has a deadline: IMPORT_TIMEOUT for the first request of a type in a
process (it imports the module), CALL_TIMEOUT for the others. A process that is late is
killed, one that exits is reaped; the block whose type or check it was gets a problem
that says so, and the next request starts a new process. Built-in types are imported
here as before: they are this package's own code.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelined.workers import codec
from pipelined.workers.block import Block
from pipelined.workers.contract import worker_environment
from pipelined.workers.registry import BUILTIN, BlockTypeError, resolve

from .lines import Lines, Tail

PROBE = "pipelined.workers.probe"
IMPORT_TIMEOUT = 60.0
"""Seconds for a type's module to import (a Pi importing torch takes tens of seconds)."""
CALL_TIMEOUT = 10.0
"""Seconds for any other answer (a check, ``validate``, ``max_output_bytes``, …)."""
MAX_REPLY = 4 << 20


class ProbeFailed(Exception):
    """The probe process gave no answer: it exited, or was late and was killed."""


class UserCodeError(Exception):
    """The user's code raised; ``str()`` is ``TypeName: message``, as the loader shows it."""


class _Shown:
    """A value the probe could not send back, as ``repr`` showed it there."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Probe:
    """One probe process at a time, asked one request at a time."""

    def __init__(self, import_timeout: float = IMPORT_TIMEOUT, call_timeout: float = CALL_TIMEOUT):
        self.import_timeout = import_timeout
        self.call_timeout = call_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._requests: int | None = None  # our ends of its two pipes
        self._replies: int | None = None
        self._imported: set[str] = set()  # types the running process has imported
        self._stderr = Lines()
        self.said = Tail(lines=5, size=2048)  # its last words, for a failure's message

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The probe's answer to ``request``; ProbeFailed if there is none in time."""
        type_name = request["type"]
        if self._proc is None or type_name not in self._imported:
            # The module is imported first, on its own deadline (again, in a new process).
            imported = {"op": "type", "type": type_name, "beside": request.get("beside")}
            reply = self._exchange(imported, self.import_timeout)
            self._imported.add(type_name)
            if request["op"] == "type" or "error" in reply:
                return reply
        return self._exchange(request, self.call_timeout)

    def _exchange(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._proc is None:
            self._start()
        assert self._requests is not None
        line = (codec.encode(request, limit=None) + "\n").encode("ascii")
        try:
            os.write(self._requests, line)  # a pipe takes a request of this size at once
        except OSError:
            pass  # it is gone already: reading says how
        return self._read_reply(timeout)

    def close(self) -> None:
        """End the process and whatever it started (its process group)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for fd in (self._requests, self._replies):
            if fd is not None:
                os.close(fd)
        self._requests = self._replies = None
        try:
            proc.wait(timeout=2.0)  # end of requests: it exits by itself
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # threads or children a module left
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        self._imported.clear()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _start(self) -> None:
        theirs_in, ours_out = os.pipe()
        ours_in, theirs_out = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", PROBE, str(theirs_in), str(theirs_out)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(theirs_in, theirs_out),
                start_new_session=True,  # a group of its own: killed whole, never our signals
                env=worker_environment(os.environ),
            )
        except BaseException:
            os.close(ours_out)
            os.close(ours_in)
            raise
        finally:
            os.close(theirs_in)
            os.close(theirs_out)
        self._requests, self._replies = ours_out, ours_in
        os.set_blocking(self._stderr_fd(), False)
        self._stderr = Lines()
        self.said = Tail(lines=5, size=2048)

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._replies is not None
        deadline = time.monotonic() + timeout
        buf = bytearray()
        err = self._stderr_fd()
        poller = select.poll()
        poller.register(self._replies, select.POLLIN)
        poller.register(err, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail()
                raise ProbeFailed(f"no answer within {timeout:g} s")
            for fd, _ in poller.poll(left * 1000):
                if fd == err:
                    self._drain_stderr(poller)
                    continue
                chunk = os.read(self._replies, 65536)
                if not chunk:
                    code = self._fail()
                    raise ProbeFailed(self._exit_words(code))
                buf += chunk
                if buf.endswith(b"\n"):
                    return self._decode(bytes(buf))
                if len(buf) > MAX_REPLY:
                    self._fail()
                    raise ProbeFailed(f"an answer of more than {MAX_REPLY:,} bytes")

    def _stderr_fd(self) -> int:
        assert self._proc is not None and self._proc.stderr is not None
        return self._proc.stderr.fileno()

    def _drain_stderr(self, poller: select.poll) -> None:
        try:
            chunk = os.read(self._stderr_fd(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            poller.unregister(self._stderr_fd())
        for line in self._stderr.feed(chunk):
            self.said.append(line)

    def _decode(self, line: bytes) -> dict[str, Any]:
        reply = codec.decode(line.decode("ascii", "replace"))
        if not isinstance(reply, dict):
            self._fail()
            raise ProbeFailed("an answer it did not write")
        return reply

    def _fail(self) -> int:
        """Kill the process (late, or gone already) and reap it; its exit status."""
        proc = self._proc
        assert proc is not None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = proc.wait()
        try:
            rest = (proc.stderr.read() if proc.stderr is not None else None) or b""
        except (OSError, ValueError):
            rest = b""
        for line in [*self._stderr.feed(rest), *self._stderr.end()]:
            self.said.append(line)
        self.close()
        return code

    def _exit_words(self, code: int) -> str:
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        said = list(self.said)
        return f"the process asking it {how}" + (f" (it said: {said[-1]})" if said else "")


@dataclass(frozen=True)
class RemoteParam:
    """A user block's parameter: declared there, checked there."""

    type_name: str
    key: str
    required: bool
    default: Any
    doc: str
    state_path: bool = False  # a path the loader places under the state directory
    beside: str | None = field(default=None, compare=False)
    probe: Probe | None = field(default=None, compare=False, repr=False)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter, or None (never raises)."""
        request = {"op": "check", "type": self.type_name, "beside": self.beside}
        try:
            reply = _ask(self.probe, {**request, "key": self.key, "value": value})
        except UserCodeError as exc:
            return f"cannot be checked: {exc}"
        return reply


@dataclass(frozen=True)
class RemoteBlock:
    """A user block type as the loader sees it: the facts of its class, its checks asked.

    It stands where a Block subclass would (``BlockSpec.cls``); two loads of the same
    unchanged type compare equal, so a reload restarts only what changed.
    """

    type_name: str
    name: str
    has_output: bool
    min_inputs: int
    max_inputs: int | None
    params: dict[str, RemoteParam]
    beside: str | None = field(default=None, compare=False)
    probe: Probe | None = field(default=None, compare=False, repr=False)
    mro: tuple[str, ...] = ()  # "module:Class" of the class and each of its bases
    event_kinds: tuple[str, ...] = ()  # the kinds of event it says it raises

    @property
    def __name__(self) -> str:
        return self.name

    def is_a(self, qualified: str) -> bool:
        """Whether the class is ``module:Class``, or derives from it."""
        return qualified in self.mro

    def validate(self, params: dict[str, Any]) -> list[str]:
        return list(self._ask("validate", params=params))

    def max_output_bytes(self, params: dict[str, Any], input_bytes: Sequence[int]) -> Any:
        return self._ask("max_output_bytes", params=params, sizes=list(input_bytes))

    def packet_bytes(self, params: dict[str, Any]) -> Any:
        return self._ask("packet_bytes", params=params)

    def input_kinds(self, params: dict[str, Any], offered: Sequence[bool]) -> Any:
        return self._ask("input_kinds", params=params, offered=list(offered))

    def _ask(self, op: str, **args: Any) -> Any:
        return _ask(self.probe, {"op": op, "type": self.type_name, "beside": self.beside, **args})


def _ask(probe: Probe | None, request: dict[str, Any]) -> Any:
    """The value of the probe's answer; UserCodeError for what the user's code raised."""
    if probe is None:
        raise UserCodeError("ProbeFailed: this type's check process is closed")
    try:
        reply = probe.ask(request)
    except ProbeFailed as exc:
        raise UserCodeError(str(exc)) from None
    if "raised" in reply:
        raise UserCodeError(reply["raised"])
    if reply.get("not_implemented"):
        raise NotImplementedError
    if "shown" in reply:
        return _Shown(reply["shown"])
    if "error" in reply:
        raise UserCodeError(reply["error"])
    return reply.get("ok")


class UserTypes:
    """Block types by name for one load: built-ins imported here, user types asked.

    Use it as a context manager: leaving it ends the probe process.
    """

    def __init__(self, probe: Probe | None = None):
        self.probe = probe or Probe()
        self._types: dict[str, RemoteBlock | BlockTypeError] = {}

    def resolve(self, type_name: str, beside: Path | None) -> type[Block] | RemoteBlock:
        """The class (built-in) or RemoteBlock (user type); BlockTypeError says why not."""
        if type_name in BUILTIN or ":" not in type_name:
            return resolve(type_name)  # built-in, or an unknown name: no user code runs
        if type_name not in self._types:
            self._types[type_name] = self._ask_type(type_name, beside)
        found = self._types[type_name]
        if isinstance(found, BlockTypeError):
            raise found
        return found

    def _ask_type(self, type_name: str, beside: Path | None) -> RemoteBlock | BlockTypeError:
        where = str(beside) if beside is not None else None
        try:
            reply = self.probe.ask({"op": "type", "type": type_name, "beside": where})
        except ProbeFailed as exc:
            module = type_name.partition(":")[0]
            hint = (
                " (a module must not wait for anything while it is imported)"
                if "no answer within" in str(exc)
                else " (did it call sys.exit() or os._exit()?)"
            )
            return BlockTypeError(
                f"cannot import module {module!r} for block type {type_name!r}: {exc}{hint}"
            )
        if "error" in reply:
            return BlockTypeError(reply["error"])
        facts = reply["ok"]
        params = {
            key: RemoteParam(
                type_name,
                key,
                p["required"],
                p["default"],
                p["doc"],
                p["state_path"],
                where,
                self.probe,
            )
            for key, p in facts["params"].items()
        }
        return RemoteBlock(
            type_name,
            facts["name"],
            facts["has_output"],
            facts["min_inputs"],
            facts["max_inputs"],
            params,
            where,
            self.probe,
            tuple(facts["mro"]),
            tuple(str(k) for k in facts.get("event_kinds", ())),
        )

    def close(self) -> None:
        self.probe.close()

    def __enter__(self) -> UserTypes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
