"""Another user's files in /dev/shm change nothing: runs, tokens, foreign entries.

Any local user may create ``/dev/shm/pipelined.<instance>.…``. The daemon must start
whatever is there, never touch what is not its own (and say so once), and always remove
all of its own. The tests that plant entries as a real second uid (65534) need root.
"""

from __future__ import annotations

import json
import logging
import os
import site
import subprocess
import sys
import textwrap

import pytest
from harness.daemon import RunningDaemon
from harness.graphs import counter, graph

from pipelined.daemon import runs
from pipelined.daemon.graph import parse_graph
from pipelined.daemon.supervisor import RunError, Supervisor
from pipelined.workers.ipc.liveness import ProcessIdentity
from pipelined.workers.ipc.names import RUN_RE, SHM_DIR, RunNames, new_run_token
from pipelined.workers.ipc.segment import NameTaken, Segment, run_entries, unlink_run

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting as another uid needs root")


def plant(path: str, uid: int = NOBODY) -> None:
    """Create ``path`` in /dev/shm as ``uid``, mode 0600, as any local user can."""
    subprocess.run(
        ["/bin/sh", "-c", f"umask 077; printf 'not yours' > {path}"],
        user=uid, group=uid, extra_groups=[], check=True, timeout=30,
    )  # fmt: skip
    assert os.stat(path).st_uid == uid


def python_for(uid: int) -> list[str]:
    """A command line that runs Python code as ``uid`` with this pipelined importable.

    This interpreter may live where another uid cannot reach it (under /root); Debian's
    own then runs with this environment's packages added.
    """
    here = site.getsitepackages()[0]
    boot = f"import site; site.addsitedir({here!r}); "
    for python in (sys.executable, "/usr/bin/python3.11"):
        try:
            ok = subprocess.run(
                [python, "-c", boot + "import pipelined.daemon.runs, posix_ipc"],
                user=uid, group=uid, extra_groups=[], cwd="/", capture_output=True, timeout=60,
            ).returncode == 0  # fmt: skip
        except OSError:
            ok = False
        if ok:
            return [python, "-c", boot]
    pytest.skip(f"no python that uid {uid} may run")


