"""The argument codec: exact round trips, clear refusals, the kernel's limit, secrets."""

from __future__ import annotations

import copy
import datetime
import enum
import errno
import math
import subprocess
import sys
import tomllib
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelined.workers.codec import MAX_ARG_BYTES, CodecError, decode, encode
from pipelined.workers.contract import SECRET_PLACEHOLDER, merge_secrets, redact, split_secrets

TAGS = ["$tuple", "$bytes", "$date", "$datetime", "$time", "$int", "$dict", "$", "$x"]


def same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down; nan equals nan, -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) in (datetime.datetime, datetime.time):
        return (a.isoformat(), a.fold, a.tzname()) == (b.isoformat(), b.fold, b.tzname())
    return a == b


def test_same_is_strict_enough_to_trust() -> None:
    assert same(math.nan, math.nan) and same([{"a": (1,)}], [{"a": (1,)}])
    assert not same(-0.0, 0.0)
    assert not same(1, 1.0) and not same(1, True) and not same([1], (1,))
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    utc, plus0 = datetime.UTC, datetime.timezone(datetime.timedelta(hours=1))
    assert not same(
        datetime.datetime(2024, 1, 1, 1, tzinfo=plus0), datetime.datetime(2024, 1, 1, tzinfo=utc)
    )
    assert not same(datetime.time(1), datetime.time(1, fold=1))


def round_trip(value: object) -> object:
    text = encode(value)
    assert text.isascii() and text.isprintable(), text
    return decode(text)


# -- strategies ------------------------------------------------------------------------

characters = st.characters(codec=None, exclude_categories=()) | st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\n", "$", '"', "\\", "é", "\U0001f4f7"]
)
texts = st.text(characters, max_size=20)
keys = texts | st.sampled_from(TAGS)
huge_ints = st.builds(
    lambda bits, low, sign: sign * ((1 << bits) + low),
    st.integers(0, 20_000),  # 20,000 bits is 6,000 digits, past Python's 4,300-digit cap
    st.integers(0, 2**64),
    st.sampled_from([1, -1]),
)
edge_ints = st.sampled_from([2**1024 - 1, 2**1024, -(2**1024), 2**63, -(2**63) - 1])
offsets = st.timedeltas(
    min_value=-datetime.timedelta(hours=24) + datetime.timedelta(microseconds=1),
    max_value=datetime.timedelta(hours=24) - datetime.timedelta(microseconds=1),
)
fixed_zones = st.none() | st.just(datetime.UTC) | st.builds(datetime.timezone, offsets)
folds = st.sampled_from([0, 1])
datetimes = st.builds(lambda d, f: d.replace(fold=f), st.datetimes(timezones=fixed_zones), folds)
times = st.builds(lambda t, f: t.replace(fold=f), st.times(timezones=fixed_zones), folds)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    edge_ints,
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e16]),
    texts,
    st.binary(max_size=40),
    st.dates(),
    datetimes,
    times,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)


# -- round trips -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(values)
def test_every_value_round_trips_exactly(value: object) -> None:
    assert same(round_trip(value), value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(TAGS), values, min_size=1, max_size=1))
def test_a_dict_whose_only_key_looks_like_a_tag_stays_a_dict(value: dict) -> None:
    assert same(round_trip(value), value)


GRAPH = """
[blocks.camera]
type = "camera"
source = "testsrc"
size = [640, 480]
fps = 29.97
enabled = true
gain = -0.0
limits = [nan, inf, -inf]
installed = 1979-05-27T07:32:00Z
local = 1979-05-27T00:32:00.999999-07:00
naive = 1979-05-27T07:32:00
day = 1979-05-27
at = 07:32:00.5
matrix = [[1, 2], [3.5, "x"], []]
"$tuple" = { "$bytes" = "not bytes" }
"""


def test_a_graph_file_round_trips() -> None:
    config = tomllib.loads(GRAPH)
    assert same(round_trip(config), config)


