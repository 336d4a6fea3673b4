"""User blocks whose class checks misbehave when the daemon asks them (the module itself
imports cleanly)."""

from __future__ import annotations

import os
import sys
import time

from pipelined.workers.block import Block, Param


class _Source(Block):
    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params, input_bytes):
        return 48


class ExitsInValidate(_Source):
    @classmethod
    def validate(cls, params):
        sys.exit("validate would rather end the program")


class DiesInValidate(_Source):
    @classmethod
    def validate(cls, params):
        os._exit(5)


class HangsInValidate(_Source):
    @classmethod
    def validate(cls, params):
        time.sleep(3600)
        return []


def _hang(value):
    time.sleep(3600)


class HangsInCheck(_Source):
    params = {"x": Param(int, default=1, check=_hang)}


class HugeProblems(_Source):
    @classmethod
    def validate(cls, params):
        return ["p" * 100_000] * 10_000  # a gigabyte of problems, if it all came back


from pipelined.workers.blocks.recorder import Recorder  # noqa: E402


class MyRecorder(Recorder):
    """A user's recorder: the daemon knows it for one without importing it."""
