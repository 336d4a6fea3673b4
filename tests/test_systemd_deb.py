"""The Debian package on a real systemd: install, start, watchdog, reload, stop, purge.

The .deb is built once for the module with packaging/build-deb (Debian's own
dpkg-buildpackage and debhelper; pip fetches the venv's dependencies), or taken from
$PIPELINED_TEST_DEB when set (a quicker loop while working on the tests). One guest
systemd (tests/sdsandbox.py) boots for the module, gets the package with ``dpkg -i``,
and is powered off and removed at the end, also when a test fails. The tests run in
file order on that one guest: install, start, use, reload, watchdog, the web page, stop,
socket activation, a named instance, upgrade, a removal the scripts may not stop, remove,
purge; lintian (on the host) runs beside them and is read last.

What the guest cannot show: its cgroups have no controllers, so DeviceAllow= and the
device policy are accepted but not enforced; and it shares this machine's packages, so
the .deb's Depends are met by whatever is installed here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdsandbox import Sandbox, unavailable

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "packaging" / "build-deb"
UNIT = "pipelined.service"
STATE = "/var/lib/pipelined/main"  # instance main's state directory: its recordings are here
TOKEN = "/etc/pipelined/http-token"
BLOCKS = ["camera", "red", "edges", "recorder"]  # packaging/graph.toml, in graph order
MESSAGE_ID_STARTED = "39f53479d3a045ac8e11786248231fbf"  # systemd: "Started <unit>"

pytestmark = pytest.mark.timeout(600)


def _build_tools_missing() -> str | None:
    for tool, package in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper")):
        if shutil.which(tool) is None:
            return f"building the .deb needs {tool} (apt-get install {package})"
    probe = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], check=False)
    if probe.returncode != 0:
        return "building the .deb needs Debian's python3-venv"
    return None


@pytest.fixture(scope="module")
def debs() -> Iterator[tuple[Path, Path]]:
    """(the package, the same package as a newer version) in one host directory."""
    reason = unavailable()
    if reason:
        pytest.skip(f"no systemd sandbox here: {reason}")
    out = Path(tempfile.mkdtemp(prefix="pldeb", dir="/tmp"))
    try:
        given = os.environ.get("PIPELINED_TEST_DEB")
        if given:
            deb = out / Path(given).name
            shutil.copy(given, deb)
        else:
            reason = _build_tools_missing()
            if reason:
                pytest.skip(reason)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
            build = subprocess.run(
                [str(BUILD_DEB), str(out)], env=env, capture_output=True, text=True, timeout=900
            )
            if build.returncode != 0:
                pytest.fail(f"packaging/build-deb failed:\n{(build.stdout + build.stderr)[-4000:]}")
            (deb,) = out.glob("pipelined_*.deb")
        yield deb, _newer_version(deb, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _newer_version(deb: Path, out: Path) -> Path:
    """The same package with a higher version, repacked with dpkg-deb: an upgrade to test."""
    tree = out / "repack"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (.+)$", text, re.M)
    assert version is not None
    control.write_text(text.replace(version.group(0), f"Version: {version.group(1)}+upgrade1"))
    newer = out / "upgrade" / deb.name
    newer.parent.mkdir()
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(newer)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return newer


LINTIAN_TEST = "test_lintian_finds_no_error_and_no_warning"


@pytest.fixture(scope="module", autouse=True)
def lintian(
    debs: tuple[Path, Path], request: pytest.FixtureRequest
) -> Iterator[subprocess.Popen[str] | None]:
    """lintian on the package, started as soon as it is built so that it runs beside the
    guest's tests (a minute and a half on its own); its verdict is read by the last test.
    Not started when that test is not selected (the arm64 check runs it on the host)."""
    selected = any(item.name == LINTIAN_TEST for item in request.session.items)
    if not selected or shutil.which("lintian") is None:
        yield None
        return
    deb, _ = debs
    run = subprocess.Popen(
        ["lintian", "--fail-on", "error,warning", str(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()


class Guest(Sandbox):
    installed = ""  # what dpkg -i printed


@pytest.fixture(scope="module")
def guest(debs: tuple[Path, Path]) -> Iterator[Guest]:
    """A booted guest with the package installed and two users: alice (in the pipelined
    group) and bob (not)."""
    deb, _ = debs
    box = Guest(binds=[deb.parent])
    try:
        box.up()
        # Docker's policy-rc.d (this machine's image) forbids maintainer scripts to start
        # or restart services; a box has none, and the upgrade test needs the restart.
        box.run("rm", "-f", "/usr/sbin/policy-rc.d")
        box.installed = box.run("dpkg", "-i", str(deb), timeout=300).stdout
        box.run("useradd", "--no-create-home", "--groups", "pipelined", "alice")
        box.run("useradd", "--no-create-home", "bob")
        yield box
    finally:
        box.down()


GET = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    print(urllib.request.urlopen(request, timeout=10).status, end="")
except urllib.error.HTTPError as exc:
    print(exc.code, end="")
except OSError:
    print("000", end="")
"""


