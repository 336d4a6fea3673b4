"""How the client finds the daemon, and what it says when it cannot talk to it: the
socket path rule, no daemon, a stale socket, a daemon that hung up first.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelined.ctl.client import Client
from pipelined.ctl.main import main
from pipelined.ctl.protocol import (
    FORBIDDEN,
    CommandError,
    encode_error,
    places_looked,
    socket_path,
)


def test_socket_path_rule(tmp_path: Path) -> None:
    system = tmp_path / "run-pipelined"
    none = {"environ": {}, "system_dir": system}
    uid = os.getuid()
    assert socket_path("main", "/x/y.sock", **none) == Path("/x/y.sock")
    env = {"PIPELINED_SOCKET": "/e.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert socket_path("main", "/x.sock", environ=env, system_dir=system) == Path("/x.sock")
    assert socket_path("main", environ=env, system_dir=system) == Path("/e.sock")
    env.pop("PIPELINED_SOCKET")
    assert socket_path("cam2", environ=env, system_dir=system) == Path(
        "/run/user/7/pipelined/cam2.sock"
    )
    assert socket_path("main", **none) == Path(f"/tmp/pipelined-{uid}/main.sock")
    system.mkdir()
    assert socket_path("cam2", environ=env, system_dir=system) == system / "cam2.sock"
    looked = places_looked("main", environ={}, system_dir=tmp_path / "nope")
    assert [p.path is None for p in looked] == [True, True, True, True, False]
    for bad in ("", "Main", "-x", "a" * 33, "a.b", "a/b"):
        with pytest.raises(ValueError, match="instance name"):
            socket_path(bad, **none)


def test_client_reads_why_the_daemon_hung_up(tmp_path: Path) -> None:
    """A refused client learns why even if the daemon closed before the request went out."""
    path = tmp_path / "bye.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.sendall(encode_error(None, FORBIDDEN, "uid 65534 may not control this daemon"))
        conn.close()

    thread = threading.Thread(target=refuse)
    thread.start()
    with Client(path, timeout=5) as daemon:
        daemon.connect()
        thread.join(5)
        time.sleep(0.05)  # the daemon has hung up before we send anything
        with pytest.raises(CommandError) as info:
            daemon.call("status")
    assert info.value.code == FORBIDDEN
    listener.close()


def test_no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    missing = tmp_path / "none.sock"
    assert main(["--socket", str(missing), "status"]) == 3
    err = capsys.readouterr().err
    assert str(missing) in err and "no such socket" in err
    assert f"pipelined --socket {missing}" in err and "systemctl start pipelined" in err
    # A stale socket (a killed daemon): found, but nothing listens.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    monkeypatch.setenv("PIPELINED_SOCKET", str(tmp_path / "stale.sock"))
    assert main(["status"]) == 3
    assert "nothing listens" in capsys.readouterr().err
    # By instance: every step of the rule is listed.
    monkeypatch.delenv("PIPELINED_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert main(["--instance", "cam2", "wires"]) == 3
    err = capsys.readouterr().err
    if not Path("/run/pipelined").is_dir():
        assert str(tmp_path / "pipelined" / "cam2.sock") in err
        assert re.search(r"\$PIPELINED_SOCKET +not set", err)
        assert "pipelined --instance cam2" in err