def test_run_tokens_are_unguessable():
    tokens = {new_run_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert RUN_RE.match(token) and len(token) == 16  # 16 of a-z0-9: over 80 bits


def test_a_run_with_our_pid_but_another_start_time_is_dead():
    """After a reboot (or in a new pid namespace) a dead daemon's pid may be ours now."""
    names = RunNames("t" + new_run_token()[:8], new_run_token())  # its own instance
    me = ProcessIdentity.me()
    owner = Segment.create(names.owner(), 16)
    owner.mm[:16] = me.pid.to_bytes(8, "little") + (me.start_time - 1).to_bytes(8, "little")
    owner.close()
    assert not runs.owner_alive(names)
    assert runs.remove_dead_runs(names.instance) == [names.owner()[1:]]
    runs.claim(names)  # the same pid and start time: this very process
    try:
        assert runs.owner_alive(names)
    finally:
        unlink_run(names)


def test_a_taken_name_makes_the_supervisor_try_a_new_token(caplog):
    instance = "t" + new_run_token()[:8]
    taken = RunNames(instance, new_run_token())
    runs.claim(taken)  # a live run (this process) that holds the name
    squatter = Segment.create(taken.wire("count"), 64)
    tokens = iter([taken.run, new_run_token()])
    supervisor = Supervisor(
        parse_graph(counter(), "t.toml"), instance, new_token=lambda: next(tokens)
    )
    try:
        with caplog.at_level(logging.WARNING, "pipelined"):
            supervisor.open()
        assert supervisor.names.run != taken.run
        assert run_entries(supervisor.names)  # the new run is there, whole
        assert run_entries(taken) == [taken.owner()[1:], taken.wire("count")[1:]]  # untouched
        assert "exists already" in caplog.text and "another run token" in caplog.text
    finally:
        unlink_run(supervisor.names)
        unlink_run(taken)
        squatter.close()


def test_names_taken_at_every_try_end_in_a_clear_error():
    instance = "t" + new_run_token()[:8]
    taken = RunNames(instance, new_run_token())
    runs.claim(taken)  # a live run with that token
    supervisor = Supervisor(parse_graph(counter(), "t.toml"), instance, new_token=lambda: taken.run)
    try:
        with pytest.raises(RunError, match="exists already"):
            supervisor.open()
        assert run_entries(taken) == [taken.owner()[1:]]
    finally:
        unlink_run(taken)


def test_segment_create_says_who_holds_a_taken_name(names):
    first = Segment.create(names.wire("x"), 64)
    try:
        with pytest.raises(NameTaken, match=f"uid {os.geteuid()}"):
            Segment.create(names.wire("x"), 64)
    finally:
        first.unlink()
        first.close()


@needs_root
def test_foreign_entries_never_stop_a_daemon_and_are_never_touched():
    d = RunningDaemon(graph(counter()))
    dead_looking = RunNames(d.instance, new_run_token())  # garbage owner: looks dead
    planted = [
        f"{SHM_DIR}/{dead_looking.owner()[1:]}",
        f"{SHM_DIR}/{dead_looking.wire('count')[1:]}",
        f"{SHM_DIR}/sem.{dead_looking.doorbell('count', 0)[1:]}",
    ]
    try:
        for path in planted:
            plant(path)
        d.start()
        status = d.wait_all_running()
        assert d.stop() == 0
        for path in planted:
            assert os.path.exists(path), f"{path} of another user was removed"
        log = d.log_text()
        assert log.count("belong to another user") == 1, log
        assert all(os.path.basename(p) in log for p in planted)
        assert run_entries(RunNames(d.instance, status["run"])) == []
    finally:
        for path in planted:
            if os.path.exists(path):
                os.unlink(path)
        d.close()


OTHER_USER_SCRIPT = """
import json, os, sys
from pipelined.daemon import runs
from pipelined.workers.ipc.heartbeat import Heartbeat
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.segment import run_entries, unlink_run
from pipelined.workers.ipc.wire import Wire

instance, mine, foreign_run = sys.argv[1:4]
removed = runs.remove_dead_runs(instance)   # a foreign owner segment among the runs
names = RunNames(instance, mine)
runs.claim(names)
Wire.create(names, "cam", 64, readers=1).close()
Heartbeat.create(names, "cam").close()
print(json.dumps({"removed": removed, "mine": run_entries(names)}), flush=True)
sys.stdin.readline()                        # the test plants an entry inside our run
gone = unlink_run(names)
print(json.dumps({"gone": gone, "left": run_entries(names)}), flush=True)
"""


@needs_root
def test_another_users_daemon_starts_and_cleans_up_beside_root_owned_entries(tmp_path):
    """The daemon of uid 65534 (the packaged daemon's situation, with root as the
    neighbour): a foreign owner segment it cannot read, and a foreign entry inside its
    own run, sorted before its own, change nothing for it."""
    instance = "t" + new_run_token()[:8]
    mine = new_run_token()
    foreign = RunNames(instance, new_run_token())
    owner = Segment.create(foreign.owner(), 16)  # root's, mode 0600: unreadable for 65534
    owner.close()
    inside = f"{SHM_DIR}/{RunNames(instance, mine).stem}aaa"  # sorts before beat., owner
    try:
        python, flag, boot = python_for(NOBODY)
        script = boot + "\n" + textwrap.dedent(OTHER_USER_SCRIPT)
        proc = subprocess.Popen(
            [python, flag, script, instance, mine, foreign.run],
            user=NOBODY, group=NOBODY, extra_groups=[], cwd="/", text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        started = json.loads(first)
        assert started["removed"] == [] and len(started["mine"]) == 4
        plant(inside, uid=0)
        proc.stdin.write("\n")
        proc.stdin.flush()
        ended = json.loads(proc.stdout.readline())
        assert proc.wait(30) == 0, proc.stderr.read()
        assert sorted(ended["gone"]) == sorted(started["mine"])
        assert ended["left"] == [os.path.basename(inside)]
        assert os.path.exists(f"{SHM_DIR}/{foreign.owner()[1:]}")
    finally:
        for path in (inside, f"{SHM_DIR}/{foreign.owner()[1:]}"):
            if os.path.exists(path):
                os.unlink(path)
        unlink_run(RunNames(instance, mine))
