"""The contract between the daemon and a worker: how a block is started, and how it ends.

The daemon starts every block as a fresh interpreter (``subprocess``, never a fork of its
own memory)::

    python -m pipelined.workers <one string: WorkerArgs, encoded by the codec>

and, when the block's parameters hold secrets, writes them to the worker's stdin: any
local user can read ``/proc/<pid>/cmdline``, nobody else can read a pipe. The daemon
calls ``launch_command``, the worker ``read_worker_args``; neither builds an argv or
reads stdin any other way.

What counts as a secret (one rule, everywhere; docs/design.md says it too):

- the value of a parameter, at any depth of a table, whose name says so: split into
  words at ``_``, ``-``, ``.``, spaces and lower-to-upper case changes, its last word is
  password, passwd, passphrase, pass, pwd, secret, secrets, token, auth, authorization,
  credential, credentials, creds, cookie or apikey; or its last two words are
  ``<api|private|access|secret|session|signing|encryption|client|auth|master> key``; or,
  written as one word, it ends in password, passwd, passphrase, secret, token,
  credential(s) or one of those keys (``dbpassword``, ``authtoken``). So ``secret_key``,
  ``x-auth-token``, ``clientSecret`` and ``apiKey`` are secrets; ``password_file``,
  ``max_tokens``, ``tokenizer`` and ``key`` are not;
- the password of any URL in a string: what follows ``scheme://user:`` up to the last
  ``@`` (ffmpeg, and so OpenCV, reads a URL's userinfo so). A string that is one URL
  hides its password whatever it holds; in free text (a log line) a password ends at
  whitespace.

``redact`` hides URL passwords in text bound for logs and status, and ``mask`` hides
known secret values (in every spelling: as written, and percent-decoded) in what a
worker prints. A URL can carry any password once it is percent-encoded: ``/ ? # [ ]``,
whitespace, ``%`` and anything outside ``A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @``
must be (``#`` as ``%23``, a space as ``%20``); ``url_password_problem`` refuses the
rest without printing it.

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

import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
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
    incoming: int | None = None  # its reader slot on its own packet wire, which another fills
    supervisor: tuple[int, int] = (0, 0)  # the daemon's pid and start time
    liveness_interval: float = 0.5
    beside: str | None = None  # the graph file's folder, where a user module may live
    events: dict[str, Any] | None = None
    """The event pipe: ``fd`` (its write end, open in the worker), ``inbox_fd`` (events
    routed to the block, or None), ``snapshots`` (the folder for snapshot JPEGs, or
    None), ``rate``, ``burst`` and ``quality`` (``[events]``). None: no events."""


@dataclass(frozen=True)
class Launch:
    """How to start one worker: command line, environment, and what to write to stdin."""

    argv: list[str]
    stdin: bytes | None  # the secrets; None: the worker reads nothing
    env: dict[str, str] = field(default_factory=dict)


DAEMON_ONLY_ENV = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS"}
    | {"LISTEN_FDNAMES", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"}
)
"""What systemd tells the daemon alone: its notify socket and watchdog, the sockets it
hands over, its credentials (the page's token), and whether stderr is the journal."""


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a worker (or a user block's check) runs with: the daemon's, less
    what is the daemon's alone: ``PIPELINED_*`` (the page's token) and DAEMON_ONLY_ENV.

    The rest stays: a user's block may need anything its box sets (CUDA_VISIBLE_DEVICES,
    a proxy, PYTHONPATH, DISPLAY for the screen).
    """
    kept = {
        k: v for k, v in env.items() if not k.startswith("PIPELINED_") and k not in DAEMON_ONLY_ENV
    }
    kept["PYTHONUNBUFFERED"] = "1"  # its stderr is the daemon's log: line by line
    return kept


def launch_command(
    args: WorkerArgs, python: str = sys.executable, env: Mapping[str, str] | None = None
) -> Launch:
    """The worker's argv, with its secrets taken out and put on stdin instead, and its
    environment (``worker_environment`` of ``env``, default the daemon's own).

    Raises CodecError when the arguments cannot be encoded or do not fit one argv element.
    """
    public, secrets = split_secrets(args.params)
    fields = {**asdict(args), "params": public, "secrets_on_stdin": bool(secrets)}
    fields["inputs"] = [list(i) for i in args.inputs]
    fields["packet_inputs"] = [list(i) for i in args.packet_inputs]
    fields["supervisor"] = list(args.supervisor)
    stdin = codec.encode(secrets).encode("ascii") if secrets else None
    environment = worker_environment(os.environ if env is None else env)
    return Launch([python, "-m", ENTRY, codec.encode(fields)], stdin, environment)


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

# In free text a URL's password runs from "scheme://user:" to the last "@" before
# whitespace (ffmpeg reads a URL's userinfo to its last "@"). The scheme may only start
# where no scheme character stands before it, and each run of text is searched for its
# last "@" once, whatever URLs it holds: nothing is rescanned from every position
# (quadratic time; a 200 KB parameter once took a minute). A user part holds no
# brackets: "https://[::1]:8443/x@y" is an IPv6 host, not a password.
_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://"
_USER = r"[^:/?#\s\[\]]*"
_URL_HEAD = re.compile(rf"{_SCHEME}{_USER}:")
_WHITESPACE = re.compile(r"\s")
_WHOLE_URL = re.compile(rf"\s*(?P<head>{_SCHEME}{_USER}:)")
_WORDS = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
SECRET_WORDS = frozenset(
    {
        *("password", "passwd", "passphrase", "pass", "pwd", "secret", "secrets", "token"),
        *("auth", "authorization", "credential", "credentials", "creds", "cookie", "apikey"),
    }
)
KEY_QUALIFIERS = frozenset(
    {"api", "private", "access", "secret", "session", "signing", "encryption", "client"}
    | {"auth", "master"}
)
_SECRET_ENDINGS = (
    *("password", "passwd", "passphrase", "secret", "token", "credential", "credentials"),
    *(q + "key" for q in sorted(KEY_QUALIFIERS)),
)
_URL_SAFE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*\Z")
_PORT_AND_PATH = re.compile(r"\d{1,5}[/?#]")
MASK_MIN = 4
"""Secrets shorter than this are not searched for in free text (they would hide every
"a" of a log line); they still never reach a command line, a message or status."""


def is_secret_name(key: str) -> bool:
    """Whether a parameter of this name holds a secret (the rule above)."""
    words = [w.lower() for w in _WORDS.split(key) if w]
    if not words:
        return False
    if words[-1] in SECRET_WORDS:
        return True
    if len(words) > 1 and words[-1] == "key" and words[-2] in KEY_QUALIFIERS:
        return True
    return "".join(words).endswith(_SECRET_ENDINGS)


def _url_password(value: str) -> tuple[str, str, str] | None:
    """``(head, password, rest)`` of a string that is one URL with a password; else None."""
    start = _WHOLE_URL.match(value)
    if start is None:
        return None
    at = value.rfind("@")
    if at < start.end():
        return None
    return value[: start.end()], value[start.end() : at], value[at:]


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ``***``, for logs and status.

    Text that is one URL hides its password whatever it holds (spaces too); in other
    text a password ends at whitespace.
    """
    whole = _url_password(text)
    if whole is not None and whole[1]:
        return whole[0] + SECRET_PLACEHOLDER + whole[2]
    out, pos = [], 0
    for start, end in _passwords_in(text):
        out += [text[pos:start], SECRET_PLACEHOLDER]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _passwords_in(text: str) -> list[tuple[int, int]]:
    """Where the URL passwords of free text are: (start, end) spans, in order."""
    spans = []
    pos = 0
    while (head := _URL_HEAD.search(text, pos)) is not None:
        start = head.end()
        space = _WHITESPACE.search(text, start)
        run_end = space.start() if space else len(text)
        at = text.rfind("@", start, run_end)
        if at > start:
            spans.append((start, at))
            pos = at  # URLs inside the password are hidden with it
        else:
            pos = run_end  # no "@" after this head: none after any later one in the run
    return spans


def url_password_problem(value: str) -> str | None:
    """Why the password of a URL cannot be sent as written, or None. Never shows it."""
    parts = _url_password(value)
    if parts is None or _URL_SAFE.match(parts[1]) or _PORT_AND_PATH.match(parts[1]):
        return None
    return (
        "the password in this URL holds a character a URL cannot carry as it is"
        " (/ ? # [ ] a space, a % not followed by two hex digits, or anything but"
        " A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @): write those percent-encoded"
        " (# as %23, ? as %3F, / as %2F, a space as %20, % as %25); ffmpeg decodes them"
        " before it logs in"
    )


def secret_strings(config: object) -> list[str]:
    """Every secret value in ``config`` as text, in each spelling, longest first.

    For ``mask``: the values under secret names, and URL passwords as written and
    percent-decoded; those shorter than MASK_MIN are left out.
    """
    found: set[str] = set()
    _collect(config, False, found)
    for text in list(found):
        found.add(urllib.parse.unquote(text))
    return sorted((s for s in found if len(s) >= MASK_MIN), key=len, reverse=True)


def _collect(value: object, secret: bool, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, secret or (isinstance(key, str) and is_secret_name(key)), found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, secret, found)
    elif secret and value is not None and not isinstance(value, bool):
        found.add(str(value))
    elif isinstance(value, str):
        whole = _url_password(value)
        if whole is not None and whole[1]:
            found.add(whole[1])
        found.update(value[start:end] for start, end in _passwords_in(value))


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` (``secret_strings``) and URL passwords hidden."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, SECRET_PLACEHOLDER)
    return redact(text)


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
        if type(key) is str and is_secret_name(key):
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
