"""Argument types for pipectl's parsers: names checked by the rules every part shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipelined.workers.ipc.names import check_block, check_instance


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


instance = _checked(check_instance)
block = _checked(check_block)


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value