def show(box: Sandbox, unit: str = UNIT) -> dict[str, str]:
    out = box.run("systemctl", "show", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status(box: Sandbox, user: str | None = None) -> dict[str, Any]:
    return json.loads(box.run("pipectl", "status", "--json", user=user).stdout)


def pids(box: Sandbox) -> dict[str, int]:
    return {b["name"]: b["pid"] for b in status(box)["blocks"]}


def journal(box: Sandbox, *matches: str) -> list[dict[str, Any]]:
    out = box.run("journalctl", "--no-pager", "-o", "json", *matches).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def shm(box: Sandbox, unit: str = UNIT) -> list[str]:
    """What the unit's daemon has in /dev/shm: its own tmpfs (TemporaryFileSystem=),
    seen through its /proc/PID/root; [] when it is not running. The box's own /dev/shm
    never holds anything of pipelined's."""
    assert host_shm(box) == []
    pid = show(box, unit)["MainPID"]
    if pid == "0":
        return []
    listing = box.run("ls", "-A", f"/proc/{pid}/root/dev/shm", check=False)
    return sorted(listing.stdout.split()) if listing.returncode == 0 else []


def unit_journal(box: Sandbox, unit: str = UNIT) -> str:
    """The unit's last journal lines: what a failed start says about itself."""
    return box.run("journalctl", "--no-pager", "-n", "60", "-u", unit, check=False).stdout


def host_shm(box: Sandbox) -> list[str]:
    return sorted(e for e in box.run("ls", "-A", "/dev/shm").stdout.split() if "pipelined" in e)


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def all_running(box: Sandbox) -> dict[str, Any] | None:
    result = box.run("pipectl", "status", "--json", check=False)
    if result.returncode != 0:
        return None
    s = json.loads(result.stdout)
    return s if [b["state"] for b in s["blocks"]] == ["RUNNING"] * len(BLOCKS) else None


# -- the tests, in the order they run on the one guest -----------------------------------


def test_install_creates_user_enables_without_starting_and_units_verify(guest: Guest) -> None:
    """dpkg -i: user in video, /run/pipelined for the group, service enabled but not
    started, the venv on Debian's python3, and `systemd-analyze verify` silent."""
    assert "Setting up pipelined" in guest.installed
    assert guest.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert guest.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "inactive"
    groups = guest.run("id", "-nG", "pipelined").stdout.split()
    assert set(groups) == {"pipelined", "video"}
    assert guest.run("stat", "-c", "%U:%G %a", "/run/pipelined").stdout.split() == [
        "pipelined:pipelined",
        "750",
    ]
    conffiles = guest.run("dpkg-query", "-W", "-f=${Conffiles}", "pipelined").stdout
    assert "/etc/pipelined/graph.toml" in conffiles
    python = guest.run("readlink", "-f", "/usr/lib/pipelined/bin/python").stdout.strip()
    assert python.startswith("/usr/bin/python3")
    shebang = guest.run("head", "-n1", "/usr/lib/pipelined/bin/pipectl").stdout.strip()
    assert shebang.startswith("#!/usr/lib/pipelined/bin/python")
    # The README's links to the contract resolve in the installed documentation.
    docs = "/usr/share/doc/pipelined"
    guest.run("test", "-f", f"{docs}/README.md", "-a", "-f", f"{docs}/docs/design.md")
    guest.run("test", "-f", f"{docs}/docs/architecture.md")
    # The man pages, and the units point at them.
    for page, section in (("pipelined", 8), ("pipectl", 1), ("pipelined.graph", 5)):
        found = guest.run("man", "-w", str(section), page).stdout.strip()
        assert found == f"/usr/share/man/man{section}/{page}.{section}.gz", found
    documentation = [d.strip('"') for d in show(guest)["Documentation"].split()]
    assert documentation[:3] == ["man:pipelined(8)", "man:pipelined.graph(5)", "man:pipectl(1)"]
    # The page's token: made at install, root's alone; the options file, a conffile.
    owner_mode_size = guest.run("stat", "-c", "%U:%G %a %s", TOKEN).stdout.split()
    assert owner_mode_size == ["root:root", "600", "44"]  # 43 letters and digits, a newline
    assert "/etc/default/pipelined" in conffiles

    verify = guest.run(
        "systemd-analyze",
        "verify",
        UNIT,
        "pipelined.socket",
        "pipelined@cam2.service",
        "pipelined@cam2.socket",
        check=False,
    )
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify

    security = guest.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    score = re.search(r"Overall exposure level for pipelined.service: ([\d.]+) (\w+)", security)
    assert score is not None, security[-500:]
    print(f"systemd-analyze security {UNIT}: {score.group(1)} {score.group(2)}")
    assert float(score.group(1)) <= 2.0, security


def test_start_is_active_only_after_ready_and_status_shows_the_line(guest: Sandbox) -> None:
    """systemd keeps the unit activating (daemon up, blocks starting) until READY=1, which
    comes once every block runs; `systemctl status` then shows the daemon's STATUS=.
    A neighbour's names in the box's /dev/shm change nothing: the unit has its own."""
    planted = ["/dev/shm/pipelined.main.aaaa.owner", "/dev/shm/sem.pipelined.main.aaaa.wire.x.r0"]
    for path in planted:
        guest.run("sh", "-c", f"printf garbage > {path}", user="bob")
    seen = guest.sh(
        f"systemctl start --no-block {UNIT}; for i in $(seq 5000); do"
        f" systemctl show -p ActiveState -p MainPID -p StatusText {UNIT} | tr '\\n' '|'; echo;"
        f" case $(systemctl is-active {UNIT}) in active|failed) break;; esac; done",
        timeout=120,
    ).stdout.splitlines()
    states = [dict(kv.split("=", 1) for kv in line.strip("|").split("|")) for line in seen]
    waiting = [s for s in states if s["ActiveState"] == "activating" and s["MainPID"] != "0"]
    # the daemon ran while the unit was not active yet
    assert waiting, f"{states[-3:]}\n{unit_journal(guest)}"
    running = all_running(guest)
    assert running is not None, (
        f"active before every block ran: {states[-1]}\n{unit_journal(guest)}"
    )

    invocation = show(guest)["InvocationID"]
    entries = journal(guest, "-u", UNIT)
    started = [
        e
        for e in entries
        if e.get("MESSAGE_ID") == MESSAGE_ID_STARTED and e.get("INVOCATION_ID") == invocation
    ]
    up = [
        e
        for e in entries
        if e.get("_SYSTEMD_INVOCATION_ID") == invocation and "-> RUNNING" in e["MESSAGE"]
    ]
    assert len(started) == 1 and {e["PIPELINED_BLOCK"] for e in up} == set(BLOCKS)
    at = int(started[0]["__MONOTONIC_TIMESTAMP"])
    assert all(int(e["__MONOTONIC_TIMESTAMP"]) < at for e in up)  # RUNNING, then "Started"

    line = re.compile(r'Status: "4 blocks: 4 running, 0 failed; camera (\d+) fps"')
    text = wait(
        lambda: (m := line.search(guest.run("systemctl", "status", UNIT).stdout)) and m,
        10,
        "the STATUS line with the camera's rate",
    )
    assert text is not None
    assert host_shm(guest) == sorted(p.rsplit("/", 1)[1] for p in planted)  # untouched
    guest.run("rm", *planted)
    run = running["run"]
    assert shm(guest) and all(f"pipelined.main.{run}." in name for name in shm(guest))
    # Logs name real places: the recorder's file by its full path.
    wait(
        lambda: any(
            f"recording to {STATE}/recordings/recorder-" in e["MESSAGE"]
            for e in journal(guest, "-u", UNIT, "PIPELINED_BLOCK=recorder")
        ),
        30,
        "the recorder's first file, named by its full path, in the journal",
    )


def test_pipectl_answers_the_group_and_refuses_others(guest: Sandbox) -> None:
    ok = guest.run("pipectl", "status", user="alice")
    assert re.search(r"^camera\s+camera\s+RUNNING", ok.stdout, re.M), ok.stdout
    refused = guest.run("pipectl", "status", user="bob", check=False)
    assert refused.returncode == 3 and "permission denied" in refused.stderr, refused


def test_journal_holds_each_blocks_start_with_its_fields(guest: Sandbox) -> None:
    """Every block's start is in `journalctl -u pipelined` with PIPELINED_BLOCK, the
    instance and the worker's pid; `pipectl logs` reads them back, and -f follows."""
    running = pids(guest)
    for block in BLOCKS:
        entries = journal(guest, "-u", UNIT, f"PIPELINED_BLOCK={block}")
        starts = [
            e for e in entries if re.match(rf"{block}: started \S+ as pid \d+$", e["MESSAGE"])
        ]
        assert starts, entries[-5:]
        last = starts[-1]
        assert last["PIPELINED_INSTANCE"] == "main" and last["_SYSTEMD_UNIT"] == UNIT
        assert last["PIPELINED_PID"] == str(running[block]) == last["MESSAGE"].split()[-1]
    logs = guest.run("pipectl", "logs", "camera").stdout
    assert f"camera: started camera as pid {running['camera']}" in logs

    guest.sh(
        "timeout 60 pipectl logs -f -n 0 camera >/tmp/follow.txt 2>&1 & echo $! >/tmp/follow.pid"
    )
    try:
        time.sleep(1)
        guest.run("pipectl", "restart", "camera")
        new = wait(lambda: (p := pids(guest)["camera"]) != running["camera"] and p, 30, "camera")
        follow = guest.path("/tmp/follow.txt")
        wait(lambda: f"started camera as pid {new}" in follow.read_text(), 15, "-f to follow")
    finally:
        guest.sh("kill $(cat /tmp/follow.pid) 2>/dev/null || true")
    wait(lambda: all_running(guest), 30, "every block RUNNING again")

    # alice may use pipectl (the pipelined group) but not read the system journal.
    refused = guest.run("pipectl", "logs", "camera", user="alice", check=False)
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert "you (alice) may not read the system journal" in refused.stderr, refused.stderr
    assert "systemd-journal group" in refused.stderr


def test_reload_restarts_only_the_changed_block(guest: Sandbox) -> None:
    """`systemctl reload` (ExecReload=pipectl reload) applies a new parameter to its block
    alone; a graph that does not load fails the reload and changes nothing."""
    before, main_pid, run = pids(guest), show(guest)["MainPID"], status(guest)["run"]
    guest.run(
        "sed",
        "-i",
        "s/^hsv_low = \\[0, 120, 70\\]/hsv_low = [0, 90, 50]/",
        "/etc/pipelined/graph.toml",
    )
    guest.run("systemctl", "reload", UNIT)
    after = pids(guest)
    assert after["red"] != before["red"]
    assert {b: after[b] for b in BLOCKS if b != "red"} == {
        b: before[b] for b in BLOCKS if b != "red"
    }
    assert show(guest)["MainPID"] == main_pid and status(guest)["run"] == run
    cmdline = guest.path(f"/proc/{after['red']}/cmdline").read_bytes()
    assert b'"hsv_low":[0,90,50]' in cmdline
    wait(lambda: all_running(guest), 30, "every block RUNNING after the reload")
    said = [e["MESSAGE"] for e in journal(guest, "-u", UNIT) if "reloaded" in e["MESSAGE"]]
    assert said[-1] == (
        "reloaded /etc/pipelined/graph.toml: restarted red (settings or wiring changed)"
    ), said

    guest.sh("echo '[blocks.broken]' >> /etc/pipelined/graph.toml")
    failed = guest.run("systemctl", "reload", UNIT, check=False)
    assert failed.returncode != 0
    assert pids(guest) == after and show(guest)["ActiveState"] == "active"
    guest.run("sed", "-i", "/^\\[blocks.broken\\]$/d", "/etc/pipelined/graph.toml")


def test_watchdog_restarts_a_stopped_daemon_on_a_clean_dev_shm(guest: Sandbox) -> None:
    """SIGSTOP the daemon: WATCHDOG=1 stops, systemd's watchdog aborts it, Restart= brings
    it back, the graph runs again and /dev/shm holds only the new run's objects."""
    unit = show(guest)
    old_pid, old_restarts, old_run = unit["MainPID"], int(unit["NRestarts"]), status(guest)["run"]
    guest.run("kill", "-STOP", old_pid)
    wait(
        lambda: (
            (u := show(guest))["NRestarts"] == str(old_restarts + 1)
            and u["ActiveState"] == "active"
            and u["MainPID"] != old_pid
        ),
        40,
        "the watchdog's restart",
    )
    messages = [e["MESSAGE"] for e in journal(guest, "-u", UNIT)]
    assert any("Watchdog timeout" in m for m in messages), messages[-20:]
    running = wait(lambda: all_running(guest), 60, "every block RUNNING again")
    new_run = running["run"]
    assert new_run != old_run
    objects = shm(guest)
    assert objects and all(f"pipelined.main.{new_run}." in name for name in objects), objects


def test_the_page_is_off_until_configured_and_needs_the_token(guest: Guest) -> None:
    """Off as installed; PIPELINED_HTTP in /etc/default/pipelined turns it on at the next
    start; the token is the credential from /etc/pipelined/http-token, which the
    service's own user cannot read, and a request without it gets 401."""
    url = "http://127.0.0.1:8080"

    def get(path: str, token: str | None = None) -> str:
        """The status code, "000" when nothing listens (as curl says it)."""
        return guest.run("/usr/lib/pipelined/bin/python", "-c", GET, url + path, token or "").stdout

    assert get("/api/status") == "000"
    token = guest.run("cat", TOKEN).stdout.strip()
    assert len(token) >= 40
    assert guest.run("cat", TOKEN, user="pipelined", check=False).returncode != 0
    default = guest.run("cat", "/etc/default/pipelined").stdout
    assert "#PIPELINED_HTTP=127.0.0.1:8080" in default
    guest.run("sed", "-i", "s/^#PIPELINED_HTTP=/PIPELINED_HTTP=/", "/etc/default/pipelined")
    try:
        guest.run("systemctl", "restart", UNIT, timeout=120)
        wait(lambda: get("/api/status") == "401", 30, "the page to answer, and refuse")
        assert get("/metrics") == "401" and get("/") == "401"
        assert get("/api/status", "wrong") == "401"
        assert get("/api/status", token) == "200" and get("/metrics", token) == "200"
        messages = [e["MESSAGE"] for e in journal(guest, "-u", UNIT, "-n", "200")]
        assert f"pipelined: page {url}/ (its token: the systemd credential http-token)," in (
            " ".join(messages)
        )
        assert not [m for m in messages if token in m]  # never printed
    finally:
        guest.run("sed", "-i", "s/^PIPELINED_HTTP=/#PIPELINED_HTTP=/", "/etc/default/pipelined")
    wait(lambda: all_running(guest), 60, "every block RUNNING after the restart")


def test_stop_leaves_no_worker_and_nothing_in_dev_shm(guest: Sandbox) -> None:
    guest.run("systemctl", "stop", UNIT)
    assert show(guest)["Result"] == "success"
    assert guest.run("pgrep", "-u", "pipelined", check=False).stdout == ""
    assert shm(guest) == []


def test_socket_activation_starts_the_daemon_on_first_pipectl(guest: Sandbox) -> None:
    guest.run("systemctl", "start", "pipelined.socket")
    assert guest.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "inactive"
    answer = guest.run("pipectl", "hello", user="alice", timeout=60)
    assert "main" in answer.stdout
    assert show(guest)["ActiveState"] in ("activating", "active")
    wait(lambda: show(guest)["ActiveState"] == "active", 60, "the activated daemon's READY=1")
    messages = [e["MESSAGE"] for e in journal(guest, "-u", UNIT, "-n", "100")]
    assert any(m.startswith("control socket from systemd") for m in messages), messages
    guest.run("systemctl", "stop", "pipelined.socket", UNIT)
    assert guest.run("pgrep", "-u", "pipelined", check=False).stdout == ""


def recordings_of(box: Sandbox, folder: str) -> list[str]:
    listing = box.run("ls", "-A", folder, check=False)
    return sorted(listing.stdout.split()) if listing.returncode == 0 else []


def test_named_instance_runs_its_own_graph_socket_and_state(guest: Guest) -> None:
    """pipelined@recordings (a name chosen to collide with the main instance's folder of
    that name) runs /etc/pipelined/recordings.toml, answers `pipectl --instance
    recordings`, records into its own /var/lib/pipelined/recordings and nothing into the
    main instance's, reloads, and stops clean."""
    name = "recordings"
    unit = f"pipelined@{name}.service"
    main_before = recordings_of(guest, f"{STATE}/recordings")
    assert main_before  # the main instance recorded before
    guest.run("cp", "/etc/pipelined/graph.toml", f"/etc/pipelined/{name}.toml")
    guest.run("systemctl", "start", unit, timeout=120)
    answer = json.loads(
        guest.run("pipectl", "--instance", name, "status", "--json", user="alice").stdout
    )
    assert answer["instance"] == name and answer["graph"] == f"/etc/pipelined/{name}.toml"
    assert [b["state"] for b in answer["blocks"]] == ["RUNNING"] * len(BLOCKS)
    wait(
        lambda: any(
            f.endswith(".mp4")
            for f in recordings_of(guest, f"/var/lib/pipelined/{name}/recordings")
        ),
        30,
        "the recorder's first file in the instance's own state directory",
    )
    guest.run("systemctl", "reload", unit)
    objects = shm(guest, unit)
    assert objects and all(f"pipelined.{name}.{answer['run']}." in o for o in objects)
    guest.run("systemctl", "stop", unit)
    assert shm(guest, unit) == []
    assert guest.run("pgrep", "-u", "pipelined", check=False).stdout == ""
    assert recordings_of(guest, f"{STATE}/recordings") == main_before  # untouched
    guest.run("rm", f"/etc/pipelined/{name}.toml")  # the admin's file: a purge would keep it


def test_upgrade_restarts_the_running_daemons(guest: Sandbox, debs: tuple[Path, Path]) -> None:
    _, newer = debs
    guest.run("systemctl", "start", UNIT, timeout=120)
    old_pid = show(guest)["MainPID"]
    guest.sh("echo '# kept across upgrades' >> /etc/pipelined/graph.toml")
    token = guest.run("cat", TOKEN).stdout
    guest.run("dpkg", "-i", str(newer), timeout=300)
    assert guest.run("dpkg-query", "-W", "-f=${Version}", "pipelined").stdout.endswith("+upgrade1")
    unit = show(guest)
    assert unit["ActiveState"] == "active" and unit["MainPID"] != old_pid
    assert "# kept across upgrades" in guest.run("cat", "/etc/pipelined/graph.toml").stdout
    assert guest.run("cat", TOKEN).stdout == token  # made once, kept
    wait(lambda: all_running(guest), 60, "every block RUNNING after the upgrade")


def test_a_removal_the_scripts_may_not_stop_deletes_nothing(guest: Sandbox) -> None:
    """Where policy-rc.d forbids the package's scripts to stop the service (an image's),
    the daemon would run on with its code deleted under it: the removal is refused, says
    what to stop, and the package, the daemon and its recordings carry on."""
    pid = show(guest)["MainPID"]
    guest.sh(
        "printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
    )
    try:
        refused = guest.run("dpkg", "-r", "pipelined", check=False, timeout=300)
    finally:
        guest.run("rm", "-f", "/usr/sbin/policy-rc.d")
    assert refused.returncode != 0, refused
    said = refused.stdout + refused.stderr
    assert "pipelined: not removed" in said and "systemctl stop 'pipelined*'" in said, said
    # Still installed ("ri": dpkg keeps the wish to remove it, for the next try).
    state = guest.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "pipelined").stdout
    assert state[1:2] == "i", state
    assert show(guest)["MainPID"] == pid and show(guest)["ActiveState"] == "active"
    guest.run("test", "-x", "/usr/lib/pipelined/bin/python")
    assert recordings_of(guest, f"{STATE}/recordings")
    assert all_running(guest) is not None


