"""File descriptors: the supervisor keeps the ones it needs, whatever the web side does.

Every worker costs the daemon a pidfd and a stderr pipe for as long as it runs, and a
launch a few more for a moment; running out of them would leave a crashed block unable
to come back. So at start the soft RLIMIT_NOFILE is raised to the hard one (systemd
gives 1024 soft, 524288 hard: the soft limit only protects select(), which the daemon
does not use), and the page takes at most what is left after a reserve for the
supervisor and the control socket's connections.
"""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger("pipelined")

RESERVE = 128
"""Descriptors never given to the web side: launches, the probe, the journal, the loop."""
PER_BLOCK = 8
"""What one block may hold at once: pidfd, stderr pipe, and a launch's pipes."""
HTTP_MAX = 256
"""The page's connections at most, however many descriptors there are."""
HTTP_MIN = 4


def raise_open_files() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def http_connections(blocks: int, control_clients: int) -> int:
    """How many connections the page may have open: what the reserve leaves."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return HTTP_MAX
    in_use = len(os.listdir("/proc/self/fd"))
    room = soft - in_use - RESERVE - PER_BLOCK * blocks - control_clients
    if room < HTTP_MIN:
        log.warning(
            "the open-file limit (%d) leaves the page %d connections after what %d blocks"
            " need; it takes %d. Raise LimitNOFILE=.",
            soft,
            max(room, 0),
            blocks,
            HTTP_MIN,
        )
        return HTTP_MIN
    return min(HTTP_MAX, room)
