"""The control server: the daemon's end of pipectl's Unix socket.

The daemon registers one coroutine per command (circus-style)::

    server = ControlServer({"status": status, "stop": stop, ...}, instance="main")
    await server.start(socket_path("main"))      # or start(sock=<systemd's socket>)
    ...
    await server.close()

A handler gets the request's ``args`` (a dict) and returns a JSON-able result, or raises
``CommandError`` (``bad_request`` for arguments of the wrong type: see ``get_arg`` and
``get_blocks`` in pipelined.daemon.commands.args). ``hello`` is answered here.

The daemon must never wait on a client, because the same event loop supervises the
workers. So every read has a deadline (a client must finish each request within
``idle_timeout`` of the previous one, which also ends slow-drip clients), every write has
``write_timeout`` to drain (a client that never reads is dropped), lines are capped at
MAX_LINE, connections at ``max_clients``, and a handler that raises gets an ``internal``
reply and a traceback in the log while the server carries on. Connections are served
concurrently; requests on one connection are answered in order.

The cap cannot lock anyone out: when it is reached, a new connection closes the one
that has waited longest for its next request (it is told why), so idle or slow-drip
connections left open by a script never stand between an admin and ``pipectl status``.
Only when every connection is in the middle of a command is the newcomer told ``busy``.

Who may connect: root, the daemon's own user, and members of its group (``group``, by
default the daemon's gid). The socket file is 0660 so the kernel already keeps others
out of a socket we bind; the peer check (SO_PEERCRED) also covers sockets handed to us
(systemd's may have any mode). Group membership is the union of what the kernel says
the peer process holds (SO_PEERGROUPS, supplementary groups included) and what the user
database says the uid belongs to (os.getgrouplist): the first covers groups given by
setgroups/newgrp, the second a user added to the group who has not logged in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import importlib.metadata
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelined.ctl.protocol import (
    BUSY,
    FORBIDDEN,
    INTERNAL,
    MAX_LINE,
    PROTOCOL_VERSION,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN_COMMAND,
    BadRequest,
    CommandError,
    decode_request,
    encode_error,
    encode_result,
)
from pipelined.workers.ipc.names import check_instance

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

SOCKET_MODE = 0o660
DIR_MODE = 0o750
AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; 59 on x86 and ARM
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


class ControlSocketError(Exception):
    """The control socket cannot be set up at that path (in use, unsafe, too long…)."""


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a connection, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] | None  # the process's supplementary groups; None if unknown

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


def peer_of(sock: Any) -> Peer:
    """SO_PEERCRED (and SO_PEERGROUPS when the kernel has it) of a connected Unix socket."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError:  # ERANGE past 256 groups, or a kernel without it: the database decides
        groups = None
    else:
        count = len(raw) // 4
        groups = frozenset(struct.unpack(f"{count}I", raw[: count * 4]))
    return Peer(pid=pid, uid=uid, gid=gid, groups=groups)


