"""Graph files for a ``RunningDaemon``: the test blocks, and the built-in demo headless."""

from __future__ import annotations

import re
from pathlib import Path

from pipelined.daemon.graph import DEMO_GRAPH

BLOCKS = "userblocks.runtime_blocks"


def graph(*blocks: str, supervisor: str = "") -> str:
    """A graph file of ``blocks``, with [supervisor] defaults if given."""
    head = f"[supervisor]\n{supervisor}\n" if supervisor else ""
    return head + "\n".join(blocks)


def counter(name: str = "count", fps: float = 50, extra: str = "") -> str:
    return f'[blocks.{name}]\ntype = "{BLOCKS}:Counter"\nfps = {fps}\n{extra}\n'


def invert(name: str, source: str, extra: str = "") -> str:
    return f'[blocks.{name}]\ntype = "{BLOCKS}:Invert"\ninput = "{source}"\n{extra}\n'


def tally(name: str, source: str, path: Path | str, extra: str = "") -> str:
    return (
        f'[blocks.{name}]\ntype = "{BLOCKS}:Tally"\ninput = "{source}"\npath = "{path}"\n{extra}\n'
    )


def demo_graph(preview_port: int, recordings: Path | str, preview_extra: str = "") -> str:
    """The built-in demo without its screen (which waits to be asked, and a headless box
    cannot show), its preview listening on ``preview_port`` and its recorder writing into
    ``recordings``."""
    tables = re.split(r"(?m)^(?=\[blocks\.)", DEMO_GRAPH.read_text(encoding="utf-8"))
    added = {
        "recorder": f'directory = "{recordings}"\n',
        "preview": f'listen = "127.0.0.1:{preview_port}"\n{preview_extra}',
    }
    text = ""
    for table in tables:
        found = re.match(r"\[blocks\.(\w+)\]", table)
        name = found[1] if found else None
        if name == "screen":
            continue
        if name in added:
            head, _, rest = table.partition("\n")
            table = f"{head}\n{added[name]}{rest}"
        text += table
    return text
