"""Graph loading: every rejection names the file, the block and the reason."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import posix_ipc
import pytest

from pipelined.daemon import graph as graph_mod
from pipelined.daemon.graph import (
    BUILTIN_SOURCE,
    DEMO_GRAPH,
    MAX_SLOT_BYTES,
    Graph,
    GraphError,
    Supervision,
    default_graph,
    describe,
    load_graph,
    parse_graph,
    wire_bytes,
)
from pipelined.workers.ipc import wire
from pipelined.workers.ipc.segment import all_entries

TESTS = Path(__file__).parent
EXAMPLE = TESTS.parent / "examples" / "five-blocks.toml"
U = "userblocks.graph_blocks"  # tests/userblocks/graph_blocks.py


def block(name: str, cls: str, *lines: str) -> str:
    """A [blocks.NAME] table of one of the test user blocks."""
    return "\n".join([f"[blocks.{name}]", f'type = "{U}:{cls}"', *lines, ""])


SOURCE = block("src", "Source")  # 64 x 48 x 3 bytes


@pytest.fixture(autouse=True)
def user_blocks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def load(tmp_path: Path, text: str) -> Graph:
    path = tmp_path / "graph.toml"
    path.write_text(text)
    return load_graph(path)


def rejected(tmp_path: Path, text: str, where: str | None, *words: str) -> str:
    """Expect ``text`` refused with a problem that names the file, the block ``where``
    (None: the graph as a whole) and every word. Returns all the problems."""
    with pytest.raises(GraphError) as info:
        load(tmp_path, text)
    problems = info.value.problems
    assert str(info.value) == "\n".join(problems)
    assert all(p.startswith(f"{tmp_path / 'graph.toml'}: ") for p in problems)
    head = f"block {where!r}: " if where else ""
    assert any(head in p and all(w in p for w in words) for p in problems), (
        f"no problem with {head!r} and {words} in:\n{info.value}"
    )
    return str(info.value)


# -- rejections -----------------------------------------------------------------------


def test_invalid_toml_gives_line_and_column(tmp_path: Path) -> None:
    rejected(tmp_path, SOURCE + "width = \n", None, "not valid TOML", "line 3", "column")


def test_unknown_top_level_table(tmp_path: Path) -> None:
    text = SOURCE + "[supervisr]\nrestart = 'never'\n"
    rejected(tmp_path, text, None, "unknown top-level key 'supervisr'", "'supervisor'")


def test_no_blocks(tmp_path: Path) -> None:
    rejected(tmp_path, "[supervisor]\nrestart = 'never'\n", None, "no blocks")


def test_unknown_block_type(tmp_path: Path) -> None:
    rejected(tmp_path, '[blocks.cam]\ntype = "kamera"\n', "cam", "unknown block type 'kamera'")
    rejected(tmp_path, "[blocks.cam]\nfps = 3\n", "cam", "no type")


def test_unknown_parameter_suggests_the_closest(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Filter", 'input = "src"', "hihg = 3")
    rejected(tmp_path, text, "f", "unknown parameter 'hihg'", "did you mean 'high'")
    text = SOURCE + block("f", "Filter", 'input = "src"', "zzz = 3")
    rejected(tmp_path, text, "f", "unknown parameter 'zzz'", "it takes: low, high")


def test_unknown_parameter_of_a_builtin(tmp_path: Path) -> None:
    text = '[blocks.camera]\ntype = "camera"\nsource = "testsrc"\nfsp = 30\n'
    rejected(tmp_path, text, "camera", "unknown parameter 'fsp'", "did you mean 'fps'")


def test_missing_required_parameter(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Labelled", 'input = "src"')
    rejected(tmp_path, text, "f", "missing parameter 'label'", "a name for the overlay")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("low = 300", ("parameter 'low'", "between 0 and 255", "300")),
        ("low = 'dark'", ("parameter 'low'", "an integer", "'dark'")),
        ("low = 2.0", ("parameter 'low'", "an integer", "2.0")),
    ],
)
def test_wrong_parameter_type_or_range(tmp_path: Path, setting: str, words: tuple) -> None:
    rejected(tmp_path, SOURCE + block("f", "Filter", 'input = "src"', setting), "f", *words)


def test_wrong_parameter_of_a_builtin(tmp_path: Path) -> None:
    text = (
        '[blocks.camera]\ntype = "camera"\nsource = "testsrc"\n'
        '[blocks.red]\ntype = "color_filter"\ninput = "camera"\nhsv_low = "red"\n'
    )
    rejected(tmp_path, text, "red", "parameter 'hsv_low'", "array", "'red'")


def test_block_validate_problems_are_reported_per_block(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Filter", 'input = "src"', "low = 9", "high = 3")
    rejected(tmp_path, text, "f", "low (9) must not be above high (3)")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("restart", '"sometimes"', ("always, on-failure, never", "'sometimes'")),
        ("backoff_initial", "-1", (">= 0", "-1")),
        ("watchdog", '"5"', ("number", "'5'")),
        ("stop_timeout", "nan", ("number", "nan")),
        ("restart_limit", "1.5", ("integer", "1.5")),
        ("restart_limit", "true", ("integer", "true")),
        ("liveness_interval", "0", ("more than 0",)),
    ],
)
def test_wrong_supervisor_key(tmp_path: Path, key: str, value: str, words: tuple) -> None:
    setting = f"{key} = {value}"
    rejected(tmp_path, f"[supervisor]\n{setting}\n" + SOURCE, None, "[supervisor]", key, *words)
    rejected(tmp_path, block("src", "Source", setting), "src", key, *words)


def test_unknown_supervisor_key(tmp_path: Path) -> None:
    text = "[supervisor]\nwatchdgo = 1\n" + SOURCE
    rejected(tmp_path, text, None, "[supervisor]", "'watchdgo'", "did you mean 'watchdog'")


def test_input_that_names_no_block(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Filter", 'input = "sr"')
    rejected(tmp_path, text, "f", "input 'sr' names no block", "did you mean 'src'")


def test_block_reading_itself(tmp_path: Path) -> None:
    rejected(tmp_path, SOURCE + block("f", "Merge", 'inputs = ["src", "f"]'), "f", "reads itself")


def test_cycle_names_its_blocks(tmp_path: Path) -> None:
    loop = [("a", "c"), ("b", "a"), ("c", "b")]  # a reads c, b reads a, c reads b
    text = SOURCE + "".join(block(n, "Merge", f'inputs = ["src", "{i}"]') for n, i in loop)
    problems = rejected(tmp_path, text, "a", "is in a cycle: a -> b -> c -> a")
    assert problems.count("is in a cycle") == 1


def test_reading_a_block_without_output(tmp_path: Path) -> None:
    text = SOURCE + block("sink", "Sink", 'input = "src"') + block("f", "Filter", 'input = "sink"')
    rejected(tmp_path, text, "f", "input 'sink'", "has no output")


@pytest.mark.parametrize(
    ("cls", "wiring", "words"),
    [
        ("Filter", 'inputs = ["src", "src2"]', ("exactly 1 input", "not 2")),
        ("Filter", "", ("exactly 1 input", "not 0")),
        ("Merge", 'input = "src"', ("at least 2 inputs", "not 1")),
        ("Source", 'input = "src"', ("no inputs", "not 1")),
    ],
)
def test_wrong_number_of_inputs(tmp_path: Path, cls: str, wiring: str, words: tuple) -> None:
    text = SOURCE + block("src2", "Source") + block("x", cls, wiring)
    rejected(tmp_path, text, "x", *words)


def test_input_and_inputs_both_set(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Filter", 'input = "src"', 'inputs = ["src"]')
    assert "\n" not in rejected(tmp_path, text, "f", "both input and inputs")  # no pile-on
    text = SOURCE + block("f", "Filter", 'inputs = "src"')
    rejected(tmp_path, text, "f", "inputs must be an array of block names")


def test_the_same_input_twice(tmp_path: Path) -> None:
    text = SOURCE + block("m", "Merge", 'inputs = ["src", "src"]')
    rejected(tmp_path, text, "m", "reads 'src' more than once")


def test_invalid_block_name(tmp_path: Path) -> None:
    rejected(tmp_path, block('"my.cam"', "Source"), "my.cam", "not valid", "no dots")
    rejected(tmp_path, "[blocks]\ncam = 3\n", "cam", "must be a table")


def test_max_frame_bytes_smaller_than_the_input_it_passes_on(tmp_path: Path) -> None:
    text = SOURCE + block("f", "Filter", 'input = "src"', "max_frame_bytes = 1000")
    rejected(tmp_path, text, "f", "max_frame_bytes = 1000", f"up to {64 * 48 * 3} bytes")


def test_max_frame_bytes_must_be_a_positive_integer(tmp_path: Path) -> None:
    for value, word in [("0", "> 0"), ("1.5", "integer"), ("true", "integer")]:
        text = block("src", "Source", f"max_frame_bytes = {value}")
        rejected(tmp_path, text, "src", "max_frame_bytes", word)
    text = SOURCE + block("sink", "Sink", 'input = "src"', "max_frame_bytes = 10")
    rejected(tmp_path, text, "sink", "no output", "max_frame_bytes")


def test_source_that_cannot_size_its_frames(tmp_path: Path) -> None:
    text = block("bare", "BareSource")
    rejected(tmp_path, text, "bare", "BareSource does not say", "set max_frame_bytes")
    assert load(tmp_path, text + "max_frame_bytes = 4096\n").blocks["bare"].frame_bytes == 4096


def test_frame_larger_than_a_wire_takes(tmp_path: Path) -> None:
    text = block("src", "Source", "width = 20000", "height = 20000")
    rejected(tmp_path, text, "src", "1200000000 bytes", "1144.4 MiB", "512.0 MiB")
    text = block("src", "Source", f"max_frame_bytes = {MAX_SLOT_BYTES + 1}")
    rejected(tmp_path, text, "src", f"{MAX_SLOT_BYTES + 1} bytes", "512.0 MiB")


def test_graph_larger_than_free_shared_memory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(graph_mod, "_shm_free", lambda: 10_000)
    need = f"{wire_bytes(64 * 48 * 3, readers=0) / 1024:.1f} KiB"
    rejected(tmp_path, SOURCE, None, f"wires need {need}", "/dev/shm has only 9.8 KiB free")


def test_user_block_that_fails_to_import(tmp_path: Path) -> None:
    text = '[blocks.mine]\ntype = "userblocks.graph_broken:Thing"\n'
    rejected(tmp_path, text, "mine", "cannot import", "RuntimeError: boom while importing")
    text = '[blocks.mine]\ntype = "userblocks.no_such_module:Thing"\n'
    rejected(tmp_path, text, "mine", "cannot import", "ModuleNotFoundError")
    rejected(tmp_path, block("mine", "Nope"), "mine", "has no class 'Nope'")
    rejected(tmp_path, block("mine", "NotABlock"), "mine", "not a block")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "[supervisor]\nrestart = 'maybe'\n" + '[blocks.cam]\ntype = "kamera"\n'
    text += block("f", "Labelled", 'input = "nowhere"', "low = -1")
    with pytest.raises(GraphError) as info:
        load(tmp_path, text)
    assert len(info.value.problems) == 5, info.value  # restart, type, label, low, input


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match=r"nothere\.toml: cannot read the graph file"):
        load_graph(tmp_path / "nothere.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(GraphError, match=r"bin\.toml: the graph file is not UTF-8"):
        load_graph(tmp_path / "bin.toml")


def test_loading_creates_nothing_in_dev_shm(tmp_path: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("loading a graph created a kernel object")

    # The patches catch it even when other runs on the box change /dev/shm meanwhile.
    for name in ("SharedMemory", "Semaphore"):
        monkeypatch.setattr(posix_ipc, name, refuse)
    before = all_entries()
    with pytest.raises(GraphError):
        load(tmp_path, block("src", "Source", "width = -3"))
    assert all_entries() == before
    load(tmp_path, EXAMPLE.read_text())
    default_graph()
    assert all_entries() == before


# -- what a good graph gives ----------------------------------------------------------


def test_supervisor_defaults_and_per_block_overrides(tmp_path: Path) -> None:
    text = "[supervisor]\nrestart = 'on-failure'\nwatchdog = 2\n" + SOURCE
    text += block("f", "Filter", 'input = "src"', "restart = 'never'", "restart_limit = 0")
    text += "backoff_max = 1\n"
    g = load(tmp_path, text)
    assert g.blocks["src"].supervision == Supervision(restart="on-failure", watchdog=2.0)
    f = g.blocks["f"].supervision
    assert f == Supervision(restart="never", watchdog=2.0, restart_limit=0, backoff_max=1.0)
    assert isinstance(f.watchdog, float) and isinstance(f.backoff_max, float)
    assert load(tmp_path, SOURCE).blocks["src"].supervision == Supervision()


def test_block_specs_keep_file_order(tmp_path: Path) -> None:
    text = block("sink", "Sink", 'inputs = ["f", "src"]')
    text += block("f", "Labelled", 'input = "src"', 'label = "x"')
    text += block("src", "Source", "width = 10")
    g = load(tmp_path, text)
    assert list(g.blocks) == ["sink", "f", "src"]
    assert g.order() == ["src", "f", "sink"]
    assert g.readers("src") == ["sink", "f"] and g.readers("sink") == []
    f = g.blocks["f"]
    assert f.name == "f" and f.type == f"{U}:Labelled" and f.cls.__name__ == "Labelled"
    assert U not in sys.modules  # the user's class was asked about, never imported here
    assert f.params == {"low": 0, "high": 255, "label": "x"}
    assert f.inputs == ("src",) and g.blocks["sink"].inputs == ("f", "src")
    assert g.blocks["src"].frame_bytes == 10 * 48 * 3 == f.frame_bytes
    assert g.blocks["sink"].frame_bytes is None
    assert g.source == str(tmp_path / "graph.toml") and g.path == tmp_path / "graph.toml"


def test_max_frame_bytes_raises_a_slot(tmp_path: Path) -> None:
    text = SOURCE + block("small", "Source", "width = 1")
    text += block("m", "Merge", 'inputs = ["small", "src"]', "max_frame_bytes = 100000")
    g = load(tmp_path, text)
    assert g.blocks["m"].frame_bytes == 100000 and "max_frame_bytes" not in g.blocks["m"].params
    assert g.blocks["small"].frame_bytes == 48 * 3


def test_parse_graph_names_its_source() -> None:
    g = parse_graph(SOURCE, "inline")
    assert g.source == "inline" and g.path is None
    with pytest.raises(GraphError, match=r"^inline: block 'src': parameter 'width'"):
        parse_graph(SOURCE + "width = 0\n", "inline")


def test_wire_bytes() -> None:
    assert wire_bytes(1000, readers=2) == wire.wire_bytes(1000, readers=2, slots=4)


# -- the built-in demo ----------------------------------------------------------------


def test_example_file_is_the_built_in_demo() -> None:
    """One graph, one text: the screen waits to be asked, nothing is taken out for the demo."""
    assert EXAMPLE.is_symlink() and EXAMPLE.resolve() == DEMO_GRAPH.resolve()  # one text
    example = load_graph(EXAMPLE)
    built_in = default_graph()
    assert built_in.source == BUILTIN_SOURCE and built_in.path is None
    assert example.blocks == built_in.blocks
    assert list(example.blocks) == ["camera", "red", "edges", "screen", "recorder", "preview"]
    assert example.blocks["camera"].frame_bytes == 640 * 480 * 3
    assert example.blocks["camera"].params["fps"] == 30
    assert example.blocks["red"].inputs == ("camera",)
    assert example.blocks["recorder"].inputs == ("camera",)
    assert example.blocks["recorder"].kinds == ("packets",)  # the camera's H.264, copied
    autostart = {n: b.supervision.autostart for n, b in example.blocks.items()}
    assert [n for n, on in autostart.items() if not on] == ["screen"]


def test_autostart_is_a_supervisor_key(tmp_path: Path) -> None:
    g = load(tmp_path, "[supervisor]\nautostart = false\n" + SOURCE)
    assert g.blocks["src"].supervision.autostart is False
    g = load(tmp_path, SOURCE + "autostart = false\n")
    assert g.blocks["src"].supervision == Supervision(autostart=False)
    with pytest.raises(GraphError, match="block 'src': autostart must be true or false, not 0"):
        load(tmp_path, SOURCE + "autostart = 0\n")


def test_what_a_graph_writes_goes_under_the_state_directory(tmp_path: Path) -> None:
    """A relative recorder folder is placed under the state directory at load: a graph run
    from a clone of the repository does not record into it. An absolute one stays."""
    state = tmp_path / "state"
    placed = load_graph(EXAMPLE, state)
    assert placed.state_dir == state
    assert placed.blocks["recorder"].params["directory"] == str(state / "recordings")
    assert default_graph(state).blocks["recorder"].params == placed.blocks["recorder"].params
    assert load_graph(EXAMPLE).blocks["recorder"].params["directory"] == "recordings"
    text = '[blocks.rec]\ntype = "recorder"\ninput = "src"\ndirectory = "/srv/rec"\n'
    g = parse_graph(SOURCE + text, "g", None, state)
    assert g.blocks["rec"].params["directory"] == "/srv/rec"
    unplaced = {n: b for n, b in load_graph(EXAMPLE).blocks.items() if n != "recorder"}
    assert {n: b for n, b in placed.blocks.items() if n != "recorder"} == unplaced


def test_describe() -> None:
    text = describe(default_graph())
    assert text.startswith("<built-in>: 6 blocks, 3 wires, 1 packet wires")
    red = "red (color_filter) <- camera: frames up to 900.0 KiB, read by screen, preview"
    assert red in text
    assert "packets in" in text and "read by recorder" in text
    assert "recorder (recorder) <- camera" in text
    assert "fps = 30" in text
    assert "autostart = false" in text  # the screen's, a supervisor key it changes
    g = dataclasses.replace(default_graph(), source="x.toml")
    assert describe(g).startswith("x.toml: 6 blocks")


def test_describe_hides_secrets(tmp_path: Path) -> None:
    """--check output gets pasted into tickets: no camera password, no preview token."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[blocks.camera]\ntype = "camera"\nsource = "rtsp://bob:s3cret@cam/x"\n'
        '[blocks.preview]\ntype = "preview"\ninput = "camera"\ntoken = "t0ken"\n'
    )
    text = describe(load_graph(path))
    assert "s3cret" not in text and "t0ken" not in text
    assert "rtsp://bob:***@cam/x" in text


def test_parameters_too_large_for_a_command_line(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(f'[blocks.cam]\ntype = "camera"\nsource = "{"x" * 140_000}.mp4"\n')
    with pytest.raises(GraphError) as err:
        load_graph(path)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}: block 'cam': its parameters ")
    assert "config['source']" in problem and "to a file" in problem.lower()