def user_groups(uid: int, gid: int) -> set[int]:
    """The groups the user database gives ``uid`` (may block on NSS: call it off the loop)."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (a container's) has only its own gid
        return {gid}
    return set(os.getgrouplist(name, gid))


def _resolve_group(group: int | str | None) -> int:
    if group is None:
        return os.getegid()
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlSocketError(
            f"no group named {group!r}: create it (sysusers.d does for the package)"
            " or give the group's number"
        ) from None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(eq=False)
class _Conn:
    """An admitted connection: since when it waits for a request (None: in a command)."""

    reader: asyncio.StreamReader
    idle_since: float | None
    evicted: str | None = None  # why the server closes it to make room

    def evict(self, why: str) -> None:
        """End its wait for a request: the session sees EOF, says ``why`` and closes."""
        self.evicted = why
        self.reader.feed_eof()


class ControlServer:
    """Serves the control protocol with a table of command handlers."""

    def __init__(
        self,
        commands: Mapping[str, Handler],
        *,
        instance: str = "main",
        version: str | None = None,
        group: int | str | None = None,
        idle_timeout: float = 30.0,
        write_timeout: float = 5.0,
        max_clients: int = 64,
        max_line: int = MAX_LINE,
    ) -> None:
        if "hello" in commands:
            raise ValueError("'hello' is answered by ControlServer itself; do not register it")
        self.commands = dict(commands)
        self.instance = check_instance(instance)
        self.version = version or _package_version()
        self.gid = _resolve_group(group)
        self._chown_group = group is not None
        self.uid = os.geteuid()
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_clients = max_clients
        self.max_line = max_line
        self.path: Path | None = None  # set when we bound the socket ourselves
        self._inode: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Conn] = set()

    @property
    def connections(self) -> int:
        """Admitted connections open right now."""
        return len(self._conns)

    # -- starting and stopping -----------------------------------------------------------

    async def start(
        self, path: str | os.PathLike[str] | None = None, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on ``path`` (bound here), or on ``sock`` (already listening: systemd's).

        Raises ControlSocketError when ``path`` cannot be used: a live daemon answers
        there, something that is not a socket is in the way, the directory belongs to
        another user, or the path is too long for AF_UNIX.
        """
        if (path is None) == (sock is None):
            raise TypeError("start() takes exactly one of a path and an already-listening sock=")
        if self._server is not None:
            raise RuntimeError("this ControlServer is already started")
        if sock is None:
            assert path is not None
            sock = self._bind(Path(path))
        elif sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError(f"the control socket must be AF_UNIX SOCK_STREAM, not {sock!r}")
        elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(128)
        self._server = await asyncio.start_unix_server(self._on_connect, sock=sock)
        log.info("control socket listening on %s", self.path or sock.getsockname() or "(fd)")

    async def close(self) -> None:
        """Stop listening, drop every client, and remove the socket file if we made it."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                # Only our own socket: a newer daemon may have replaced it meanwhile.
                if os.lstat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            self.path = None

    async def __aenter__(self) -> ControlServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _bind(self, path: Path) -> socket.socket:
        size = len(os.fsencode(path))
        if size > AF_UNIX_PATH_MAX:
            raise ControlSocketError(
                f"socket path {path} is {size} bytes; AF_UNIX allows {AF_UNIX_PATH_MAX}:"
                " choose a shorter --socket"
            )
        self._prepare_dir(path.parent)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlSocketError(
                    f"{path} exists and is not a socket: remove it or choose another --socket"
                )
            if _answers(path):
                raise ControlSocketError(
                    f"a daemon already answers at {path}: stop it first, or start this one"
                    " with another --instance or --socket"
                )
            log.info("removing the stale socket %s of a daemon that is gone", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, SOCKET_MODE)  # bind() applies the umask; set the mode exactly
            if self._chown_group:
                os.chown(path, -1, self.gid)
            sock.listen(128)
        except PermissionError as exc:
            sock.close()
            raise ControlSocketError(
                f"cannot set up {path}: {exc.strerror} (to give it group"
                f" {_group_name(self.gid)}, the daemon's user must be in that group)"
            ) from None
        except BaseException:
            sock.close()
            raise
        self.path = path
        self._inode = os.lstat(path).st_ino
        return sock

    def _prepare_dir(self, directory: Path) -> None:
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=DIR_MODE)
                os.chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask
                if self._chown_group:
                    os.chown(directory, -1, self.gid)
            st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise ControlSocketError(f"{directory} is not a directory; choose another --socket")
        if st.st_uid not in (0, self.uid):
            raise ControlSocketError(
                f"{directory} belongs to uid {st.st_uid}, neither root nor this daemon's"
                f" user ({self.uid}): its owner could swap the socket. Remove it, or choose"
                " another --socket"
            )

    # -- one connection ------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
            await self._close_gently(writer)
        except asyncio.CancelledError:
            writer.transport.abort()  # the server is closing: no goodbyes
        except Exception:
            log.exception("a control connection failed; the server carries on")
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        refusal = await self._refusal(peer)
        if refusal is not None:
            log.warning("refused a control connection from %s: %s", peer, refusal)
            await self._send(writer, encode_error(None, FORBIDDEN, refusal))
            return
        if not self._make_room():
            count = len(self._conns)
            log.warning("refused a control connection from %s: %d busy", peer, count)
            message = (
                f"the daemon is in the middle of {count} commands, its most at once;"
                " try again later"
            )
            await self._send(writer, encode_error(None, BUSY, message))
            return
        conn = _Conn(reader, asyncio.get_running_loop().time())
        self._conns.add(conn)
        try:
            await self._serve(reader, writer, peer, conn)
        finally:
            self._conns.discard(conn)

    def _make_room(self) -> bool:
        """Whether a new connection may be admitted, evicting the idlest one if need be."""
        staying = [c for c in self._conns if c.evicted is None]
        if len(staying) < self.max_clients:
            return True
        idle = [c for c in staying if c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        waited = asyncio.get_running_loop().time() - (oldest.idle_since or 0.0)
        log.info("closing the control connection idle longest (%.1f s) to make room", waited)
        oldest.evict(
            f"closed to make room for a new connection: this one waited {waited:.1f} s"
            f" for a request, the longest of the {len(staying)} the daemon serves at once"
        )
        return True

    async def _close_gently(self, writer: asyncio.StreamWriter) -> None:
        """Close after the last reply has left (abort() would drop it), within write_timeout."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self.write_timeout)
        except (TimeoutError, OSError):
            writer.transport.abort()

    async def _refusal(self, peer: Peer) -> str | None:
        """Why ``peer`` may not use the daemon, or None when it may."""
        if peer.uid in (0, self.uid) or peer.gid == self.gid:
            return None
        if peer.groups is not None and self.gid in peer.groups:
            return None
        loop = asyncio.get_running_loop()
        if self.gid in await loop.run_in_executor(None, user_groups, peer.uid, peer.gid):
            return None
        return (
            f"uid {peer.uid} may not control this daemon: it answers root, uid {self.uid}"
            f" and the group {_group_name(self.gid)!r}. Ask for that group (then log in"
            " again), or use sudo"
        )

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        conn: _Conn,
    ) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        scanned = 0  # bytes of buf known to hold no newline
        deadline = loop.time() + self.idle_timeout
        while True:
            newline = buf.find(b"\n", scanned)
            if newline < 0:
                scanned = len(buf)
                if len(buf) > self.max_line:
                    await self._too_large(writer, peer)
                    return
                remaining = deadline - loop.time()
                chunk = b""
                try:
                    if remaining > 0:
                        chunk = await asyncio.wait_for(reader.read(65536), remaining)
                    else:
                        raise TimeoutError
                except TimeoutError:
                    log.info("closing an idle control connection from %s", peer)
                    message = f"no complete request within {self.idle_timeout:g} s; closing"
                    await self._send(writer, encode_error(None, TIMEOUT, message))
                    return
                except ConnectionError:
                    return
                if conn.evicted is not None:
                    await self._send(writer, encode_error(None, TIMEOUT, conn.evicted))
                    return
                if not chunk:  # EOF: a last line without its newline still counts
                    if buf.strip():
                        await self._send(writer, await self._answer(bytes(buf)))
                    return
                buf += chunk
                continue
            line = bytes(buf[:newline])
            del buf[: newline + 1]
            scanned = 0
            if len(line) > self.max_line:
                await self._too_large(writer, peer)
                return
            # Blank lines are skipped: harmless, a human with nc pressed Enter.
            if line.strip():
                conn.idle_since = None  # in a command: not to be closed to make room
                if not await self._send(writer, await self._answer(line)):
                    return
                conn.idle_since = loop.time()
            deadline = loop.time() + self.idle_timeout

    async def _too_large(self, writer: asyncio.StreamWriter, peer: Peer) -> None:
        log.warning(
            "closing a control connection from %s: a line over %d bytes", peer, self.max_line
        )
        message = f"a request line is at most {self.max_line} bytes; closing"
        await self._send(writer, encode_error(None, TOO_LARGE, message))

    async def _answer(self, line: bytes) -> bytes:
        """The reply line to one request line; never raises (but for cancellation)."""
        try:
            request = decode_request(line)
        except BadRequest as exc:
            return encode_error(exc.request_id, exc.code, exc.message)
        if request.cmd == "hello":
            result: Any = self._hello()
        else:
            handler = self.commands.get(request.cmd)
            if handler is None:
                known = ", ".join(sorted([*self.commands, "hello"]))
                message = f"unknown command {request.cmd!r}; this daemon knows: {known}"
                return encode_error(request.id, UNKNOWN_COMMAND, message)
            try:
                result = await handler(request.args)
            except CommandError as exc:
                return self._error_reply(request.id, exc.code, exc.message)
            except Exception as exc:
                log.exception("control command %r failed", request.cmd)
                message = (
                    f"{request.cmd!r} failed: {type(exc).__name__}: {exc}"
                    " (a bug in the daemon; its log has the traceback)"
                )
                return encode_error(request.id, INTERNAL, message)
        try:
            reply = encode_result(request.id, result)
        except (TypeError, ValueError) as exc:
            log.error("the result of %r is not JSON: %s", request.cmd, exc)
            return encode_error(request.id, INTERNAL, f"the result of {request.cmd!r} is not JSON")
        if len(reply) > self.max_line + 1:
            log.error("the result of %r is %d bytes, over the line limit", request.cmd, len(reply))
            message = f"the result of {request.cmd!r} is over {self.max_line} bytes"
            return encode_error(request.id, INTERNAL, message)
        return reply

    def _error_reply(self, request_id: Any, code: str, message: str) -> bytes:
        """An error reply that fits one line: a long message keeps its start, with a note."""
        reply = encode_error(request_id, code, message)
        if len(reply) <= self.max_line + 1:
            return reply
        note = " … (cut to fit one reply)"
        keep = len(message)
        while len(reply) > self.max_line + 1 and keep > 0:
            # non-ASCII takes up to 12 bytes (\\uXXXX pairs): shrink in proportion, then again
            keep = min(keep - 1, keep * (self.max_line - 1024) // len(reply))
            reply = encode_error(request_id, code, message[: max(keep, 0)] + note)
        return reply

    def _hello(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "version": self.version,
            "instance": self.instance,
            "commands": sorted([*self.commands, "hello"]),
        }

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Write one line; False (and the connection dropped) if the client is gone or stuck."""
        if writer.is_closing():
            return False
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except TimeoutError:
            log.warning(
                "dropping a control client that has not read its reply in %g s",
                self.write_timeout,
            )
            writer.transport.abort()
            return False
        except (ConnectionError, OSError):
            return False
        return True


def _answers(path: Path) -> bool:
    """Whether something accepts connections at ``path`` (a live daemon, presumably)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:  # no permission, or a full backlog: someone is there
        return True
    finally:
        probe.close()
    return True


def _package_version() -> str:
    try:
        return importlib.metadata.version("pipelined")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
