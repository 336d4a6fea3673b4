"""A small synchronous client for the control socket: what pipectl (and scripts) use.

    with Client(socket_path("main")) as daemon:
        status = daemon.call("status", blocks=[])

One connection, one request at a time, a timeout on every step. Error replies are raised
as ``CommandError``; no daemon at all (no socket, a stale one, no permission, no answer)
is ``DaemonUnreachable``, so a caller can tell "the daemon said no" from "nobody there".
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from .protocol import MAX_LINE, CommandError, ProtocolError, decode_reply, encode_request

__all__ = ["Client", "CommandError", "DaemonUnreachable", "ProtocolError"]


class DaemonUnreachable(Exception):
    """No daemon answers at ``path``; ``reason`` says what happened instead."""

    def __init__(self, path: Path, reason: str, absent: bool = False) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.absent = absent  # nothing listens there at all (versus no permission, no reply)

    def __str__(self) -> str:
        return f"no daemon answers at {self.path}: {self.reason}"


def _why(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such socket (is the daemon running, with the same --instance/--socket?)"
    if isinstance(exc, ConnectionRefusedError):
        return "the socket is there but nothing listens (a daemon that died?)"
    if isinstance(exc, PermissionError):
        return (
            "permission denied: the socket is for root, the daemon's user and its group;"
            f" ask for the group of {path.parent} (then log in again), or use sudo"
        )
    if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
        return "the path is too long for a Unix socket (at most 107 bytes)"
    return os.strerror(exc.errno) if exc.errno else str(exc)


class Client:
    """A connection to one daemon, opened on first use and reopened after a failure."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._next_id = 1

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def connect(self) -> None:
        """Connect now (``call`` does it anyway); raises DaemonUnreachable."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.path))
        except TimeoutError:
            sock.close()
            raise DaemonUnreachable(
                self.path, f"connect timed out after {self.timeout:g} s"
            ) from None
        except OSError as exc:
            sock.close()
            absent = isinstance(exc, FileNotFoundError | ConnectionRefusedError)
            raise DaemonUnreachable(self.path, _why(self.path, exc), absent) from None
        self._sock = sock

    def call(self, cmd: str, /, **args: Any) -> Any:
        """Send one command and return its result; raises CommandError for an error reply."""
        request_id = self._next_id
        self._next_id += 1
        line = encode_request(cmd, args, request_id)
        if len(line) > MAX_LINE + 1:
            raise ValueError(f"the request is {len(line)} bytes; the limit is {MAX_LINE}")
        self.connect()
        assert self._sock is not None
        try:
            try:
                self._sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it may have said why before hanging up (forbidden, busy): read that
            reply = decode_reply(self._read_line())
        except TimeoutError:
            self.close()
            raise DaemonUnreachable(
                self.path, f"no reply to {cmd!r} within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonUnreachable(self.path, f"connection lost: {_why(self.path, exc)}") from None
        except BaseException:  # ProtocolError, DaemonUnreachable, KeyboardInterrupt
            self.close()
            raise
        if reply.id == request_id:
            return reply.unwrap()
        self.close()
        if reply.id is None and reply.error is not None:
            # busy, forbidden, timeout, too_large: about the connection, not about one
            # request; the daemon closes the connection after it.
            raise reply.error
        raise ProtocolError(f"a reply for id {reply.id!r} while waiting for {request_id}")

    def _read_line(self) -> bytes:
        assert self._sock is not None
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"the daemon sent a line over {MAX_LINE} bytes")
            start = len(self._buf)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise DaemonUnreachable(self.path, "the daemon closed the connection")
            self._buf += chunk