def test_remove_keeps_the_recordings_and_purge_removes_everything(guest: Sandbox) -> None:
    """remove stops every daemon and keeps what is the user's (recordings, graphs, the
    token, the options); purge removes it, but graph files the admin added."""
    recorded = recordings_of(guest, f"{STATE}/recordings")
    assert "latest.jpg" in recorded and any(f.endswith(".mp4") for f in recorded)
    guest.run("cp", "/etc/pipelined/graph.toml", "/etc/pipelined/mine.toml")
    removed = guest.run("dpkg", "-r", "pipelined", timeout=300)
    assert "kept /var/lib/pipelined (the recordings)" in removed.stdout + removed.stderr
    assert guest.run("pgrep", "-u", "pipelined", check=False).stdout == ""
    assert shm(guest) == []
    guest.run("test", "!", "-e", "/usr/lib/pipelined")
    assert set(recorded) <= set(recordings_of(guest, f"{STATE}/recordings"))
    guest.run("test", "-f", "/etc/pipelined/graph.toml", "-a", "-f", TOKEN)
    guest.run("test", "-f", "/etc/default/pipelined")

    guest.run("dpkg", "--purge", "pipelined", timeout=300)
    left = guest.run(
        "ls",
        "-d",
        "/usr/lib/pipelined",
        "/etc/pipelined/graph.toml",
        TOKEN,
        "/etc/default/pipelined",
        "/var/lib/pipelined",
        "/lib/systemd/system/pipelined.service",
        "/etc/systemd/system/multi-user.target.wants/pipelined.service",
        check=False,
    )
    assert left.stdout == "", left.stdout
    assert guest.run("ls", "/etc/pipelined").stdout.split() == ["mine.toml"]  # the admin's
    guest.run("rm", "-r", "/etc/pipelined")
    assert guest.run("systemctl", "cat", UNIT, check=False).returncode != 0
    # Debian policy: the system user stays, so a reused uid never owns old files.
    assert guest.run("id", "-u", "pipelined", check=False).returncode == 0


def test_lintian_finds_no_error_and_no_warning(lintian: subprocess.Popen[str] | None) -> None:
    """The built package, as Debian's checker sees it; what is overridden, and why, is in
    packaging/debian/pipelined.lintian-overrides (the venv's wheels, kept as built)."""
    if lintian is None:
        pytest.skip("lintian is not installed (apt-get install lintian)")
    output, _ = lintian.communicate(timeout=1200)
    found = [line for line in output.splitlines() if line[:2] in ("E:", "W:")]
    assert found == [] and lintian.returncode == 0, output
