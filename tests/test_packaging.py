"""The distribution ships every package and every file the code reads at run time.

An editable install (the venv of development) reads the source tree and would hide a
missing one; the .deb installs with a plain ``pip install .``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PARTS = {"daemon": "pipelined/daemon", "workers": "pipelined/workers", "ctl": "pipelined/ctl"}
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")


def test_every_package_directory_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"


def test_the_wheel_holds_every_file_of_daemon_workers_and_ctl(tmp_path: Path) -> None:
    """Built as ``pip install .`` builds it, from a copy of the source: a data file such
    as the demo's graph or the page's static files is there only if package-data says so."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for part in PARTS:
        shutil.copytree(ROOT / part, src / part, ignore=NOT_SHIPPED)
    wanted = {
        f"{PARTS[part]}/{path.relative_to(src / part).as_posix()}"
        for part in PARTS
        for path in (src / part).rglob("*")
        if path.is_file()
    }
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0 and "No matching distribution found" in done.stderr:
        pytest.skip(f"building a wheel needs setuptools from the package index: {done.stderr}")
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("pipelined-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert wanted - shipped == set(), "add these to [tool.setuptools.package-data]"


def test_the_packaged_graph_cannot_fill_the_disk_and_says_what_each_block_does(
    tmp_path: Path,
) -> None:
    """/etc/pipelined/graph.toml as installed: it loads, each block has a comment above
    it, and its recorder keeps at most 256 MiB for at most a day and leaves room."""
    from pipelined.daemon.graph import load_graph

    path = ROOT / "packaging" / "graph.toml"
    graph = load_graph(path, tmp_path)
    recorders = [b for b in graph.blocks.values() if b.type == "recorder"]
    assert recorders
    for spec in recorders:
        limits = spec.params
        assert 0 < limits["max_total_bytes"] <= 256 * 2**20
        assert 0 < limits["max_age_seconds"] <= 86400
        assert limits["min_free_bytes"] >= 256 * 2**20
        assert limits["directory"] == str(tmp_path / "recordings")
    lines = path.read_text().splitlines()
    for name in graph.blocks:
        at = lines.index(f"[blocks.{name}]")
        assert lines[at - 1].startswith("# "), f"say above [blocks.{name}] what it does"
    text = path.read_text()
    assert "/dev/video0" in text and "rtsp://" in text  # how to point it at a real camera
    assert "/var/lib/pipelined/main/recordings" in text
