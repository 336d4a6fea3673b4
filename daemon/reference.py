"""``pipelined blocks [TYPE]``: every block type and key, from the declarations themselves.

As ``gst-inspect-1.0`` does for GStreamer's elements: with no argument, the built-in
block types, one line each; with a type (a built-in, or ``module:Class`` for your own),
its inputs, outputs and every parameter's type, default, allowed values and meaning;
``supervisor`` gives the ``[supervisor]`` keys. ``--markdown`` prints all of it as
docs/blocks.md, which a test keeps equal to this output: the reference cannot drift from
the ``Param`` declarations it is made from.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from pipelined.workers.block import REQUIRED, Block, Param, rule_text, type_names
from pipelined.workers.registry import BUILTIN, BlockTypeError, resolve

from .graph import BLOCK_KEYS, Supervision

SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Key:
    """One line of a reference table."""

    name: str
    type: str
    default: str
    allowed: str
    meaning: str


@dataclass(frozen=True)
class BlockType:
    """What a user needs to know of one block type to write it into a graph."""

    name: str
    summary: str
    description: str
    inputs: str
    outputs: str
    keys: list[Key]


def describe(type_name: str, cls: type[Block]) -> BlockType:
    doc = inspect.cleandoc(cls.__doc__ or "").replace("``", "`")
    summary, _, rest = doc.partition("\n\n")
    return BlockType(
        type_name,
        " ".join(summary.split()),
        rest.strip(),
        _inputs(cls),
        _outputs(cls),
        [_key(name, param) for name, param in cls.params.items()],
    )


def supervisor_keys() -> list[Key]:
    return [
        Key(f.name, type_names((type(f.default),)), _value(f.default), "", f.metadata["doc"])
        for f in fields(Supervision)
    ]


def _key(name: str, param: Param) -> Key:
    types = param.types if isinstance(param.types, tuple) else (param.types,)
    default = "required" if param.default is REQUIRED else _value(param.default)
    allowed = rule_text(param.check)
    if param.state_path:
        where = "a path; a relative one is under the daemon's state directory"
        allowed = f"{allowed}; {where}" if allowed else where
    return Key(name, type_names(types), default, allowed, param.doc)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return repr(value)


def _inputs(cls: type[Block]) -> str:
    low, high = cls.min_inputs, cls.max_inputs
    if high == 0:
        return "none (a source)"
    if high is None:
        return f"{low} or more" if low else "any number"
    return f"exactly {low}" if low == high else f"{low} to {high}"


def _outputs(cls: type[Block]) -> str:
    out = "frames" if cls.has_output else "none (a sink)"
    # Overridden: the classmethod found first along cls's MRO is not Block's own.
    if inspect.getattr_static(cls, "packet_bytes") is not vars(Block)["packet_bytes"]:
        out += "; encoded packets" + (f", {cls.packets_when}" if cls.packets_when else "")
    return out


def builtins() -> Iterator[BlockType]:
    for name in sorted(BUILTIN):
        yield describe(name, resolve(name))


# -- text, for a terminal --------------------------------------------------------------------


def text_listing(types: list[BlockType]) -> str:
    width = max(len(t.name) for t in types)
    lines = ["Built-in block types (pipelined blocks TYPE for one, with its parameters):", ""]
    lines += [f"  {t.name:<{width}}  {t.summary}" for t in types]
    lines += [
        "",
        'Your own block: type = "package.module:Class" (pipelined blocks module:Class).',
        f"Every block also takes: {', '.join(BLOCK_KEYS)}, and the [supervisor] keys"
        " (pipelined blocks supervisor).",
    ]
    return "\n".join(lines)


def text_block(t: BlockType) -> str:
    lines = [f"{t.name}: {t.summary}", ""]
    if t.description:
        lines += [t.description, ""]
    lines += [f"Inputs:  {t.inputs}", f"Outputs: {t.outputs}", ""]
    if not t.keys:
        lines.append("Parameters: none")
    else:
        lines.append("Parameters:")
        for k in t.keys:
            allowed = f"; {k.allowed}" if k.allowed else ""
            lines.append(f"  {k.name} ({k.type}, default {k.default}{allowed})")
            if k.meaning:
                lines.append(f"      {k.meaning}")
    return "\n".join(lines)


def text_supervisor() -> str:
    lines = ["[supervisor] keys: defaults for every block; each may also be set per block.", ""]
    for k in supervisor_keys():
        lines += [f"  {k.name} ({k.type}, default {k.default})", f"      {k.meaning}"]
    return "\n".join(lines)


# -- Markdown, for docs/blocks.md ------------------------------------------------------------


def markdown() -> str:
    types = list(builtins())
    out = [
        "# Block reference",
        "",
        "Generated by `pipelined blocks --markdown` from the blocks' own declarations",
        "(`tests/test_reference.py` fails when this file is stale). The graph file's format",
        "is in [design.md](design.md).",
        "",
        "| type | what it is |",
        "|---|---|",
        *[f"| [`{t.name}`](#{t.name.replace('_', '-')}) | {_cell(t.summary)} |" for t in types],
        "",
        "## Keys of every block",
        "",
        "| key | meaning |",
        "|---|---|",
        *[f"| `{k}` | {_cell(v)} |" for k, v in BLOCK_KEYS.items()],
        "",
        "and the `[supervisor]` keys below, which a block may set for itself.",
        "",
        "## `[supervisor]`",
        "",
        _table(supervisor_keys(), allowed=False),
    ]
    for t in types:
        out += ["", f"## {t.name}", "", t.summary, ""]
        if t.description:
            out += [t.description, ""]
        out += [f"- inputs: {t.inputs}", f"- outputs: {t.outputs}", ""]
        out.append(_table(t.keys) if t.keys else "No parameters.")
    return "\n".join(out) + "\n"


def _table(keys: list[Key], allowed: bool = True) -> str:
    head = "| key | type | default |" + (" allowed |" if allowed else "") + " meaning |"
    rule = "|---|---|---|" + ("---|" if allowed else "") + "---|"
    rows = [
        f"| `{k.name}` | {k.type} | `{k.default}` |"
        + (f" {_cell(k.allowed)} |" if allowed else "")
        + f" {_cell(k.meaning)} |"
        for k in keys
    ]
    return "\n".join([head, rule, *rows])


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- the command ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:  # `pipelined blocks | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelined blocks",
        description="The block types and their parameters, from their declarations.",
    )
    parser.add_argument("type", nargs="?", help="a built-in type, module:Class, or supervisor")
    parser.add_argument("--markdown", action="store_true", help="all of it, as docs/blocks.md")
    return parser


def _run(argv: list[str]) -> int:
    opts = build_parser().parse_args(argv)
    if opts.markdown:
        sys.stdout.write(markdown())
        return 0
    if opts.type is None:
        print(text_listing(list(builtins())))
        return 0
    if opts.type == SUPERVISOR:
        print(text_supervisor())
        return 0
    try:
        cls = resolve(opts.type)
    except BlockTypeError as exc:
        print(f"pipelined blocks: {exc}", file=sys.stderr)
        return 1
    print(text_block(describe(opts.type, cls)))
    return 0
