"""The control protocol's encoding: requests and replies as lines of JSON, what a bad
request is, and the type checks of a command's arguments. No socket here: how the
server meets the same inputs is in test_control_server.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipelined.ctl.protocol import (
    BAD_REQUEST,
    NO_SUCH_BLOCK,
    BadRequest,
    CommandError,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
)
from pipelined.daemon.commands.args import get_arg, get_blocks


def test_request_and_reply_round_trip() -> None:
    line = encode_request("stop", {"blocks": ["red"]}, id="a-1")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = decode_request(line)
    assert (request.cmd, request.args, request.id) == ("stop", {"blocks": ["red"]}, "a-1")
    assert decode_request(b'{"cmd": "hello"}').args == {}
    assert decode_request(b'{"cmd": "hello", "args": null}').args == {}
    reply = decode_reply(encode_result(7, {"x": "é\n"}))
    assert (reply.id, reply.ok, reply.unwrap()) == (7, True, {"x": "é\n"})
    error = decode_reply(encode_error(None, NO_SUCH_BLOCK, "no block named 'x'"))
    with pytest.raises(CommandError) as info:
        error.unwrap()
    assert (info.value.code, info.value.message) == (NO_SUCH_BLOCK, "no block named 'x'")
    assert encode_result(1, "é\u2028").isascii()  # never a raw newline or non-ASCII byte
    with pytest.raises(ValueError):
        encode_result(1, float("nan"))


@pytest.mark.parametrize(
    ("line", "request_id"),
    [
        (b"", None),
        (b"status", None),
        (b"\xff\xfe{}", None),
        (b'\xef\xbb\xbf{"cmd": "hello"}', None),  # a BOM is not JSON
        (b"[1, 2]", None),
        (b'"hello"', None),
        (b'{"cmd": 3}', None),
        (b'{"id": [1], "cmd": "hello"}', None),
        (b'{"id": {"a": 1}, "cmd": "hello"}', None),
        (b'{"id": 5, "cmd": "hello", "args": [1]}', 5),
        (b'{"id": "q", "cmd": "stop", "arg": {"blocks": ["red"]}}', "q"),  # a typo: not all
        (b'{"id": 1, "cmd": "x", "args": {"v": NaN}}', None),
        (b"[" * 200_000 + b"]" * 200_000, None),
        (b'{"id": ' + b"9" * 5000 + b', "cmd": "x"}', None),
    ],
)
def test_invalid_requests_are_bad_request(line: bytes, request_id: Any) -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(line)
    assert info.value.code == BAD_REQUEST
    assert info.value.request_id == request_id


def test_get_arg_checks_types() -> None:
    assert get_arg({"n": 3}, "n", int) == 3
    assert get_arg({}, "n", int, 7) == 7
    for args in ({"n": True}, {"n": "3"}, {"n": 3.5}, {}):
        with pytest.raises(CommandError) as info:
            get_arg(args, "n", int)
        assert info.value.code == BAD_REQUEST
    assert get_blocks({}) == [] and get_blocks({"blocks": ["a-1", "B_2"]}) == ["a-1", "B_2"]
    for bad in ("red", [1], ["a.b"], [""], None):
        with pytest.raises(CommandError):
            get_blocks({"blocks": bad})
