"""The control protocol that the daemon and pipectl share, and where its socket lives.

One JSON object per line each way over a Unix stream socket, at most ``MAX_LINE`` bytes a
line (the newline not counted)::

    -> {"id": 7, "cmd": "stop", "args": {"blocks": ["red"]}}
    <- {"id": 7, "ok": true, "result": {...}}
    <- {"id": 7, "ok": false, "error": {"code": "no_such_block", "message": "..."}}

``id`` is any JSON scalar the client likes (null when missing) and is echoed back; ``args``
defaults to ``{}``. A request with any other field is refused (``bad_request``): a typo
such as ``"arg"`` must not turn ``stop red`` into "stop everything". Blank lines are
skipped, and a last line cut short by EOF is still answered (``nc -U`` without ``-N``).
Errors that belong to no request (a refused peer, a full server, an oversized or overdue
line) come with ``"id": null`` and the server closes the connection after them. Replies
are pure ASCII (non-ASCII is ``\\u``-escaped), so one can never hold a raw newline.

The commands and their results (what pipectl sends and expects):

- ``hello`` -> ``{"protocol": 1, "version", "instance", "commands": [...]}``
- ``status`` ``{"blocks": [names]}`` (empty: all) -> the status object of
  docs/design.md; an unknown name is ``no_such_block``
- ``history`` ``{"blocks": [names]}`` -> ``{"interval_s", "span_s", "blocks": {name:
  {"fps_in", "fps", "cpu_percent"}}}``, each block's last hour, oldest first
- ``start`` / ``stop`` / ``restart`` ``{"blocks": [names]}`` (empty: all; restart
  refuses it) -> ``{"blocks": [{"name", "state"}, ...]}``, the blocks acted on
- ``reload`` -> an object of lists, e.g. ``{"restarted": [...], "unchanged": [...]}``
- ``graph`` -> ``{"blocks": [{"name", "type", "state", "inputs": [...]}, ...]}``
- ``wires`` -> ``{"wires": [...], "packet_wires": [...]}``, each as in "status --json"

pipectl prints whatever comes back readably (``pipelined.ctl.format``) and exits 1 on
any error reply.

This module is plain Python and imports nothing from the daemon and, of the workers, only
the name rules (``pipelined.workers.ipc.names``, itself plain Python): pipectl starts
fast and runs as any user, and the daemon imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelined.workers.ipc.names import check_instance

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # bytes in one request or reply line, without its newline

# Error codes. Clients branch on these, so they never change meaning.
BAD_REQUEST = "bad_request"  # not JSON, not UTF-8, wrong shape, wrong argument types
UNKNOWN_COMMAND = "unknown_command"
NO_SUCH_BLOCK = "no_such_block"
FORBIDDEN = "forbidden"  # the peer is not root, the daemon's user or in its group
TOO_LARGE = "too_large"  # a line over MAX_LINE; the connection is closed
TIMEOUT = "timeout"  # no complete request in time; the connection is closed
BUSY = "busy"  # too many connections at once; the connection is closed
INTERNAL = "internal"  # a bug in the daemon; details are in its log
FAILED = "failed"  # the command was understood but could not be carried out
ERROR_CODES = frozenset(
    (BAD_REQUEST, UNKNOWN_COMMAND, NO_SUCH_BLOCK, FORBIDDEN, TOO_LARGE, TIMEOUT, BUSY)
) | {INTERNAL, FAILED}

SYSTEM_DIR = Path("/run/pipelined")  # systemd's RuntimeDirectory for the system daemon
SOCKET_ENV = "PIPELINED_SOCKET"

Scalar = str | int | float | bool | None


class CommandError(Exception):
    """A command that cannot be carried out; the server sends it back as an error reply.

    Command handlers raise it with one of the codes above (``bad_request`` for arguments
    of the wrong type, ``no_such_block`` for an unknown block, …) and a message that tells
    the user what to do. pipectl raises it for every error reply it receives.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(CommandError):
    """A line that is not a valid request; ``request_id`` is its id, if one could be read."""

    def __init__(self, message: str, request_id: Scalar = None) -> None:
        super().__init__(BAD_REQUEST, message)
        self.request_id = request_id


class ProtocolError(Exception):
    """The daemon sent something that is not a valid reply (a bug, or not a pipelined socket)."""


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    id: Scalar = None


@dataclass(frozen=True)
class Reply:
    id: Scalar
    ok: bool
    result: Any = None
    error: CommandError | None = None

    def unwrap(self) -> Any:
        """The result, or the error reply raised as CommandError."""
        if self.error is not None:
            raise self.error
        return self.result


# -- encoding ----------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    # ensure_ascii: no raw newline or invalid UTF-8 can ever reach the wire;
    # allow_nan=False: NaN and Infinity are not JSON, and other clients would choke.
    return (
        json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
        + b"\n"
    )


def encode_request(cmd: str, args: Mapping[str, Any] | None = None, id: Scalar = None) -> bytes:
    """One request line, newline included. Raises ValueError for what JSON cannot carry."""
    return _dumps({"id": id, "cmd": cmd, "args": dict(args or {})})


