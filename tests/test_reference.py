"""``pipelined blocks``: the reference is made from the declarations, and docs/blocks.md is it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelined.daemon import reference
from pipelined.workers.registry import BUILTIN

DOCS = Path(__file__).resolve().parents[1] / "docs" / "blocks.md"
PIPELINED = [sys.executable, "-m", "pipelined.daemon.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIPELINED, *args], capture_output=True, text=True, timeout=60)


def test_docs_blocks_md_is_what_the_declarations_say() -> None:
    assert DOCS.read_text() == reference.markdown(), (
        "docs/blocks.md is stale: run `pipelined blocks --markdown > docs/blocks.md`"
    )


def test_the_listing_names_every_built_in_type() -> None:
    done = run("blocks")
    assert done.returncode == 0, done.stderr
    for name in BUILTIN:
        assert f"\n  {name} " in done.stdout
    assert "[supervisor]" in done.stdout


def test_one_type_shows_each_parameter_with_its_type_default_range_and_meaning() -> None:
    done = run("blocks", "edge_detector")
    assert done.returncode == 0, done.stderr
    assert "Inputs:  exactly 1" in done.stdout and "Outputs: frames" in done.stdout
    assert "blur (an integer, default 5; 0, or an odd number from 3 to 31)" in done.stdout
    assert "low (a number, default 50.0; 0 to 2000)\n      lower hysteresis threshold" in (
        done.stdout
    )


def test_a_user_block_and_the_supervisor_keys() -> None:
    done = run("blocks", "userblocks.runtime_blocks:Counter")
    assert done.returncode == 0, done.stderr
    assert "fps (a number, default 50.0; 0.1 to 10000)" in done.stdout
    assert "Inputs:  none (a source)" in done.stdout
    done = run("blocks", "supervisor")
    assert "retry_failed_after (a number, default 300.0)" in done.stdout


def test_an_unknown_type_says_what_there_is() -> None:
    done = run("blocks", "nosuch")
    assert done.returncode == 1
    assert "unknown block type 'nosuch'" in done.stderr and "camera" in done.stderr


def test_a_path_the_block_writes_and_autostart_say_where_and_when() -> None:
    done = run("blocks", "recorder")
    assert 'directory (a string, default "recordings"; a path; a relative one is under' in (
        done.stdout
    )
    done = run("blocks", "supervisor")
    assert "autostart (true or false, default true)" in done.stdout
