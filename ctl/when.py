"""Points in time as people type them to pipectl: ``--since -1h``, ``--until 14:30``.

Accepted, in the box's local time unless the text says otherwise:

- relative to now: ``now``, ``-90s``, ``-15m``, ``-1h``, ``-2d``, ``-1h30m`` (``+`` for
  the future is accepted too);
- ISO 8601: ``2025-06-01T14:30:00``, ``2025-06-01 14:30``, ``2025-06-01`` (midnight),
  with ``Z`` or ``+02:00`` for a time zone other than the local one;
- a time of day today: ``14:30``, ``14:30:15``.
"""

from __future__ import annotations

import datetime
import re
import time

_RELATIVE = re.compile(r"([+-])((?:\d+(?:\.\d+)?[smhd])+)\Z")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\Z")
HELP = "now, -1h, -30m, -2d, 14:30, 2025-06-01, 2025-06-01T14:30[:00][Z|+02:00] (local time)"


def parse_time(text: str, now: float | None = None) -> float:
    """``text`` as Unix seconds; ValueError naming the accepted forms if it is none."""
    now = time.time() if now is None else now
    spoken = text.strip()
    if spoken == "now":
        return now
    relative = _RELATIVE.match(spoken)
    if relative:
        seconds = sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(relative[2]))
        return now - seconds if relative[1] == "-" else now + seconds
    if _TIME_OF_DAY.match(spoken):
        today = datetime.datetime.fromtimestamp(now).date().isoformat()
        spoken = f"{today}T{spoken}"
    try:
        when = datetime.datetime.fromisoformat(spoken)
    except ValueError:
        raise ValueError(f"{text!r} is not a time pipectl knows; use {HELP}") from None
    return when.timestamp()  # a naive time is local time


def show(seconds: float) -> str:
    """A Unix time as pipectl prints it: local time, to the second."""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
