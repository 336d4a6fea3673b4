"""The contract between the daemon and a worker: how a block is started, and how it ends.

The daemon starts every block as a fresh interpreter (``subprocess``, never a fork of its
own memory)::

    python -m pipelined.workers <one string: WorkerArgs, encoded by the codec>

and, when the block's parameters hold secrets, writes them to the worker's stdin: any
local user can read ``/proc/<pid>/cmdline``, nobody else can read a pipe. The daemon
calls ``launch_command``, the worker ``read_worker_args``; neither builds an argv or
reads stdin any other way.

What counts as a secret: the value of a parameter whose name says so (``password``,
``token``, ``secret``, ``api_key``, or ending in one of those after ``_`` or ``-``), and
the password of any URL in a string. ``redact`` hides URL passwords in text bound for
logs and status. A password in a URL must be percent-encoded if it holds ``/``, ``?``,
``#`` or whitespace, as any URL must; an unencoded ``@`` or ``:`` is fine.

How a worker ends, as the daemon reads its exit status:

- ``EX_OK`` (0): it stopped when asked, or its daemon was gone and it cleaned up;
- ``EX_CONFIG`` (78, sysexits.h): this configuration can never run here (no display for a
  screen, say); the daemon marks the block FAILED with the worker's last stderr line
  instead of restarting it. The daemon itself exits 78 for a graph that cannot run, which
  the systemd unit does not restart either;
- ``EX_USAGE`` (2): it was started with arguments it cannot read (a daemon and workers of
  two different versions);
- ``EX_CRASHED`` (1): the block's code raised; the worker printed the traceback, then one
  last line that says where and why (``crashed in setup(): NameError: … (x.py, line 9)``),
  which the daemon shows in status;
- anything else, or a signal: a crash too. Crashes are restarted by the block's policy.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from . import codec

ENTRY = "pipelined.workers"
"""The module the daemon runs, with ``python -m``, for every block."""
EX_OK = 0
EX_CRASHED = 1
EX_USAGE = 2
EX_CONFIG = 78


@dataclass
class WorkerArgs:
    """Everything a worker is told about its block, secrets included."""

    instance: str
    run: str
    block: str
    type: str
    params: dict[str, Any]
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (wire, reader index)
    output: bool = True
    packet_inputs: list[tuple[str, int]] = field(default_factory=list)  # packet wires read
    packet_output: bool = False  # the block has a packet wire of its own to write
    encode: dict[str, Any] | None = None  # EncodeOptions: the runtime encodes the frames
    supervisor: tuple[int, int] = (0, 0)  # the daemon's pid and start time
    liveness_interval: float = 0.5
    beside: str | None = None  # the graph file's folder, where a user module may live


@dataclass(frozen=True)
class Launch:
    """How to start one worker: its command line, and what to write to its stdin."""

    argv: list[str]
    stdin: bytes | None  # the secrets; None: the worker reads nothing


def launch_command(args: WorkerArgs, python: str = sys.executable) -> Launch:
    """The worker's argv, with its secrets taken out and put on stdin instead.

    Raises CodecError when the arguments cannot be encoded or do not fit one argv element.
    """
    public, secrets = split_secrets(args.params)
    fields = {**asdict(args), "params": public, "secrets_on_stdin": bool(secrets)}
    fields["inputs"] = [list(i) for i in args.inputs]
    fields["packet_inputs"] = [list(i) for i in args.packet_inputs]
    fields["supervisor"] = list(args.supervisor)
    stdin = codec.encode(secrets).encode("ascii") if secrets else None
    return Launch([python, "-m", ENTRY, codec.encode(fields)], stdin)


def read_worker_args(argv: list[str], stdin: IO[str]) -> WorkerArgs:
    """The worker's side of ``launch_command``: its arguments, secrets merged back in."""
    if len(argv) != 1:
        raise codec.CodecError(f"usage: python -m {ENTRY} <encoded-args>")
    raw = codec.decode(argv[0])
    if not isinstance(raw, dict):
        raise codec.CodecError("worker arguments must be a table")
    on_stdin = raw.pop("secrets_on_stdin", False)
    raw["inputs"] = [(str(w), int(i)) for w, i in raw.get("inputs", [])]
    raw["packet_inputs"] = [(str(w), int(i)) for w, i in raw.get("packet_inputs", [])]
    raw["supervisor"] = tuple(raw.get("supervisor", (0, 0)))
    try:
        args = WorkerArgs(**raw)
    except TypeError as exc:
        raise codec.CodecError(f"worker arguments of another version: {exc}") from None
    if on_stdin:
        secrets = codec.decode(stdin.read())
        if not isinstance(secrets, dict):
            raise codec.CodecError("the secrets on stdin must be a table")
        args.params = merge_secrets(args.params, secrets)
    return args