@pytest.mark.parametrize(
    "value",
    [
        -0.0,
        math.nan,
        (math.inf, -math.inf),
        2**20_000,
        -(2**1025) + 7,
        "\ud800\x00\udfff",
        b"\x00\xff" * 3,
        b"",
        [True, 1, 1.0, "1", None],
        ((), [], {}, ((),)),
        {"$tuple": [1, 2]},
        {"$dict": {"$dict": {}}},
        {"$int": "ff", "other": 1},
        datetime.datetime(2024, 10, 27, 2, 30, fold=1),
        datetime.datetime(
            1, 1, 1, tzinfo=datetime.timezone(-datetime.timedelta(hours=23, seconds=1))
        ),
        datetime.time(23, 59, 59, 999999, tzinfo=datetime.UTC),
        datetime.time(tzinfo=datetime.timezone(-datetime.timedelta(microseconds=1))),
        datetime.date(9999, 12, 31),
    ],
    ids=lambda v: type(v).__name__,
)
def test_edges_round_trip(value: object) -> None:
    assert same(round_trip(value), value)


def test_moderate_nesting_round_trips_and_deep_nesting_is_refused_cleanly() -> None:
    nested: object = "leaf"
    for i in range(100):
        nested = [nested] if i % 2 else {"k": (nested,)}
    assert same(round_trip(nested), nested)
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(CodecError, match="nested too deeply"):
        encode(nested)
    with pytest.raises(CodecError, match="nested too deeply"):
        decode("[" * 100_000 + "]" * 100_000)


# -- refusals --------------------------------------------------------------------------


class Fps(float):
    pass


class Mode(enum.IntEnum):
    FAST = 1


class Zone(datetime.tzinfo):
    def utcoffset(self, dt: object) -> datetime.timedelta:
        return datetime.timedelta(hours=1)


def at_size(leaf: object) -> dict:
    return {"blocks": [0, 1, {"size": leaf}]}


WHERE = "config['blocks'][2]['size']"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "a set is not supported (use a list or tuple)"),
        (frozenset(), "a frozenset is not supported (use a list or tuple)"),
        (object(), "an object is not supported (the codec takes None, bool, int"),
        (1j, "a complex is not supported (store the real and imaginary parts"),
        (bytearray(b"x"), "a bytearray is not supported (use bytes)"),
        (Fps(30.0), "a Fps (a subclass of float) is not supported"),
        (Mode.FAST, "a Mode (a subclass of int) is not supported"),
        (OrderedDict(a=1), "an OrderedDict (a subclass of dict) is not supported"),
        (datetime.datetime(2024, 1, 1, tzinfo=Zone()), "only unnamed fixed UTC offsets round-trip"),
        (
            datetime.time(1, tzinfo=datetime.timezone(datetime.timedelta(hours=1), "CET")),
            "only unnamed fixed UTC offsets round-trip",
        ),
    ],
    ids=lambda v: type(v).__name__,
)
def test_refusals_name_the_path_and_what_to_do(value: object, message: str) -> None:
    with pytest.raises(CodecError) as refused:
        encode(at_size(value))
    assert str(refused.value).startswith(f"cannot encode {WHERE}: ")
    assert message in str(refused.value)


def test_a_non_str_key_is_refused_naming_the_dict_and_the_key() -> None:
    with pytest.raises(CodecError) as refused:
        encode(at_size({"w": 1, 3: "x"}))
    assert str(refused.value).startswith(f"cannot encode {WHERE}: key 3 is an int;")


def test_a_container_inside_itself_is_refused() -> None:
    loop: list = [1]
    loop.append({"again": loop})
    with pytest.raises(CodecError, match=r"config\[1\]\['again'\]: it contains itself"):
        encode(loop)


def test_shared_but_not_cyclic_containers_are_fine() -> None:
    shared = [1, 2]
    assert same(
        round_trip({"a": shared, "b": (shared, shared)}), {"a": [1, 2], "b": ([1, 2], [1, 2])}
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a string encode() wrote"),
        ('{"a":', "not a string encode() wrote"),
        ("1" * 5000, "not a string encode() wrote"),
        ('{"a":1,"a":2}', "the key 'a' appears twice"),
        ('{"a":[{"$date":"2024-13-01"}]}', "cannot decode config['a'][0]: a malformed $date"),
        ('{"$bytes":"!!"}', "cannot decode config: a malformed $bytes"),
        ('{"$datetime":"2024-01-01T00:00:00;fold=2"}', "a malformed $datetime"),
        ('{"$datetime":"2024-01-01T00:00:00Z"}', "a malformed $datetime"),
        ('{"$time":"00:00+24:00"}', "a malformed $time"),
        ('[{"$tuple":{}}]', "cannot decode config[0]: '$tuple' with a dict is not a tag"),
        ('{"$set":[1]}', "'$set' with a list is not a tag encode() writes"),
    ],
)
def test_decode_refuses_what_encode_did_not_write(text: str, message: str) -> None:
    with pytest.raises(CodecError) as refused:
        decode(text)
    assert message in str(refused.value)


