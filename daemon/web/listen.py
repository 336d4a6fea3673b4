"""Where the page listens, and its token: ``--http``, ``--http-token-file``, the env.

Decisions (docs/design.md, "pipelined"):

- ``--http ADDR:PORT`` turns the page on; ``--http off`` turns it off. Without it,
  ``$PIPELINED_HTTP`` says the same (the packaged unit reads it from
  /etc/default/pipelined: an administrator's place for options, with no ExecStart= to
  override). With neither, it is on at 127.0.0.1:8080 for the built-in demo and off
  for a graph file, so the packaged daemon serves nothing unless told to.
- A token, always. It comes from the first line of ``--http-token-file FILE``, else
  ``$PIPELINED_HTTP_TOKEN``, else the systemd credential ``http-token``
  (``$CREDENTIALS_DIRECTORY/http-token``: the packaged unit's
  ``LoadCredential=http-token:/etc/pipelined/http-token``, a file only root reads),
  never from the command line, which every local user can read in /proc. Given none,
  the daemon makes one and
  prints the URL that carries it, as Jupyter does (only on loopback: beyond it, a token
  must be given, or the daemon does not start: exit 78, EX_CONFIG).
- The same token opens the preview blocks that set none of their own.
- The socket is bound before the graph starts, so a port in use is said at once. For the
  demo's implicit page a port in use is only a warning: the graph runs without its page.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.parse
from dataclasses import dataclass, field

from pipelined.workers.contract import EX_CONFIG

DEMO_LISTEN = "127.0.0.1:8080"
LISTEN_ENV = "PIPELINED_HTTP"
TOKEN_ENV = "PIPELINED_HTTP_TOKEN"
CREDENTIAL = "http-token"
"""The token's name among systemd's credentials (LoadCredential=http-token:FILE)."""


class HttpError(Exception):
    """The page cannot be served as asked; ``exit_code`` is what the daemon exits with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Token:
    """The token the page and previews require; ``made`` when the daemon made it."""

    value: str
    made: bool = False
    source: str = field(default="", compare=False)  # where a given one came from

    def in_url(self, url: str) -> str:
        """``url`` as the daemon prints it: with the token when nobody else knows it."""
        return f"{url}?token={urllib.parse.quote(self.value)}" if self.made else url


@dataclass
class Listener:
    """A bound socket for the page, and the token its requests must carry."""

    host: str
    port: int
    token: str
    sock: socket.socket

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        metavar="ADDR:PORT",
        help=f"serve the page and /metrics here, or 'off' (default: ${LISTEN_ENV}, else"
        f" {DEMO_LISTEN} for the built-in demo and off for a graph file); beyond loopback"
        " a token is required",
    )
    parser.add_argument(
        "--http-token-file",
        metavar="FILE",
        help=f"the page's token, on the first line of FILE (else ${TOKEN_ENV}, else the"
        f" systemd credential {CREDENTIAL}; else one is made and printed)",
    )


def token_from_args(opts: argparse.Namespace) -> Token:
    """The token of ``--http-token-file``, the environment or systemd's credential, else
    a new one."""
    from pipelined.workers.http.access import new_token

    given, source = _token(opts.http_token_file)
    return Token(given, source=source) if given else Token(new_token(), made=True)


def _listen_text(opts: argparse.Namespace, builtin: bool) -> tuple[str, str]:
    """What to listen on, and where that was said (for an error message)."""
    if opts.http is not None:
        return opts.http, "--http"
    from_env = os.environ.get(LISTEN_ENV, "").strip()
    if from_env:
        return from_env, f"${LISTEN_ENV}"
    return (DEMO_LISTEN if builtin else "off"), "--http"


def listen_from_args(opts: argparse.Namespace, builtin: bool, token: Token) -> Listener | None:
    """Bind the page's socket as the options say; None when the page is off."""
    text, where = _listen_text(opts, builtin)
    if text == "off":
        return None
    from pipelined.workers.http.mjpeg import is_loopback, parse_listen

    try:
        host, port = parse_listen(text)
    except ValueError as exc:
        # A bad --http is a usage error; a bad $PIPELINED_HTTP is a configuration one.
        raise HttpError(f"{where}: {exc}", 2 if where == "--http" else EX_CONFIG) from None
    if not is_loopback(host) and token.made:
        raise HttpError(
            f"{where} {text} is beyond loopback, and the page would be open to the network:"
            f" set a token in ${TOKEN_ENV} or --http-token-file, or listen on 127.0.0.1",
            EX_CONFIG,
        )
    try:
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        message = f"cannot serve the page on {text}: {exc.strerror or exc}"
        if opts.http is None and where == "--http":  # the demo's default: run anyway
            print(f"pipelined: {message}; running without it", file=sys.stderr)
            return None
        raise HttpError(message, 1) from None
    return Listener(host, sock.getsockname()[1], token.value, sock)


def _token(path: str | None) -> tuple[str, str]:
    """The given token and where it came from: ``--http-token-file``, else the
    environment, else the systemd credential; ("", "") when none is given."""
    label = f"--http-token-file {path}"
    if path is None:
        from_env = os.environ.get(TOKEN_ENV, "").strip()
        credential = os.path.join(os.environ.get("CREDENTIALS_DIRECTORY") or "", CREDENTIAL)
        if from_env or not os.path.isabs(credential) or not os.path.exists(credential):
            return from_env, f"${TOKEN_ENV}" if from_env else ""
        path, label = credential, f"the systemd credential {CREDENTIAL} ({credential})"
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as exc:
        raise HttpError(f"{label}: {exc.strerror or exc}", EX_CONFIG) from None
    if not token:
        raise HttpError(f"{label} is empty", EX_CONFIG)
    return token, label.removeprefix("--http-token-file ").split(" (")[0]
