"""Secrets stay secret in every spelling, on every path one could leave the daemon by.

A block whose secret parameters (by name, and a URL's password) it says everywhere it
can: none of them may show in its command line, its environment, the daemon's log,
status, the graph, the page's JSON and /metrics, its crash tail, or an error message;
and the page's own token never reaches a worker's environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.daemon import RunningDaemon, free_port
from harness.graphs import BLOCKS, counter, graph
from test_web_support import get

from pipelined.ctl.protocol import CommandError

HTTP_TOKEN = "Ht-page-token-leak"
SECRETS = {
    "password": "Pw-0ne-leak",
    "secret_key": "Sk-two-leak",
    "pwd": "Pd-three-leak",
    "passphrase": "Pp four leak",
    "auth": "Au-five-leak",
    "credentials": "Cr-six-leak",
    "apiKey": "Ak-seven-leak",
    "token": "Tk-eight-leak",
}
URL_PASSWORD = "Ur%23nine%2Fleak"  # "Ur#nine/leak", percent-encoded as it must be
SPELLINGS = [*SECRETS.values(), URL_PASSWORD, "Ur#nine/leak", HTTP_TOKEN]


def leaky(crash_when: Path, **changes: object) -> str:
    params = {**SECRETS, "url": f"rtsp://admin:{URL_PASSWORD}@127.0.0.1:9/s"}
    params.update(changes)
    lines = [f"{k} = {json.dumps(v)}" for k, v in params.items()]
    return (
        f'[blocks.leaky]\ntype = "{BLOCKS}:Leaky"\nrestart = "never"\n'
        f'crash_when = "{crash_when}"\n' + "\n".join(lines) + "\n"
    )


def assert_hidden(where: str, text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    shown = [s for s in SPELLINGS if s in text]
    assert not shown, f"{where} shows {shown}"


def test_no_path_out_of_the_daemon_shows_a_secret(tmp_path):
    crash = tmp_path / "crash-now"
    port = free_port()
    d = RunningDaemon(graph(counter(), leaky(crash)), http=f"127.0.0.1:{port}")
    d.env["PIPELINED_HTTP_TOKEN"] = HTTP_TOKEN
    d.start()
    try:
        running = d.until(
            lambda: (b := d.block("leaky"))["state"] == "RUNNING" and b["detail"] and b,
            60,
            "leaky RUNNING with its detail",
        )
        pid = running["pid"]
        assert "***" in running["reason"] and "***" in running["detail"]
        assert_hidden("the worker's command line", Path(f"/proc/{pid}/cmdline").read_bytes())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert_hidden("the worker's environment", environ)
        assert b"PIPELINED_HTTP_TOKEN" not in environ
        assert_hidden("status", json.dumps(d.call("status")))
        assert_hidden("graph", json.dumps(d.call("graph")))
        bearer = {"Authorization": f"Bearer {HTTP_TOKEN}"}
        url = f"http://127.0.0.1:{port}"
        for path in ("/api/status", "/api/graph", "/metrics", "/"):
            status, _, body = get(url + path, bearer)
            assert status == 200, (path, status)
            assert_hidden(path, body)

        crash.touch()
        exited = d.wait_state("leaky", "EXITED", timeout=60)
        tail = exited["last_exit"]["stderr_tail"]
        assert "dying with" in tail and "***" in tail
        assert_hidden("the crash tail", tail)
        log = d.log_text()
        assert "my secrets: " in log
        assert_hidden("the daemon's log", log)

        d.graph.write_text(graph(counter(), leaky(crash, token=123456)))
        with pytest.raises(CommandError) as wrong_type:
            d.call("reload")
        assert "parameter 'token' must be a string, not int ***" in wrong_type.value.message
        assert "123456" not in wrong_type.value.message
        d.graph.write_text(graph(counter(), leaky(crash, url="rtsp://admin:Zz#ten leak@cam/")))
        with pytest.raises(CommandError) as bad_url:
            d.call("reload")
        assert "rtsp://admin:***@cam/" in bad_url.value.message
        assert (
            "percent-encoded" in bad_url.value.message and "ten leak" not in bad_url.value.message
        )
        assert_hidden("the daemon's log", d.log_text())
    finally:
        d.close()


def test_check_prints_no_secret(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(graph(counter(), leaky(tmp_path / "x")))
    shown = subprocess.run(
        [sys.executable, "-m", "pipelined.daemon.main", "--check", str(good)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert (
        "password = '***'" in shown.stdout
        and "url = 'rtsp://admin:***@127.0.0.1:9/s'" in shown.stdout
    )
    assert_hidden("--check", shown.stdout + shown.stderr)

    bad = tmp_path / "bad.toml"
    bad.write_text(graph(counter(), leaky(tmp_path / "x", token=123456, url="http://u:a#b?c@h/")))
    refused = subprocess.run(
        [sys.executable, "-m", "pipelined.daemon.main", "--check", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 78
    assert "123456" not in refused.stderr and "a#b?c" not in refused.stderr
    assert "'http://u:***@h/'" in refused.stderr