# -- the kernel's per-argument limit ---------------------------------------------------


def config_of_size(size: int) -> dict:
    """A configuration that encodes to exactly ``size`` bytes."""
    overhead = len(encode({"blocks": {"lut": {"table": ""}}}))
    return {"blocks": {"lut": {"table": "x" * (size - overhead)}}}


def test_the_limit_is_the_kernels() -> None:
    assert MAX_ARG_BYTES == 128 * 1024 - 1


def test_just_under_the_limit_passes_and_just_over_is_refused_with_advice() -> None:
    assert len(encode(config_of_size(MAX_ARG_BYTES))) == MAX_ARG_BYTES
    with pytest.raises(CodecError) as refused:
        encode(config_of_size(MAX_ARG_BYTES + 1))
    assert str(refused.value).startswith(
        "encoded arguments are 131,072 bytes; the kernel takes at most 131,071 in one argument"
        " (MAX_ARG_STRLEN); the largest part is config['blocks']['lut']['table']"
    )
    assert "move large data" in str(refused.value) and "to a file" in str(refused.value)


def test_an_argument_of_exactly_the_limit_reaches_a_real_process() -> None:
    encoded = encode(config_of_size(MAX_ARG_BYTES))
    shown = subprocess.run(
        [sys.executable, "-c", "import sys; print(len(sys.argv[1]))", encoded],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == str(MAX_ARG_BYTES)


def test_one_byte_more_makes_exec_fail_with_e2big() -> None:
    with pytest.raises(OSError) as failed:
        subprocess.run([sys.executable, "-c", "pass", "x" * (MAX_ARG_BYTES + 1)], check=True)
    assert failed.value.errno == errno.E2BIG


# -- secrets ---------------------------------------------------------------------------


def test_split_hides_url_passwords_and_secret_keys_and_merge_restores_them() -> None:
    config = {
        "blocks": {
            "cam": {
                "source": "rtsp://admin:hunter2@10.0.0.5:554/stream",
                "fallbacks": ("testsrc", "http://viewer:p@ss:w0rd@cam.local/mjpeg"),
                "API_Key": 12345,
                "auth": {"password": "pw", "user": "admin", "upload_token": ["a", "b"]},
            },
            "url/with~odd": {"secret": None},
        }
    }
    public, secrets = split_secrets(config)
    assert public == {
        "blocks": {
            "cam": {
                "source": "rtsp://admin:***@10.0.0.5:554/stream",
                "fallbacks": ("testsrc", "http://viewer:***@cam.local/mjpeg"),
                "API_Key": "***",
                "auth": "***",  # a secret's name: the whole table is hidden
            },
            "url/with~odd": {"secret": "***"},
        }
    }
    assert secrets == {
        "/blocks/cam/source": "rtsp://admin:hunter2@10.0.0.5:554/stream",
        "/blocks/cam/fallbacks/1": "http://viewer:p@ss:w0rd@cam.local/mjpeg",
        "/blocks/cam/API_Key": 12345,
        "/blocks/cam/auth": {"password": "pw", "user": "admin", "upload_token": ["a", "b"]},
        "/blocks/url~1with~0odd/secret": None,
    }
    assert same(merge_secrets(*split_secrets(config)), config)
    assert same(merge_secrets(decode(encode(public)), decode(encode(secrets))), config)


@pytest.mark.parametrize(
    "key",
    [
        *("password", "PASSWORD", "Passwd", "token", "secret", "api_key", "apikey", "API-KEY"),
        *("camera_password", "auth_token", "Client_Secret", "db-password"),
        *("secret_key", "pwd", "passphrase", "auth", "credentials", "apiKey", "x-auth-token"),
        *("clientSecret", "private_key", "Authorization", "dbpassword", "authtoken", "db_pass"),
        *("AWS_SECRET_ACCESS_KEY", "session.cookie", "creds"),
    ],
)
def test_keys_named_like_secrets_are_hidden(key: str) -> None:
    assert split_secrets({key: "s"}) == ({key: SECRET_PLACEHOLDER}, {f"/{key}": "s"})


@pytest.mark.parametrize(
    "key",
    [
        *("user", "tokens", "password_file", "secretary", "keyframe", "max_tokens", "key"),
        *("tokenizer", "passthrough", "bypass", "auth_mode", "hotkey", "sort_key", "fps"),
    ],
)
def test_other_keys_are_not(key: str) -> None:
    assert split_secrets({key: "s"}) == ({key: "s"}, {})


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://admin:hunter2@cam/x", "rtsp://admin:***@cam/x"),
        ("open rtsp://u:p@ss@cam:554/s failed", "open rtsp://u:***@cam:554/s failed"),
        # A password runs to the last "@" (ffmpeg's rule), "/", "?" and "#" included:
        # hiding a path too is the safe side.
        ("a http://u:1@h/ and HTTPS://v:2@k?q=x:y@z", "a http://u:***@h/ and HTTPS://v:***@z"),
        ("rtsp://u:pa#ss@cam/", "rtsp://u:***@cam/"),
        ("rtsp://u:pa?ss/x@cam/", "rtsp://u:***@cam/"),
        ("rtsp://u:pa ss@cam/", "rtsp://u:***@cam/"),  # one URL: spaces too
        ("said rtsp://u:pa#s/s?@cam/ twice", "said rtsp://u:***@cam/ twice"),
        ("git+ssh://me@example.com:pw@host", "git+ssh://me@example.com:***@host"),
        ("rtsp://u:p%40ss%2F@cam", "rtsp://u:***@cam"),
        ("rtsp://cam:554/stream", "rtsp://cam:554/stream"),
        ("http://user@host/", "http://user@host/"),
        ("https://[::1]:8443/x@y", "https://[::1]:8443/x@y"),
        ("rtsp://u:@cam", "rtsp://u:@cam"),
        ("user:pw@host", "user:pw@host"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown


def test_merge_refuses_a_secret_with_no_place() -> None:
    with pytest.raises(CodecError, match="/gone/password have no place"):
        merge_secrets({"kept": 1}, {"/gone/password": "pw"})


MARK = "QZsecret"  # in every secret drawn below and in no other string
plain_texts = texts.filter(lambda s: MARK not in s)
secret_texts = st.builds(lambda s: MARK + s, st.text("abcXYZ019-_.!~*'();&=+$,:@", max_size=8))
urls = st.builds(
    lambda scheme, user, password, host, path: f"{scheme}://{user}:{password}@{host}/{path}",
    st.sampled_from(["rtsp", "http", "https", "rtmp", "git+ssh"]),
    st.text("abcdef.-_@", max_size=6),
    secret_texts,
    st.sampled_from(["cam", "10.0.0.5:554", "[::1]", "cam.local"]),
    st.text("abc/?#:@=", max_size=8),
)
secret_names = st.sampled_from(["password", "Token", "api_key", "rtsp_password", "x-secret"])
secret_values = (
    secret_texts | st.lists(secret_texts, max_size=2) | st.dictionaries(keys, secret_texts)
)
configs = st.recursive(
    st.none() | st.integers() | st.floats() | plain_texts | urls,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys.filter(lambda k: MARK not in k), inner, max_size=4),
        st.dictionaries(secret_names, secret_values, min_size=1, max_size=2),
    ),
    max_leaves=20,
).map(lambda tree: {"block": tree})


@settings(max_examples=200, deadline=None)
@given(configs)
def test_secrets_round_trip_and_never_reach_the_command_line(config: dict) -> None:
    original = copy.deepcopy(config)
    public, secrets = split_secrets(config)
    assert MARK not in encode(public)
    assert same(merge_secrets(public, secrets), config)
    assert same(merge_secrets(decode(encode(public)), decode(encode(secrets))), config)
    assert same(config, original)  # split_secrets left its input alone


def test_redact_takes_linear_time_on_long_text() -> None:
    """A long parameter is not rescanned from every position (that took a minute for
    200 KB); at a megabyte, quadratic time would run past the suite's timeout."""
    text = "x" * 1_000_000 + " rtsp://admin:hunter2@cam/stream"
    assert redact(text).endswith(" rtsp://admin:***@cam/stream")
    # Many URL beginnings in one run, with no "@" or with one at its very end.
    assert redact("log " + "a://b:" * 200_000) == "log " + "a://b:" * 200_000
    assert redact("log " + "a://b:" * 200_000 + "@h") == "log a://b:***@h"
    assert redact("log " + "a://b: " * 200_000).count("***") == 0
    public, secrets = split_secrets({"label": text})
    assert "hunter2" not in public["label"] and secrets
