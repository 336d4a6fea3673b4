"""How pipectl prints the daemon's answers for people: tables, durations, sizes, dot.

Every function takes the JSON the daemon sent (docs/design.md, "The control socket") and
tolerates missing fields and nulls, printing "-", so an older or newer daemon still
gives a readable table. Text that comes from workers (a reason, a stderr tail) has its
control characters replaced: a block's stderr must not be able to drive the terminal.
"""

from __future__ import annotations

import datetime
import math
import re
import signal
import time
from collections.abc import Iterable, Sequence
from typing import Any

DASH = "-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Fill colours of `graph --dot`, by state: green runs, amber is on its way, red gave up.
STATE_COLOURS = {
    "RUNNING": "#a6e3a1",
    "STARTING": "#f9e2af",
    "BACKOFF": "#fab387",
    "STOPPING": "#f9e2af",
    "STOPPED": "#d9d9d9",
    "EXITED": "#bfbfbf",
    "FAILED": "#f38ba8",
}
UNKNOWN_COLOUR = "#ffffff"


def clean(text: Any) -> str:
    """One line of printable text: control characters (escapes, newlines) become spaces."""
    return _CONTROL.sub(" ", str(text))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def duration(seconds: Any) -> str:
    """A short duration: 42s, 12m03s, 3h04m, 2d03h."""
    value = _number(seconds)
    if value is None or value < 0:
        return DASH
    s = int(value)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(nbytes: Any) -> str:
    """Bytes in binary units, three significant digits: 980K, 45.2M, 1.20G."""
    value = _number(nbytes)
    if value is None or value < 0:
        return DASH
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1000 or unit == "T":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)}B"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f}{unit}"


def _fixed(value: Any, digits: int = 1, suffix: str = "") -> str:
    number = _number(value)
    return DASH if number is None else f"{number:.{digits}f}{suffix}"


def _text(value: Any) -> str:
    return DASH if value is None or value == "" else clean(value)


def _when(at: Any, now: float) -> float | None:
    """Seconds since ``at``: a Unix time, or an ISO 8601 string (naive means UTC)."""
    stamp = _number(at)
    if stamp is None and isinstance(at, str):
        try:
            parsed = datetime.datetime.fromisoformat(at)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        stamp = parsed.timestamp()
    return None if stamp is None else max(0.0, now - stamp)


def last_exit(info: Any, now: float | None = None) -> str:
    """'exit 1, 3m10s ago: <last stderr line>' or 'SIGKILL, ...' or '-'."""
    if not isinstance(info, dict):
        return DASH
    now = time.time() if now is None else now
    sig, code = info.get("signal"), info.get("code")
    if sig is not None:
        if isinstance(sig, int) and not isinstance(sig, bool):
            try:
                what = signal.Signals(sig).name
            except ValueError:
                what = f"signal {sig}"
        else:
            what = clean(sig)
    elif code is not None:
        what = f"exit {clean(code)}"
    else:
        what = "exited"
    ago = _when(info.get("at"), now)
    if ago is not None:
        what += f", {duration(ago)} ago"
    tail = info.get("stderr_tail")
    if isinstance(tail, str):
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        if lines:
            what += f": {clean(lines[-1])}"
    return what


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], width: int | None = None) -> str:
    """Left-aligned columns two spaces apart; the last column is cut to ``width``."""
    rows = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1]))
        line = f"{line}  {row[-1]}".rstrip()
        if width is not None and len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        lines.append(line)
    return "\n".join(lines)


BLOCK_HEADERS = (
    "BLOCK", "TYPE", "STATE", "PID", "UPTIME", "RESTARTS", "IN/S", "OUT/S", "MISSED", "SKIPPED",
    "CPU", "RSS",
)  # fmt: skip
"""IN/S and OUT/S: frames a second taken in and sent out (a sink: delivered, written or
served); MISSED: frames lost because the block could not keep up; SKIPPED: let go by
design (a later input sampled, a sink thinning to its own rate)."""


SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12
"""Characters of a sparkline: an hour in twelve, five minutes each."""


def sparkline(values: Any, width: int = SPARK_WIDTH) -> str:
    """``values`` (oldest first) as ``width`` bars, each the mean of its share, scaled from
    0 to the largest; a share with no values (a block younger than the span) is blank."""
    if not isinstance(values, list):
        return ""
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        return ""
    points = 3600 // 10  # the daemon keeps a point every 10 s for an hour
    per = max(points // width, 1)
    padded = [None] * max(points - len(numbers), 0) + numbers[-points:]
    top = max(numbers) or 1.0
    bars = []
    for i in range(0, len(padded), per):
        share = [v for v in padded[i : i + per] if v is not None]
        if not share:
            bars.append(" ")
            continue
        level = round(sum(share) / len(share) / top * (len(SPARKS) - 1))
        bars.append(SPARKS[max(0, min(level, len(SPARKS) - 1))])
    return "".join(bars)[-width:]


def block_rows(
    blocks: Iterable[Any], now: float | None = None, history: Any = None
) -> list[list[str]]:
    """One row per block; with ``history`` (the ``history`` command's result) a sparkline
    of each block's frames out per second over the last hour, after OUT/S."""
    series = history.get("blocks") if isinstance(history, dict) else None
    rows = []
    for b in blocks:
        if not isinstance(b, dict):
            continue
        state = _text(b.get("state"))
        info = b.get("reason") or (
            last_exit(b.get("last_exit"), now) if state != "RUNNING" else b.get("detail") or ""
        )
        rows.append(
            [
                _text(b.get("name")),
                _text(b.get("type")),
                state,
                _text(b.get("pid")),
                duration(b.get("uptime_s")) if b.get("pid") is not None else DASH,
                _text(b.get("restarts")),
                _fixed(b.get("fps_in")) if b.get("inputs") != [] else DASH,
                _fixed(b.get("fps")),
                *([_spark(series, b.get("name"))] if isinstance(series, dict) else []),
                _text(b.get("missed")),
                _text(b.get("skipped")),
                _fixed(b.get("cpu_percent"), 0, "%"),
                size(b.get("rss_bytes")),
                clean(info) if info and info != DASH else "",
            ]
        )
    return rows


def _spark(series: dict[str, Any], name: Any) -> str:
    figures = series.get(name) if isinstance(name, str) else None
    line = sparkline(figures.get("fps")) if isinstance(figures, dict) else ""
    return line.ljust(SPARK_WIDTH) if line.strip() else DASH


def status(
    obj: Any, width: int | None = None, now: float | None = None, history: Any = None
) -> str:
    """The `pipectl status` page: a header line, the blocks, then the wires.

    With ``history`` (``status --watch`` asks for it), a column of sparklines: each
    block's frames out per second over the last hour."""
    if not isinstance(obj, dict):
        return clean(obj)
    graph = obj.get("graph")
    head = (
        f"instance {_text(obj.get('instance'))}  run {_text(obj.get('run'))}"
        f"  up {duration(obj.get('uptime_s'))}"
        f"  graph {clean(graph) if graph else '(built-in demo)'}"
    )
    parts = [head, ""]
    blocks = obj.get("blocks") or []
    headers = list(BLOCK_HEADERS)
    if isinstance(history, dict) and isinstance(history.get("blocks"), dict):
        headers.insert(headers.index("OUT/S") + 1, "LAST HOUR")
    parts.append(table([*headers, "INFO"], block_rows(blocks, now, history), width))
    wires_list = obj.get("wires")
    if wires_list:
        parts += ["", wires(wires_list, width)]
    if obj.get("packet_wires"):
        parts += ["", packet_wires(obj["packet_wires"], width)]
    if obj.get("remote_wires"):
        parts += ["", remote_wires(obj["remote_wires"], width)]
    told = outlets(obj)
    if told:
        parts += ["", told]
    return "\n".join(parts)


def outlets(obj: dict[str, Any]) -> str:
    """What leaves the box: the event store, MQTT, webhooks; one line each, and why not."""
    lines = []
    events = obj.get("events")
    if isinstance(events, dict):
        where = clean(events["store"]) if events.get("store") else "not kept"
        problem = f" ({clean(events['store_problem'])})" if events.get("store_problem") else ""
        lost = f", {events['not_stored']} not stored" if events.get("not_stored") else ""
        lines.append(f"events   {where}{problem}: {_text(events.get('open'))} open{lost}")
    mqtt = obj.get("mqtt")
    if isinstance(mqtt, dict):
        how = (
            "connected" if mqtt.get("connected") else f"not connected: {clean(mqtt.get('reason'))}"
        )
        lines.append(
            f"mqtt     {clean(mqtt.get('broker'))} {how}; {_text(mqtt.get('sent'))} sent,"
            f" {_text(mqtt.get('queued'))} queued, {_text(mqtt.get('dropped'))} dropped"
            f" (prefix {clean(mqtt.get('prefix'))})"
        )
    for hook in obj.get("webhooks") or []:
        if isinstance(hook, dict):
            why = f"; {clean(hook['reason'])}" if hook.get("reason") else ""
            lines.append(
                f"webhook  {clean(hook.get('url'))} {_text(hook.get('sent'))} sent,"
                f" {_text(hook.get('failed'))} failed, {_text(hook.get('queued'))} queued,"
                f" {_text(hook.get('dropped'))} dropped{why}"
            )
    return "\n".join(lines)


def _per_reader(counts: Any) -> str:
    if isinstance(counts, dict):
        if not counts:
            return DASH
        return " ".join(f"{clean(reader)}:{_text(count)}" for reader, count in counts.items())
    return _text(counts)


def _readers(wire: dict) -> str:
    readers = wire.get("readers") or []
    return ", ".join(clean(r) for r in readers) if readers else DASH


def wires(wire_list: Any, width: int | None = None) -> str:
    """The wires table: writer, readers, frames written, and per reader the frames missed
    (a reader the wire paces) or skipped (a reader that samples it, by design)."""
    if isinstance(wire_list, dict):  # the `wires` command's {"wires", "packet_wires", …}
        packets, remote = wire_list.get("packet_wires"), wire_list.get("remote_wires")
        text = wires(wire_list.get("wires") or [], width)
        text += f"\n\n{packet_wires(packets, width)}" if packets else ""
        return text + (f"\n\n{remote_wires(remote, width)}" if remote else "")
    rows = []
    for w in wire_list or []:
        if not isinstance(w, dict):
            continue
        rows.append(
            [
                _text(w.get("name")),
                _text(w.get("writer")),
                _readers(w),
                _text(w.get("frames")),
                _per_reader(w.get("missed")),
                _per_reader(w.get("skipped")),
            ]
        )
    return table(["WIRE", "WRITER", "READERS", "FRAMES", "MISSED", "SKIPPED"], rows, width)


def packet_wires(wire_list: Any, width: int | None = None) -> str:
    """The packet wires: writer, readers, packets and bytes written, packets missed."""
    rows = []
    for w in wire_list or []:
        if not isinstance(w, dict):
            continue
        rows.append(
            [
                _text(w.get("name")),
                _readers(w),
                _text(w.get("packets")),
                size(w.get("bytes")),
                _per_reader(w.get("missed")),
            ]
        )
    return table(["PACKET WIRE", "READERS", "PACKETS", "BYTES", "MISSED"], rows, width)


def remote_wires(wire_list: Any, width: int | None = None) -> str:
    """Wires that leave the box: block -> zenoh:KEY (published) or zenoh:KEY -> block
    (a remote block), with the peer, state, rates and drops the Zenoh link reports."""
    rows = []
    for w in wire_list or []:
        if not isinstance(w, dict):
            continue
        key = f"zenoh:{clean(w.get('key'))}"
        block = _text(w.get("block"))
        wire = f"{block} -> {key}" if w.get("direction") == "out" else f"{key} -> {block}"
        missed = _text(w.get("missed"))
        if w.get("refused"):
            missed += f" (+{_text(w.get('refused'))} refused)"
        info = _text(w.get("peer")) if w.get("peer") else ""
        if w.get("reason") and w.get("state") == "refusing":
            info = f"{info}; {clean(w['reason'])}" if info else clean(w["reason"])
        rows.append(
            [
                wire,
                _text(w.get("encoding")),
                _text(w.get("state")),
                _fixed(w.get("fps")),
                size(w.get("bytes_per_s")) + "/s"
                if _number(w.get("bytes_per_s")) is not None
                else DASH,
                missed,
                info,
            ]
        )
    headers = ["REMOTE WIRE", "ENCODING", "STATE", "FPS", "RATE", "MISSED", "PEER"]
    return table(headers, rows, width)


def _graph_blocks(result: Any) -> list[dict[str, Any]]:
    blocks = result.get("blocks") if isinstance(result, dict) else result
    return [b for b in blocks or [] if isinstance(b, dict) and b.get("name") is not None]


def _inputs(block: dict[str, Any]) -> list[str]:
    inputs = block.get("inputs") or []
    return [str(i) for i in inputs] if isinstance(inputs, list) else [str(inputs)]


def graph(result: Any) -> str:
    """The running graph as text: each block, its state and what it reads."""
    rows = [
        [
            _text(b["name"]),
            _text(b.get("type")),
            _text(b.get("state")),
            ", ".join(clean(i) for i in _inputs(b)) or DASH,
        ]
        for b in _graph_blocks(result)
    ]
    return table(["BLOCK", "TYPE", "STATE", "INPUTS"], rows)


def _dot_id(text: Any) -> str:
    escaped = clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dot(result: Any, name: str = "pipelined") -> str:
    """The running graph in Graphviz's language: `pipectl graph --dot | dot -Tsvg`.

    Blocks are boxes filled by state (STATE_COLOURS); an edge runs from the block that
    writes a wire to each block that reads it.
    """
    blocks = _graph_blocks(result)
    lines = [
        f"digraph {_dot_id(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for b in blocks:
        state = str(b.get("state") or "")
        label = f"{clean(b['name'])}\\n{clean(b.get('type') or '')}\\n{clean(state)}"
        label = label.replace('"', '\\"')
        colour = STATE_COLOURS.get(state, UNKNOWN_COLOUR)
        lines.append(f'  {_dot_id(b["name"])} [label="{label}", fillcolor="{colour}"];')
    for b in blocks:
        for source in _inputs(b):
            lines.append(f"  {_dot_id(source)} -> {_dot_id(b['name'])};")
    lines.append("}")
    return "\n".join(lines)


def hello(result: Any) -> str:
    if not isinstance(result, dict):
        return clean(result)
    return (
        f"pipelined {_text(result.get('version'))}, instance {_text(result.get('instance'))},"
        f" protocol {_text(result.get('protocol'))}"
    )


def action(verb: str, result: Any) -> str:
    """What start/stop/restart/reload did, from whatever summary the daemon returned.

    The daemon may answer with a list of block names, ``{"blocks": [...]}`` (names or
    objects with name and state), or an object of lists (``{"restarted": [...], ...}``).
    """
    if isinstance(result, dict) and set(result) == {"blocks"}:
        result = result["blocks"]
    if isinstance(result, list):
        items = []
        for item in result:
            if isinstance(item, dict):
                items.append(f"{_text(item.get('name'))} {_text(item.get('state'))}".strip())
            else:
                items.append(clean(item))
        return f"{verb}: {', '.join(items)}" if items else f"{verb}: nothing to do"
    if isinstance(result, dict):
        lines = []
        for key, value in result.items():
            shown = ", ".join(clean(v) for v in value) if isinstance(value, list) else _text(value)
            lines.append(f"{clean(key)}: {shown or DASH}")
        return "\n".join(lines) if lines else f"{verb}: done"
    return f"{verb}: done" if result is None else f"{verb}: {clean(result)}"


GAP = 1.0
"""Seconds between one segment's end and the next one's start shown as a gap."""


def recordings(result: Any, width: int | None = None) -> str:
    """The `pipectl recordings` table, local times, with a line for each gap in a recording."""
    entries = [e for e in (result or {}).get("recordings") or [] if isinstance(e, dict)]
    if not entries:
        recorders = ", ".join(clean(r.get("block")) for r in result.get("recorders") or [])
        return f"no recordings ({'recorders: ' + recorders if recorders else 'no recorder'})"
    rows: list[list[str]] = []
    last_end: dict[str, float] = {}
    for e in entries:
        block, start, end = _text(e.get("block")), _number(e.get("start")), _number(e.get("end"))
        before = last_end.get(block)
        if before is not None and start is not None and start - before > GAP:
            gap = f"(a gap of {_length(start - before)})"
            rows.append([block, _local(before), DASH, DASH, gap])
        if end is not None:
            last_end[block] = end
        rows.append(
            [block, _local(start), _length(e.get("duration")), size(e.get("bytes")),
             _text(e.get("file"))]
        )  # fmt: skip
    return table(["BLOCK", "START (local time)", "LENGTH", "SIZE", "FILE"], rows, width)


def _length(seconds: Any) -> str:
    value = _number(seconds)
    return f"{value:.1f}s" if value is not None and 0 <= value < 60 else duration(seconds)


def _local(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def events(entries: list[Any], store: Any = None) -> str:
    """The `pipectl events` table: local start, block, kind, length (or open), score, clip."""
    rows: list[list[str]] = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        start, end = _number(e.get("start")), _number(e.get("end"))
        if end is None:
            length = "open"
        else:
            length = _length(end - start if start is not None else None)
            length += " (cut)" if e.get("interrupted") else ""
        rows.append(
            [_local(start), _text(e.get("block")), _text(e.get("kind")), length,
             _score(e.get("score")), _clip(e), _text(e.get("id"))]
        )  # fmt: skip
    if not rows:
        return "no events" + ("" if store else " (the daemon keeps no event store)")
    return table(["START (local time)", "BLOCK", "KIND", "LENGTH", "SCORE", "CLIP", "ID"], rows)


def event_line(change: str, e: dict[str, Any]) -> str:
    """One change of `pipectl events -f`: the time it happened, then what."""
    moment = e.get("end") if change == "end" else e.get("start")
    parts = [_local(_number(moment)), _text(e.get("block")), _text(e.get("kind")), change,
             f"score {_score(e.get('score'))}", _text(e.get("id"))]  # fmt: skip
    if (
        change == "end"
        and _number(e.get("end")) is not None
        and _number(e.get("start")) is not None
    ):
        parts.insert(4, _length(e["end"] - e["start"]))
    clip = _clip(e)
    if clip != DASH:
        parts.append(f"clip {clip}")
    if e.get("snapshot") and change == "start":
        parts.append(f"snapshot {clean(e['snapshot'])}")
    return "  ".join(parts)


def _score(value: Any) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:.3g}"


def _clip(e: dict[str, Any]) -> str:
    clips = [c for c in e.get("clips") or [] if isinstance(c, dict)]
    if not clips:
        return DASH
    name = clean(str(clips[-1].get("path", "")).rsplit("/", 1)[-1])
    return name + (f" (+{len(clips) - 1})" if len(clips) > 1 else "")
