"""The worker runtime: real workers, their heartbeat, secrets, and a supervisor that dies."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from harness.daemon import RunningDaemon, wait_for
from harness.graphs import counter, graph
from standins import BLOCKS, launch_chain, wait_running

from pipelined.daemon.process import launch
from pipelined.workers.contract import EX_CONFIG, WorkerArgs
from pipelined.workers.ipc.heartbeat import RUNNING, Heartbeat
from pipelined.workers.ipc.liveness import ProcessIdentity, start_time
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.segment import run_entries, unlink_run
from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter
from pipelined.workers.runtime.first_input import FirstInput
from pipelined.workers.runtime.worker import Worker


@pytest.fixture
def chain(names, tmp_path):
    procs = launch_chain(names, str(tmp_path / "tally"))
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def read_tally(path: Path) -> tuple[int, int, int] | None:
    try:
        count, value, pid = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return int(count), int(value), int(pid)


def test_frames_flow_through_workers_and_heartbeats_count_them(names, chain, tmp_path):
    wait_running(names, chain)
    tally = tmp_path / "tally"
    _, value, _ = wait_for(lambda: read_tally(tally), 30, "the tally to see frames")
    beat = Heartbeat.attach(names, "inv")
    try:
        first = beat.read()
        wait_for(lambda: beat.read().frames_out > first.frames_out + 20, 30, "more frames")
        now = beat.read()
        assert now.state == RUNNING and now.pid == chain["inv"].pid
        assert now.frames_in >= now.frames_out > 0
        assert now.busy_ns > 0
    finally:
        beat.close()
    # Invert really ran: the sink sees 255 - (n % 251) for some frame number n.
    assert 255 - value in range(251)


def test_sigterm_stops_every_worker_cleanly(names, chain):
    wait_running(names, chain)
    for p in chain.values():
        p.send_signal(signal.SIGTERM)
    for block, p in chain.items():
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, f"{block}: {err.decode()}"


def test_workers_clean_up_when_their_supervisor_is_killed(procs, names, tmp_path):
    parent = procs.standin("parent", names.instance, names.run, str(tmp_path / "tally"))
    line = parent.stdout.readline()
    assert line, parent.communicate()[1]
    pids = json.loads(line)["pids"]
    assert run_entries(names)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    killed = time.monotonic()
    wait_for(lambda: all(start_time(pid) is None for pid in pids), 15, "every worker to exit")
    wait_for(lambda: not run_entries(names), 15, "/dev/shm to empty")
    assert time.monotonic() - killed < 15


def test_secrets_reach_the_worker_but_not_its_command_line(names, tmp_path):
    Heartbeat.create(names, "probe").close()
    report = tmp_path / "report"
    args = WorkerArgs(
        names.instance, names.run, "probe", f"{BLOCKS}:SecretProbe",
        {"url": "rtsp://admin:hunter2@cam.local/stream", "password": "s3cret",
         "report": str(report)},
        output=False, supervisor=tuple(ProcessIdentity.me().encode()),
    )  # fmt: skip
    proc = launch(args)
    try:
        text = wait_for(lambda: report.exists() and report.read_text(), 30, "the report")
        assert text.splitlines() == ["rtsp://admin:hunter2@cam.local/stream", "s3cret"]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"pipelined.workers" in cmdline
        assert b"hunter2" not in cmdline and b"s3cret" not in cmdline
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_configuration_error_exits_78_with_the_reason(names):
    Heartbeat.create(names, "hw").close()
    args = WorkerArgs(
        names.instance, names.run, "hw", f"{BLOCKS}:NeedsHardware", {}, output=False,
        supervisor=tuple(ProcessIdentity.me().encode()),
    )  # fmt: skip
    proc = launch(args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EX_CONFIG
    assert b"no frobnicator on this box" in err


def test_orphan_of_an_old_run_cannot_touch_a_new_run(names):
    other = RunNames(names.instance, "0ther")
    mine = [names.beat("a")]
    Heartbeat.create(names, "a").close()
    Heartbeat.create(other, "a").close()
    try:
        unlink_run(other)
        assert [f"/{e}" for e in run_entries(names)] == mine
    finally:
        unlink_run(other)


def test_a_view_of_the_input_is_never_published_torn(names, caplog):
    """A block that returns a view of its input (a mirror): the writer laps the input
    between the output being written and published (the runtime's hook), every third
    frame. Whatever is published is whole; a lapped view is dropped and counted, and the
    frame after it is taken as a copy, which the writer cannot tear; after one frame a
    view would have survived, views again (``views_again=1`` to see all three paths)."""
    shape = (24, 32, 3)
    size = 24 * 32 * 3
    Wire.create(names, "src", size, readers=1).close()
    Wire.create(names, "mirror", size, readers=1).close()
    Heartbeat.create(names, "mirror").close()
    src = WireWriter(names, "src")
    out = WireReader(names, "mirror", 0)
    args = WorkerArgs(
        names.instance, names.run, "mirror", f"{BLOCKS}:Mirror", {}, [("src", 0)], True
    )
    worker = Worker(args)
    worker.first_input.views_again = 1
    caplog.set_level(logging.INFO, "pipelined.block.mirror")
    try:
        worker.set_up()
        n = 0

        def lap() -> None:
            if n % 3 == 1:
                for _ in range(4):
                    src.write(np.full(shape, 99, np.uint8))

        worker.before_publish = lap
        published, taken_as = [], []
        for n in range(1, 20):
            src.write(np.full(shape, n, np.uint8))
            taken_as.append("copy" if worker.first_input.copy else "view")
            worker.step()
            if (frame := out.read_copy(timeout=0)) is not None:
                published.append(int(frame.array.flat[0]))
                assert (frame.array == frame.array.flat[0]).all()
        # 1 view lapped, 2 a copy (lapped by nothing), 3 a view not lapped, 4 lapped ...
        assert taken_as[:4] == ["view", "copy", "view", "view"]
        assert published == [n for n in range(1, 20) if n % 3 != 1]
        assert worker.stale == 7 and worker.first_input.copied == 6
        said = [r for r in caplog.records if "works on copies" in r.getMessage()]
        assert len(said) == 1  # the first switch to copies is logged, the others are not
    finally:
        worker.tear_down()
        out.close()
        src.close()


def test_a_copy_says_whether_a_view_would_have_been_torn(names):
    """The lap made certain: four frames written while a copy is held. The copy stays
    whole and intact; it says that its slot was reused, which a view could not survive."""
    Wire.create(names, "src", 16, readers=1).close()
    src = WireWriter(names, "src")
    reader = WireReader(names, "src", 0)
    try:
        src.write(np.full(16, 1, np.uint8))
        copy = reader.read_copy(timeout=0)
        assert copy is not None and copy.copied and not copy.slot_reused()
        for _ in range(4):
            src.write(np.full(16, 2, np.uint8))
        assert copy.intact() and copy.slot_reused() and (copy.array == 1).all()
        view = reader.read(timeout=0)
        assert view is not None and not view.copied and view.intact()
        for _ in range(4):
            src.write(np.full(16, 3, np.uint8))
        assert not view.intact() and view.slot_reused()
        del view
    finally:
        reader.close()
        src.close()


def test_the_first_input_is_copied_while_views_would_not_survive():
    """The policy alone: one reused slot turns copies on; ``views_again`` frames in a row
    whose slot outlived the block's work turn them off; one reused slot starts over."""
    policy = FirstInput(views_again=3)
    seen = []
    for reused in [False, True, False, False, True, False, False, False, False]:
        policy.worked_on(slot_reused=reused)
        seen.append(policy.copy)
    assert seen == [False, True, True, True, True, True, True, False, False]


def test_a_block_slower_than_its_wire_still_gets_its_frames_out(tmp_path):
    """Real workers: a block that takes 0.2 s over each frame of a 50 fps source, and
    returns its input itself (a view). Four slots go by in 80 ms, so every view would be
    overwritten before it could leave; the block works on copies and its frames reach
    the sink, whole."""
    tally = tmp_path / "tally"
    text = graph(
        counter("src", fps=50, extra="side = 64"),
        f'[blocks.slow]\ntype = "{BLOCKS}:Slow"\ninput = "src"\ndelay = 0.2\n',
        f'[blocks.sink]\ntype = "{BLOCKS}:Uniform"\ninput = "slow"\npath = "{tally}"\n',
    )
    with RunningDaemon(text) as d:
        d.start().wait_all_running()
        counts = wait_for(
            lambda: tally.exists() and (c := tally.read_text().split()) and int(c[0]) > 20 and c,
            90,
            "the slow block's frames to reach the sink",
        )
        assert counts[1] == "0", f"torn frames reached the sink: {counts}"


def test_mirror_and_crop_of_a_flat_out_source_reach_a_sink_whole(tmp_path):
    """Real workers: a source flat out, a mirror and a crop of it (views), sinks that
    check every frame: zero torn frames out."""
    mirrored, cropped = tmp_path / "mirrored", tmp_path / "cropped"
    text = graph(
        counter("src", fps=2000, extra="side = 256"),
        f'[blocks.mirror]\ntype = "{BLOCKS}:Mirror"\ninput = "src"\n',
        f'[blocks.crop]\ntype = "{BLOCKS}:Crop"\ninput = "src"\n',
        f'[blocks.m]\ntype = "{BLOCKS}:Uniform"\ninput = "mirror"\npath = "{mirrored}"\n',
        f'[blocks.c]\ntype = "{BLOCKS}:Uniform"\ninput = "crop"\npath = "{cropped}"\n',
    )
    with RunningDaemon(text) as d:
        d.start().wait_all_running()
        for path in (mirrored, cropped):
            counts = wait_for(
                lambda p=path: (
                    p.exists() and (c := p.read_text().split()) and int(c[0]) > 200 and c
                ),
                120,
                f"{path.name} to see 200 frames",
            )
            assert counts[1] == "0", f"{path.name}: torn frames reached the sink: {counts}"


def test_a_crash_is_said_in_one_line_at_the_block_code_that_raised(tmp_path):
    """Where: the block's method the runtime called, and the block's own line, even when
    numpy raised deep inside; why: the exception's first line."""
    from pipelined.workers.runtime import worker
    from pipelined.workers.runtime.worker import crash_line

    module = tmp_path / "odd.py"
    module.write_text(
        "import numpy as np\n"
        "def setup():\n"
        "    helper()\n"
        "def helper():\n"
        "    np.zeros(3).reshape(2, 2)  # numpy raises: cannot reshape\n"
    )
    namespace: dict = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    # The block's setup() called as the runtime calls it: from a frame of worker.py.
    runtime = (
        "def call(f):\n    try:\n        f()\n    except Exception as exc:\n        return exc\n"
    )
    exec(compile(runtime, worker.__file__, "exec"), namespace)
    line = crash_line(namespace["call"](namespace["setup"]))
    assert line.startswith("crashed in setup(): ValueError: cannot reshape array of size 3")
    assert line.endswith("(odd.py, line 5)")
    try:
        raise RuntimeError("first line\nsecond line")
    except RuntimeError as exc:
        assert crash_line(exc).startswith("crashed: RuntimeError: first line (test_runtime.py")
