"""The control socket's file, and who may use it.

Modes and group, a stale or squatted socket, one handed over by systemd; peer
credentials with a real second uid (65534) in a subprocess: pipectl itself, run by a
python that uid may execute, from a copy of pipelined.ctl and the name rules alone
(which also proves ctl needs nothing else of the daemon or the workers).
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from standin_control import (
    ServerThread,
    assert_alive,
    stand_in_commands,
)

import pipelined.ctl
import pipelined.workers
from pipelined.ctl.protocol import (
    FORBIDDEN,
)
from pipelined.daemon.control import ControlServer, ControlSocketError, Peer

NOBODY = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to run a client as another uid")

# -- the socket file ---------------------------------------------------------------------


def test_socket_and_directory_modes_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "d" / "main.sock"
    gid = _unused_gid() if ROOT else os.getegid()
    srv = ServerThread(path, group=gid)
    try:
        st_sock, st_dir = path.stat(), path.parent.stat()
        assert oct(st_sock.st_mode & 0o777) == oct(0o660) and st_sock.st_gid == gid
        assert oct(st_dir.st_mode & 0o777) == oct(0o750) and st_dir.st_gid == gid
    finally:
        srv.stop()
    assert not path.exists()


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "main.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: a daemon killed with -9
    srv = ServerThread(path)
    try:
        assert_alive(path)
        second = ControlServer(stand_in_commands())
        with pytest.raises(ControlSocketError, match="already answers"):
            asyncio.run(second.start(path))
        assert_alive(path)
    finally:
        srv.stop()
    path.write_text("not a socket")
    with pytest.raises(ControlSocketError, match="not a socket"):
        asyncio.run(ControlServer(stand_in_commands()).start(path))
    with pytest.raises(ControlSocketError, match="107"):
        asyncio.run(ControlServer(stand_in_commands()).start(tmp_path / ("x" * 120)))


@needs_root
def test_socket_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    squat = tmp_path / "squat"
    squat.mkdir()
    os.chown(squat, NOBODY, NOBODY)
    with pytest.raises(ControlSocketError, match="swap the socket"):
        asyncio.run(ControlServer(stand_in_commands()).start(squat / "main.sock"))


def test_start_on_a_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "act.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    srv = ServerThread(sock=listener)
    try:
        assert_alive(path)
    finally:
        srv.stop()
    assert path.exists()  # systemd owns a socket it handed over; we leave it alone
    with pytest.raises(TypeError):
        asyncio.run(ControlServer({}).start())
    with pytest.raises(ValueError, match="hello"):
        ControlServer({"hello": stand_in_commands()["echo"]})


# -- peer credentials, with a real second uid ---------------------------------------------


def _unused_gid() -> int:
    gid = 4242
    while True:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
        gid += 1


@pytest.fixture(scope="module")
def other_uid_env() -> Any:
    """A directory another uid can reach, with a copy of pipelined.ctl and a python for it."""
    if not ROOT:
        pytest.skip("needs root to run a client as another uid")
    base = Path(tempfile.mkdtemp(prefix="pc", dir="/tmp"))
    os.chmod(base, 0o755)
    pkg = base / "lib" / "pipelined"
    shutil.copytree(
        Path(pipelined.ctl.__file__).parent,
        pkg / "ctl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (pkg / "__init__.py").write_text("")
    # Of the workers, pipectl needs the name rules alone (plain Python, no posix_ipc).
    (pkg / "workers" / "ipc").mkdir(parents=True)
    for part in ("workers/__init__.py", "workers/ipc/__init__.py", "workers/ipc/names.py"):
        shutil.copy(Path(pipelined.workers.__file__).parent.parent / part, pkg / part)
    for root, dirs, files in os.walk(base / "lib"):
        for name in dirs + files:
            os.chmod(Path(root) / name, 0o755)
    env = {"PYTHONPATH": str(base / "lib"), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    for python in (sys.executable, "/usr/bin/python3.11", "/usr/bin/python3"):
        try:
            ok = subprocess.run(
                [python, "-c", "import sys, pipelined.ctl.main; assert sys.version_info >= (3,11)"],
                user=NOBODY, group=NOBODY, extra_groups=[], env=env, cwd="/",
                capture_output=True, timeout=20,
            ).returncode == 0  # fmt: skip
        except OSError:
            ok = False
        if ok:
            break
    else:
        shutil.rmtree(base)
        pytest.skip("no python that uid 65534 may run")
    yield python, base, env
    shutil.rmtree(base)


def _pipectl_as(
    env_info: Any, path: Path, uid: int, gid: int, extra: list[int], *verb: str
) -> subprocess.CompletedProcess[str]:
    python, _, env = env_info
    return subprocess.run(
        [python, "-m", "pipelined.ctl.main", "--socket", str(path), *verb],
        user=uid, group=gid, extra_groups=extra, env=env, cwd="/",
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


@needs_root
def test_peer_credentials(other_uid_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, base, _ = other_uid_env
    gid = _unused_gid()
    path = base / "s" / "main.sock"
    srv = ServerThread(path, group=gid)
    try:
        # In the daemon's group as a supplementary group only: allowed.
        done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [gid], "status")
        assert done.returncode == 0, done.stderr
        assert "camera" in done.stdout and "RUNNING" in done.stdout
        # Not in the group: the 0660 socket in its 0750 directory keeps it out already.
        done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [], "status")
        assert done.returncode == 3 and "permission denied" in done.stderr
        # A socket anyone may open (systemd's SocketMode=0666, say): the peer check refuses.
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o666)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipelined.daemon.control"):
            done = _pipectl_as(other_uid_env, path, NOBODY, NOBODY, [], "status")
        assert done.returncode == 1, done.stderr
        assert FORBIDDEN in done.stderr and "may not control" in done.stderr
        assert any(f"uid {NOBODY}" in r.getMessage() for r in caplog.records)
        done = _pipectl_as(other_uid_env, path, NOBODY, gid, [], "status")  # primary group
        assert done.returncode == 0, done.stderr
        assert_alive(path)
    finally:
        srv.stop()


def _database_member() -> tuple[pwd.struct_passwd, int] | None:
    """A user that /etc/group lists in a group other than its own primary one."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid not in (0, NOBODY) and user.pw_gid != group.gr_gid:
                return user, group.gr_gid
    return None


@needs_root
def test_group_membership_from_the_user_database(other_uid_env: Any, tmp_path: Path) -> None:
    member = _database_member()
    if member is None:
        pytest.skip("no user in /etc/group is a member of a secondary group")
    user, gid = member
    _, base, _ = other_uid_env
    path = base / "db" / "main.sock"
    srv = ServerThread(path, group=gid)
    try:
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o666)
        # The process holds no supplementary groups; the database says it is a member.
        done = _pipectl_as(other_uid_env, path, user.pw_uid, user.pw_gid, [], "hello")
        assert done.returncode == 0, done.stderr
        refusal = srv.run(srv.server._refusal(Peer(1, NOBODY, NOBODY, frozenset())))
        assert refusal is not None and "may not control" in refusal
    finally:
        srv.stop()
