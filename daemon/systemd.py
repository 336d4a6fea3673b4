"""The daemon's systemd glue: sd_notify, the journal, and socket activation.

Everything here goes through systemd-python (``systemd.daemon``, ``systemd.journal``)
and does nothing when systemd is not there, so the daemon runs the same in a terminal:

- ``Notifier`` speaks sd_notify(3) only when ``$NOTIFY_SOCKET`` is set. READY=1 waits
  until every block has settled (RUNNING, which includes a block waiting for its
  source, or FAILED, EXITED, STOPPED), so ``systemctl start`` returns once the graph
  runs, not merely once processes were launched; STATUS= carries one line kept
  current; WATCHDOG=1 is sent from the event loop at half ``$WATCHDOG_USEC``, so a hung
  loop (or a SIGSTOPped daemon) stops the pings and systemd's watchdog restarts us.
  A reload is bracketed by RELOADING=1 (with MONOTONIC_USEC=, which systemd 253's
  Type=notify-reload wants and 252 ignores) and READY=1; a stop says STOPPING=1.
- ``log_to_journal`` swaps the stderr handler for ``JournalHandler`` only when stderr
  *is* the journal (``$JOURNAL_STREAM`` names its device and inode, as systemd.exec(5)
  recommends), so ``pipelined ... 2>file`` still writes to the file. Each entry
  carries PIPELINED_INSTANCE=, PIPELINED_BLOCK= (the record's ``block`` extra) and
  PIPELINED_PID= (the worker's pid when known), for ``journalctl PIPELINED_BLOCK=red``.
- ``listen_socket`` takes the control socket from ``$LISTEN_FDS`` (pipelined.socket).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from systemd import daemon as sd_daemon
from systemd import journal

from .states import State

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("pipelined.systemd")

SETTLED = frozenset({State.RUNNING, State.FAILED, State.EXITED, State.STOPPED})
"""Block states that count as "the graph runs" for READY=1 (the rest are on their way)."""
READY_TIMEOUT = 60.0
"""Say READY=1 after this long even if a block is still starting or crash-looping: a
flapping block must not make systemd kill the whole graph (the unit's
TimeoutStartSec=90 is longer). STATUS= then names what has not settled."""
TICK = 0.25
STATUS_EVERY = 1.0


def settled(supervisor: Supervisor) -> bool:
    return all(proc.state in SETTLED for proc in supervisor.blocks.values())


def status_line(supervisor: Supervisor) -> str:
    """``4 blocks: 4 running, 0 failed; camera 30 fps`` (sources' rates, or why they wait)."""
    parts = [supervisor.summary()]
    for name in supervisor.graph.order():
        proc = supervisor.blocks.get(name)
        if proc is None or proc.spec.inputs:
            continue
        if proc.state == State.RUNNING and proc.reason:
            parts.append(f"{name}: {proc.reason}")
        elif proc.state == State.RUNNING:
            parts.append(f"{name} {proc.fps:.0f} fps")
        else:
            parts.append(f"{name} {proc.state.value.lower()}")
    return "; ".join(parts)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds of systemd's watchdog for this process, or None (sd_watchdog_enabled(3))."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class Notifier:
    """sd_notify for one daemon; each method is a no-op without ``$NOTIFY_SOCKET``."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
        send: Callable[[str], Any] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.watchdog_s = watchdog_interval(env) if self.enabled else None
        self.ready_timeout = ready_timeout
        self.is_ready = False
        self._send = send or sd_daemon.notify
        self._status: str | None = None
        self._status_at = 0.0

    def notify(self, *lines: str) -> None:
        if self.enabled and not self._send("\n".join(lines)):
            log.debug("sd_notify did not reach systemd: %s", lines)

    def ready(self, status: str) -> None:
        self.is_ready = True
        self._status, self._status_at = status, time.monotonic()
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str, *, force: bool = False) -> None:
        """Send STATUS= when it changed, at most once a second (fps moves all the time)."""
        now = time.monotonic()
        if status == self._status or (not force and now - self._status_at < STATUS_EVERY):
            return
        self._status, self._status_at = status, now
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        if self.is_ready:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the graph")

    def reloaded(self, status: str) -> None:
        """End a reload: READY=1 again (only once the first READY=1 was sent)."""
        if self.is_ready:
            self.ready(status)

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping the graph")

    async def run(self, supervisor: Supervisor) -> None:
        """From the event loop: READY=1 once settled, then STATUS= and WATCHDOG=1."""
        if not self.enabled:
            return
        started = time.monotonic()
        next_ping = 0.0
        period = self.watchdog_s / 2 if self.watchdog_s else None
        while True:
            now = time.monotonic()
            line = status_line(supervisor)
            if not self.is_ready:
                if settled(supervisor):
                    self.ready(line)
                    log.info("told systemd READY=1: %s", line)
                elif now - started > self.ready_timeout:
                    waiting = [p.name for p in supervisor.blocks.values() if p.state not in SETTLED]
                    self.ready(f"{line}; not settled: {', '.join(waiting)}")
                    log.warning(
                        "told systemd READY=1 after %.0f s although %s did not settle",
                        self.ready_timeout,
                        ", ".join(waiting),
                    )
                else:
                    self.status(f"starting: {line}")
            else:
                self.status(line)
            if period is not None and now >= next_ping:
                self.watchdog()
                next_ping = now + period
            due = next_ping - time.monotonic() if period is not None else TICK
            await asyncio.sleep(max(0.0, min(TICK, due)))


# -- the journal ---------------------------------------------------------------------


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """True when fd 2 is the journal's stream ($JOURNAL_STREAM is "<dev>:<inode>")."""
    env = os.environ if environ is None else environ
    try:
        dev, ino = (int(part) for part in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class BlockJournalHandler(journal.JournalHandler):
    """systemd-python's JournalHandler, sending only valid fields plus pipelined's own.

    The stock ``emit`` copies every LogRecord attribute as a field (lowercase names,
    which journald drops); this one sends MESSAGE, PRIORITY, LOGGER, CODE_* and
    PIPELINED_INSTANCE / PIPELINED_BLOCK / PIPELINED_PID, and the PIPELINED_* fields of
    the record's ``journal`` extra (an event's PIPELINED_EVENT_ID, _KIND, _PHASE, _SCORE).
    """

    def __init__(self, instance: str, level: int = logging.NOTSET) -> None:
        super().__init__(level, SYSLOG_IDENTIFIER="pipelined", PIPELINED_INSTANCE=instance)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = dict(self._extra)
        fields["PRIORITY"] = str(self.map_priority(record.levelno))
        fields["LOGGER"] = record.name
        block = getattr(record, "block", None)  # set on every record about a block
        if isinstance(block, str):
            fields["PIPELINED_BLOCK"] = block
            pid = getattr(record, "worker_pid", None)
            if pid:
                fields["PIPELINED_PID"] = str(pid)
        more = getattr(record, "journal", None)  # an event's id, kind, phase, score
        if isinstance(more, dict):
            fields.update({k: str(v) for k, v in more.items() if k.startswith("PIPELINED_")})
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(
                self.format(record),
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **self.fields(record),
            )
        except Exception:
            self.handleError(record)


def log_to_journal(instance: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send the root logger to the journal if stderr is the journal; True if it did."""
    if not stderr_is_journal(environ):
        return False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(BlockJournalHandler(instance))
    return True


def listen_socket() -> socket.socket | None:
    """The listening control socket systemd passed ($LISTEN_FDS for this pid), or None.

    The LISTEN_* variables are removed so workers never see them.
    """
    fds = sd_daemon.listen_fds(unset_environment=True)
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # libsystemd's unsetenv() does not reach os.environ
    if not fds:
        return None
    socks = [socket.socket(fileno=fd) for fd in fds]
    good = [s for s in socks if s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM]
    for s in socks:
        if not good or s is not good[0]:
            log.warning("ignoring socket fd %d from systemd: not the AF_UNIX stream", s.fileno())
            s.close()
    if not good:
        return None
    log.info("control socket from systemd (fd %d)", good[0].fileno())
    return good[0]