def encode_result(id: Scalar, result: Any) -> bytes:
    """A success reply line. Raises ValueError/TypeError when ``result`` is not JSON."""
    return _dumps({"id": id, "ok": True, "result": result})


def encode_error(id: Scalar, code: str, message: str) -> bytes:
    """An error reply line; never fails for a scalar id."""
    return _dumps({"id": id, "ok": False, "error": {"code": code, "message": message}})


# -- decoding ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(line: bytes) -> Any:
    """Strict JSON from one line of UTF-8; raises ValueError with the reason."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the line is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints too long to convert
        raise ValueError(f"the line is not JSON: {exc}") from None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def decode_request(line: bytes) -> Request:
    """The request in one line (without or with its newline), validated.

    Raises BadRequest, carrying the request's id when it had a usable one, so that the
    error reply can still be matched by the client.
    """
    try:
        obj = _loads(line)
    except ValueError as exc:
        raise BadRequest(f"{exc}; send one JSON object per line") from None
    if not isinstance(obj, dict):
        raise BadRequest(
            f'a request is a JSON object like {{"id": 1, "cmd": "status", "args": {{}}}},'
            f" not a {type(obj).__name__}"
        )
    request_id = obj.get("id")
    if not _is_scalar(request_id):
        raise BadRequest("'id' must be a JSON scalar (string, number, true/false or null)")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise BadRequest("'cmd' must be a string naming the command", request_id)
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(f"'args' must be a JSON object, not {type(args).__name__}", request_id)
    unknown = sorted(set(obj) - {"id", "cmd", "args"})
    if unknown:
        raise BadRequest(
            f"unknown request fields {unknown}; a request has only 'id', 'cmd' and 'args'",
            request_id,
        )
    return Request(cmd=cmd, args=args, id=request_id)


def decode_reply(line: bytes) -> Reply:
    """The reply in one line; raises ProtocolError when it is not one."""
    try:
        obj = _loads(line)
    except ValueError as exc:
        raise ProtocolError(f"the daemon's reply is not valid: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ProtocolError(f"the daemon's reply has no 'ok' flag: {line[:200]!r}")
    if obj["ok"]:
        return Reply(id=obj.get("id"), ok=True, result=obj.get("result"))
    error = obj.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(f"the daemon's error reply has no 'error' object: {line[:200]!r}")
    code, message = error.get("code"), error.get("message")
    return Reply(
        id=obj.get("id"),
        ok=False,
        error=CommandError(str(code or INTERNAL), str(message or "(no message)")),
    )


# -- names and the socket path -----------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """One step of the socket path rule: where it looks, and why it used it or went on."""

    source: str  # "--socket", "$PIPELINED_SOCKET", ...
    path: Path | None  # None when this step had nothing to offer
    note: str


def places_looked(
    instance: str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system_dir: Path = SYSTEM_DIR,
) -> list[Place]:
    """The steps of the socket path rule up to the one that gives the path (the last).

    The rule, the same for the daemon and pipectl: ``--socket``, else
    ``$PIPELINED_SOCKET``, else ``/run/pipelined/<instance>.sock`` when /run/pipelined
    exists (the system daemon), else ``$XDG_RUNTIME_DIR/pipelined/<instance>.sock``.

    With no XDG_RUNTIME_DIR either (root in a plain shell, cron, a
    container), ``/tmp/pipelined-<uid>/<instance>.sock``. It is per uid so two users never
    collide, and the daemon refuses that directory when another user owns it (anyone may
    create names in /tmp). A daemon and a pipectl that disagree on their environment land
    on different paths; the no-daemon message lists every step so that shows.
    """
    check_instance(instance)
    env = os.environ if environ is None else environ
    sock = f"{instance}.sock"
    places: list[Place] = []
    if explicit:
        return [Place("--socket", Path(explicit), "given on the command line")]
    places.append(Place("--socket", None, "not given"))
    if env.get(SOCKET_ENV):
        places.append(Place(f"${SOCKET_ENV}", Path(env[SOCKET_ENV]), "set"))
        return places
    places.append(Place(f"${SOCKET_ENV}", None, "not set"))
    if system_dir.is_dir():
        places.append(Place("system daemon", system_dir / sock, f"{system_dir} exists"))
        return places
    places.append(Place("system daemon", None, f"{system_dir} does not exist"))
    if env.get("XDG_RUNTIME_DIR"):
        path = Path(env["XDG_RUNTIME_DIR"]) / "pipelined" / sock
        places.append(Place("$XDG_RUNTIME_DIR", path, "set"))
        return places
    places.append(Place("$XDG_RUNTIME_DIR", None, "not set"))
    path = Path(f"/tmp/pipelined-{os.getuid()}") / sock
    places.append(Place("fallback", path, "per-user directory in /tmp"))
    return places


def socket_path(
    instance: str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system_dir: Path = SYSTEM_DIR,
) -> Path:
    """Where the control socket of ``instance`` is: see ``places_looked`` for the rule."""
    place = places_looked(instance, explicit, environ=environ, system_dir=system_dir)[-1]
    assert place.path is not None
    return place.path
