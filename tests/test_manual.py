"""The man pages are made from the programs' parsers, docs/design.md and the block
reference, and packaging/man/ is what they make (as docs/blocks.md for the reference)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelined.ctl.main import build_parser as pipectl_parser
from pipelined.daemon import manual
from pipelined.daemon.main import build_parser as pipelined_parser
from pipelined.workers.registry import BUILTIN

MAN = Path(__file__).resolve().parents[1] / "packaging" / "man"
REMAKE = "python -m pipelined.daemon.manual packaging/man"


def test_packaging_man_is_what_the_sources_make() -> None:
    made = manual.pages()
    assert sorted(p.name for p in MAN.iterdir()) == sorted(made)
    for name, page in made.items():
        assert (MAN / name).read_text() == page, f"packaging/man/{name} is stale: run `{REMAKE}`"


def test_every_option_verb_and_block_type_is_in_its_page() -> None:
    pages = manual.pages()
    for action in pipelined_parser()._actions:
        for option in action.option_strings:
            assert f"\\fB{manual.text(option)}\\fR" in pages["pipelined.8"], option
    verbs = pipectl_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for verb in verbs:
        assert f'.SS "{verb}"' in pages["pipectl.1"], verb
    for name in BUILTIN:
        assert f'.SS "{name}"' in pages["pipelined.graph.5"], name
    assert "/etc/default/pipelined" in pages["pipelined.8"]


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_renders_each_page_without_a_warning() -> None:
    """What lintian's manpage-has-errors-from-man runs."""
    for name in manual.PAGES:
        done = subprocess.run(
            ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(MAN / name)],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"},
            timeout=60,
        )
        assert done.returncode == 0 and done.stderr == "", (name, done.stderr)