# -- secrets ------------------------------------------------------------------------------

SECRET_PLACEHOLDER = "***"
"""What stands in for a secret in the public configuration, in logs and in status."""

# A URL's userinfo runs to the last "@" before the path, as ffmpeg (and so OpenCV) reads
# it, so an unencoded "@" in a password is hidden whole. A user may hold "@" (an e-mail).
# The scheme may only start where no scheme character stands before it: without that
# look-behind a long run of letters is rescanned from every position (quadratic time;
# a 200 KB parameter took a minute).
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#\s]*:)[^/?#\s]+(?=@)"
)
_SECRET_KEY = re.compile(
    r"(?:password|passwd|token|secret|api[_-]?key|.*[_-](?:password|token|secret))\Z",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ``***``, for logs and status."""
    return _URL_PASSWORD.sub(rf"\g<head>{SECRET_PLACEHOLDER}", text)


def split_secrets(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, object]]:
    """``(public, secrets)``: ``public`` is safe on a command line, ``secrets`` is not.

    A value under a key named like a secret (password, token, api_key, *_secret, …) is
    replaced whole; a string holding a URL with a password has the password replaced.
    ``secrets`` maps the JSON Pointer of each replaced value to the original.
    """
    secrets: dict[str, object] = {}
    return _split_dict(config, "", secrets), secrets


def _split(value: object, pointer: str, secrets: dict[str, object]) -> object:
    if type(value) is dict:
        return _split_dict(value, pointer, secrets)
    if type(value) is list or type(value) is tuple:
        return type(value)(_split(item, f"{pointer}/{i}", secrets) for i, item in enumerate(value))
    if type(value) is str and (hidden := redact(value)) != value:
        secrets[pointer] = value
        return hidden
    return value


def _split_dict(value: dict[Any, Any], pointer: str, secrets: dict[str, object]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, item in value.items():
        child = f"{pointer}/{_token(key)}"
        if type(key) is str and _SECRET_KEY.match(key):
            secrets[child] = item
            out[key] = SECRET_PLACEHOLDER
        else:
            out[key] = _split(item, child, secrets)
    return out


def merge_secrets(public: dict[str, Any], secrets: dict[str, object]) -> dict[str, Any]:
    """The configuration ``split_secrets`` split into ``public`` and ``secrets``."""
    unused = set(secrets)
    merged = _merge_dict(public, "", secrets, unused)
    if unused:
        raise codec.CodecError(
            f"secrets for {', '.join(sorted(unused))} have no place in the configuration"
            " (was it changed after split_secrets?)"
        )
    return merged


def _merge(value: object, pointer: str, secrets: dict[str, object], unused: set[str]) -> object:
    if pointer in secrets:
        unused.discard(pointer)
        return secrets[pointer]
    if type(value) is dict:
        return _merge_dict(value, pointer, secrets, unused)
    if type(value) is list or type(value) is tuple:
        items = (_merge(v, f"{pointer}/{i}", secrets, unused) for i, v in enumerate(value))
        return type(value)(items)
    return value


def _merge_dict(
    value: dict[Any, Any], pointer: str, secrets: dict[str, object], unused: set[str]
) -> dict[Any, Any]:
    return {k: _merge(v, f"{pointer}/{_token(k)}", secrets, unused) for k, v in value.items()}


def _token(key: object) -> str:
    """One JSON Pointer step: "~" and "/" escaped as RFC 6901 says."""
    return str(key).replace("~", "~0").replace("/", "~1")
