"""Unit tests for the sans-IO wire protocol core (``subshell_kernel.core.protocol``).

No sockets, no kernel process: frames are built with jupyter_client's
``Session`` (the reference implementation a frontend uses) or by hand, and fed
to ``Codec`` directly.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session, json_packer

from subshell_kernel.core.protocol import (
    DELIM,
    PROTOCOL_VERSION,
    Codec,
    Message,
    ProtocolError,
    ReplayHistory,
    error_content,
    iopub_topic,
    pack,
    reply_type,
    split_frames,
)

KEY = b"a0436f6c-1916-498b-8eb9-e81ab9368e84"
OTHER_KEY = b"not-the-right-key"


PACK_PROPERTY = settings(max_examples=300, deadline=None, database=None)
_json_scalars_for_pack = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def codec() -> Codec:
    return Codec(KEY)


@pytest.fixture
def client() -> Session:
    """The frontend side of the connection: same key, its own session id."""
    return Session(key=KEY, username="tester")


def client_frames(
    session: Session,
    msg_type: str = "execute_request",
    content: dict | None = None,
    *,
    parent: dict | None = None,
    metadata: dict | None = None,
    subshell_id: str | None = None,
    idents: list[bytes] | None = None,
    buffers: list[bytes] | None = None,
) -> tuple[dict, list[bytes]]:
    """A message as a frontend would send it: (message dict, wire frames)."""
    msg = session.msg(msg_type, content or {}, parent=parent or {}, metadata=metadata or {})
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    frames = session.serialize(msg, idents if idents is not None else [b"client-id"])
    if buffers:
        frames.extend(buffers)
    return msg, frames


def signed(
    key: bytes,
    header: bytes,
    parent: bytes = b"{}",
    metadata: bytes = b"{}",
    content: bytes = b"{}",
    *,
    idents: tuple[bytes, ...] = (b"client-id",),
    buffers: tuple[bytes, ...] = (),
) -> list[bytes]:
    """Hand-built frames with raw JSON parts, correctly signed with ``key``."""
    parts = [header, parent, metadata, content]
    sig = Session(key=key).sign(parts)
    return [*idents, DELIM, sig, *parts, *buffers]


def raw_header(**extra) -> bytes:
    header = {
        "msg_id": "m-1",
        "msg_type": "kernel_info_request",
        "username": "tester",
        "session": "s-1",
        "date": "2024-01-01T00:00:00.000000Z",
        "version": "5.4",
    }
    header.update(extra)
    return json.dumps(header).encode()


def wire_json(obj) -> dict:
    """What a dict looks like after a trip through JSON (dates become strings)."""
    return json.loads(json_packer(obj))


def reply_parts(frames: list) -> tuple[list[bytes], list[bytes]]:
    i = frames.index(DELIM)
    return frames[:i], frames[i + 1 :]


# -- parse / decode: the happy path ----------------------------------------------------


def test_round_trip_of_a_session_message(codec, client):
    parent = {"msg_id": "earlier", "msg_type": "execute_request", "session": "x"}
    buffers = [b"\x00\x01binary", b"", b"\xff" * 100]
    msg, frames = client_frames(
        client,
        "execute_request",
        {"code": "print('hi')", "silent": False, "nested": {"a": [1, 2.5, None, True]}},
        parent=parent,
        metadata={"cellId": "c1", "unicode": "héllo ✓"},
        subshell_id="sub-1",
        idents=[b"id-a", b"id-b"],
        buffers=buffers,
    )

    m = codec.parse(frames)
    assert isinstance(m, Message)
    assert m.idents == [b"id-a", b"id-b"]
    assert m.header == wire_json(msg["header"])
    assert m.msg_type == "execute_request"
    assert m.msg_id == msg["header"]["msg_id"]
    assert m.subshell_id == "sub-1"
    # parse looks at the header only
    assert m.parent_header == {} and m.metadata == {} and m.content == {} and m.buffers == []

    assert m.decode() is m
    assert m.parent_header == wire_json(parent)
    assert m.metadata == {"cellId": "c1", "unicode": "héllo ✓"}
    assert m.content == {
        "code": "print('hi')", "silent": False, "nested": {"a": [1, 2.5, None, True]}
    }
    assert m.buffers == buffers


def test_header_dates_are_not_parsed(codec, client):
    msg, frames = client_frames(client)
    m = codec.parse(frames)
    assert isinstance(msg["header"]["date"], datetime)
    assert isinstance(m.header["date"], str)


def test_message_without_subshell_id(codec, client):
    _, frames = client_frames(client, idents=[])
    m = codec.parse(frames)
    assert m.idents == []
    assert m.subshell_id is None


def test_null_subshell_id_is_the_parent_subshell(codec):
    m = Codec(KEY).parse(signed(KEY, raw_header(subshell_id=None)))
    assert m.subshell_id is None


def test_decode_is_idempotent(codec, client):
    _, frames = client_frames(client, "comm_msg", {"data": {"x": 1}}, buffers=[b"b"])
    m = codec.parse(frames)
    m.decode()
    first = (m.parent_header, m.metadata, m.content, m.buffers)
    m.decode()
    assert (m.parent_header, m.metadata, m.content, m.buffers) == first


# -- signature and replay ------------------------------------------------------------


def test_wrong_key_is_rejected(codec):
    _, frames = client_frames(Session(key=OTHER_KEY))
    with pytest.raises(ProtocolError, match="signature"):
        codec.parse(frames)


def test_tampered_part_is_rejected(codec, client):
    _, frames = client_frames(client, "execute_request", {"code": "1"})
    idents, parts = reply_parts(frames)
    parts[4] = json.dumps({"code": "import os; os.system('rm -rf /')"}).encode()
    with pytest.raises(ProtocolError, match="signature"):
        codec.parse([*idents, DELIM, *parts])


def test_unsigned_message_is_rejected(codec):
    _, frames = client_frames(Session(key=b""))
    assert frames[frames.index(DELIM) + 1] == b""
    with pytest.raises(ProtocolError, match="unsigned"):
        codec.parse(frames)


def test_replayed_message_is_rejected_the_second_time(codec, client):
    _, frames = client_frames(client)
    codec.parse(list(frames))
    with pytest.raises(ProtocolError, match="replay"):
        codec.parse(list(frames))
    # ... and every time after that
    with pytest.raises(ProtocolError, match="replay"):
        codec.parse(list(frames))


def test_replay_is_detected_whatever_the_idents(codec, client):
    _, frames = client_frames(client, idents=[b"one"])
    codec.parse(frames)
    i = frames.index(DELIM)
    with pytest.raises(ProtocolError, match="replay"):
        codec.parse([b"another", b"sender", *frames[i:]])


def test_replay_history_is_bounded(client):
    history = ReplayHistory()
    history.SIZE = 3
    codec = Codec(KEY, history=history)
    all_frames = [client_frames(client)[1] for _ in range(5)]
    for frames in all_frames:
        codec.parse(list(frames))
    # the two oldest fell out of the history; the three newest are still remembered
    for frames in all_frames[2:]:
        with pytest.raises(ProtocolError, match="replay"):
            codec.parse(list(frames))
    codec.parse(list(all_frames[0]))


def test_a_rejected_signature_is_not_remembered(codec, client):
    """A bad message must not poison the replay history for a good one."""
    _, frames = client_frames(client)
    idents, parts = reply_parts(frames)
    bad = [*idents, DELIM, parts[0], parts[1], b'{"x": 1}', *parts[3:]]
    with pytest.raises(ProtocolError):
        codec.parse(bad)
    codec.parse(frames)


def test_fork_shares_replay_history_and_key(codec, client):
    _, frames = client_frames(client)
    other = codec.fork()
    codec.parse(list(frames))
    # captured on one channel, replayed on another
    with pytest.raises(ProtocolError, match="replay"):
        other.parse(list(frames))
    _, bad = client_frames(Session(key=OTHER_KEY))
    with pytest.raises(ProtocolError, match="signature"):
        other.parse(bad)
    assert other.session_id == codec.session_id


def test_empty_key_accepts_unsigned_messages():
    codec = Codec(b"")
    msg, frames = client_frames(Session(key=b""), "kernel_info_request", {"a": 1})
    m = codec.parse(frames).decode()
    assert m.header == wire_json(msg["header"])
    assert m.content == {"a": 1}
    # without a key there is no signature, hence nothing to check replays against
    codec.parse(list(frames))


def test_empty_key_ignores_any_signature():
    codec = Codec(b"")
    _, frames = client_frames(Session(key=OTHER_KEY))
    assert codec.parse(frames).msg_type == "execute_request"


def test_other_signature_scheme():
    codec = Codec(KEY, signature_scheme="hmac-sha512")
    session = Session(key=KEY, signature_scheme="hmac-sha512")
    _, frames = client_frames(session)
    assert codec.parse(frames).msg_type == "execute_request"
    _, frames256 = client_frames(Session(key=KEY))
    with pytest.raises(ProtocolError, match="signature"):
        codec.parse(frames256)


def test_sign_matches_jupyter_client():
    parts = [b'{"a": 1}', b"{}", b"{}", "héllo".encode()]
    for scheme in ("hmac-sha256", "hmac-sha512", "hmac-md5"):
        assert Codec(KEY, scheme).sign(parts) == Session(key=KEY, signature_scheme=scheme).sign(
            parts
        )
    assert Codec(b"").sign(parts) == b""


@pytest.mark.parametrize("scheme", ["sha256", "hmac-", "hmac", "rsa-sha256", "hmac-nosuchhash"])
def test_unsupported_signature_scheme(scheme):
    with pytest.raises(ValueError):
        Codec(KEY, signature_scheme=scheme)


# -- malformed frames ------------------------------------------------------------------


def test_missing_delimiter(codec, client):
    _, frames = client_frames(client)
    frames.remove(DELIM)
    with pytest.raises(ProtocolError, match="delimiter"):
        codec.parse(frames)


def test_empty_frame_list(codec):
    with pytest.raises(ProtocolError, match="delimiter"):
        codec.parse([])


@pytest.mark.parametrize("n_parts", [0, 1, 2, 3, 4])
def test_too_few_frames(codec, client, n_parts):
    _, frames = client_frames(client)
    i = frames.index(DELIM)
    with pytest.raises(ProtocolError, match="at least 5 frames"):
        codec.parse(frames[: i + 1 + n_parts])


def test_split_frames():
    idents, parts = split_frames([b"a", b"b", DELIM, b"s", b"h", b"p", b"m", b"c", b"buf"])
    assert idents == [b"a", b"b"]
    assert parts == [b"s", b"h", b"p", b"m", b"c", b"buf"]
    # the first delimiter splits (later ones are ordinary frames, e.g. buffers)
    idents, parts = split_frames([DELIM, b"s", b"h", b"p", b"m", b"c", DELIM])
    assert idents == [] and parts[-1] == DELIM


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\xfa", id="invalid-utf8"),
        pytest.param(b'{"msg_id": "m", "msg_type": "x"', id="truncated"),
    ],
)
def test_invalid_json_header(header):
    with pytest.raises(ProtocolError, match="header is not valid JSON"):
        Codec(KEY).parse(signed(KEY, header))
    with pytest.raises(ProtocolError, match="header is not valid JSON"):
        Codec(b"").parse(signed(b"", header))


@pytest.mark.parametrize("header", [b"[]", b'["msg_type"]', b"42", b'"str"', b"null", b"true"])
def test_header_not_a_dict(header):
    with pytest.raises(ProtocolError, match="not a JSON object"):
        Codec(KEY).parse(signed(KEY, header))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(json.dumps({"msg_id": "m"}).encode(), id="no-msg_type"),
        pytest.param(json.dumps({"msg_type": "x"}).encode(), id="no-msg_id"),
        pytest.param(json.dumps({"msg_id": "m", "msg_type": 3}).encode(), id="msg_type-int"),
        pytest.param(json.dumps({"msg_id": "m", "msg_type": None}).encode(), id="msg_type-null"),
        pytest.param(json.dumps({"msg_id": 7, "msg_type": "x"}).encode(), id="msg_id-int"),
        pytest.param(b"{}", id="empty-dict"),
    ],
)
def test_header_without_msg_type_or_msg_id(header):
    with pytest.raises(ProtocolError, match=r"header\.msg_(type|id)"):
        Codec(KEY).parse(signed(KEY, header))


@pytest.mark.parametrize("sub", [1, 1.5, True, ["a"], {"id": "a"}])
def test_non_string_subshell_id(sub):
    with pytest.raises(ProtocolError, match="subshell_id"):
        Codec(KEY).parse(signed(KEY, raw_header(subshell_id=sub)))


@pytest.mark.parametrize("part", ["parent", "metadata", "content"])
@pytest.mark.parametrize(
    "raw, match",
    [
        (b"{bad json", "not valid JSON"),
        (b"\xc3\x28", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_decode_rejects_invalid_parts(part, raw, match):
    parts = {"parent": b"{}", "metadata": b"{}", "content": b"{}", part: raw}
    m = Codec(KEY).parse(signed(KEY, raw_header(), **parts))  # header is fine: parse succeeds
    with pytest.raises(ProtocolError, match=match):
        m.decode()


def test_decode_with_invalid_json_content_from_session(codec, client):
    msg = client.msg("execute_request", {})
    frames = client.serialize(msg, [b"id"])
    i = frames.index(DELIM)
    parts = frames[i + 2 : i + 6]
    parts[3] = b"{'code': 'single quotes are not JSON'}"
    frames = [b"id", DELIM, client.sign(parts), *parts]
    m = codec.parse(frames)
    with pytest.raises(ProtocolError, match="content is not valid JSON"):
        m.decode()


# -- outgoing ----------------------------------------------------------------------------


def test_reply_frames_address_the_sender_and_echo_the_header(codec, client):
    msg, frames = client_frames(
        client, "execute_request", {"code": "1"}, subshell_id="sub-7", idents=[b"r1", b"r2"]
    )
    request = codec.parse(frames)
    raw_request_header = frames[frames.index(DELIM) + 2]

    out = codec.reply_frames(request, {"status": "ok", "execution_count": 1}, {"m": 1})
    idents, parts = reply_parts(out)
    assert idents == [b"r1", b"r2"]
    header = json.loads(parts[1])
    parent = json.loads(parts[2])
    assert parent == request.header == json.loads(raw_request_header)  # verbatim
    assert parent["subshell_id"] == "sub-7"
    assert parent["date"] == json.loads(raw_request_header)["date"]  # not reformatted
    assert header["msg_type"] == "execute_reply"
    assert header["subshell_id"] == "sub-7"
    assert header["session"] == codec.session_id
    assert header["version"] == PROTOCOL_VERSION
    assert json.loads(parts[3]) == {"m": 1}
    assert json.loads(parts[4]) == {"status": "ok", "execution_count": 1}

    # the frontend's own Session accepts the reply and sees its request as parent
    fidents, flist = client.feed_identities(out)
    reply = client.deserialize(flist)
    assert reply["msg_type"] == "execute_reply"
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["content"] == {"status": "ok", "execution_count": 1}


def test_reply_frames_without_subshell_id(codec, client):
    _, frames = client_frames(client, "kernel_info_request")
    out = codec.reply_frames(codec.parse(frames), {"status": "ok"})
    _, parts = reply_parts(out)
    assert "subshell_id" not in json.loads(parts[1])
    assert json.loads(parts[1])["msg_type"] == "kernel_info_reply"
    assert json.loads(parts[3]) == {}


def test_reply_frames_echo_unknown_header_fields(codec):
    request = codec.parse(signed(KEY, raw_header(extra_field={"x": [1, "two"]}, subshell_id=None)))
    _, parts = reply_parts(codec.reply_frames(request, {}))
    assert json.loads(parts[2]) == request.header
    assert json.loads(parts[1])["subshell_id"] is None


def test_reply_frames_are_accepted_by_another_codec(codec, client):
    _, frames = client_frames(client, subshell_id="s")
    out = codec.reply_frames(codec.parse(frames), {"status": "ok"})
    back = Codec(KEY).parse(out).decode()
    assert back.msg_type == "execute_reply"
    assert back.subshell_id == "s"
    assert back.content == {"status": "ok"}


@pytest.mark.parametrize(
    "request_type, expected",
    [
        ("execute_request", "execute_reply"),
        ("kernel_info_request", "kernel_info_reply"),
        ("create_subshell_request", "create_subshell_reply"),
        ("delete_subshell_request", "delete_subshell_reply"),
        ("list_subshell_request", "list_subshell_reply"),
        ("comm_info_request", "comm_info_reply"),
        ("shutdown_request", "shutdown_reply"),
        ("input_request", "input_reply"),
        ("comm_msg", "comm_msg_reply"),
        ("request", "request_reply"),
        ("_request", "_reply"),
        ("execute_request_request", "execute_request_reply"),
    ],
)
def test_reply_type(request_type, expected):
    assert reply_type(request_type) == expected


def test_error_content_shape():
    c = error_content("ValueError", "bad value")
    assert c == {
        "status": "error",
        "ename": "ValueError",
        "evalue": "bad value",
        "traceback": ["ValueError: bad value"],
    }
    tb = ["line 1", "line 2"]
    assert error_content("E", "v", tb)["traceback"] == tb
    assert error_content("E", "v", [])["traceback"] == []  # an explicit empty traceback is kept
    json.dumps(c)  # JSON-serializable


def test_iopub_topic():
    assert iopub_topic("stream") == b"kernel.stream"
    assert iopub_topic("status") == b"kernel.status"


def test_new_message_shape(codec):
    parent = {"msg_id": "p", "msg_type": "execute_request", "subshell_id": "s1"}
    msg = codec.new_message("stream", {"name": "stdout", "text": "x"}, parent, {"k": 1})
    h = msg["header"]
    assert set(h) == {"msg_id", "msg_type", "username", "session", "date", "version", "subshell_id"}
    assert h["msg_type"] == "stream"
    assert h["session"] == codec.session_id
    assert h["version"] == PROTOCOL_VERSION == "5.5"
    assert h["subshell_id"] == "s1"
    assert datetime.fromisoformat(h["date"]).tzinfo is not None
    assert msg["parent_header"] is parent
    assert msg["metadata"] == {"k": 1}
    assert msg["content"] == {"name": "stdout", "text": "x"}


def test_new_message_without_parent(codec):
    msg = codec.new_message("status", {"execution_state": "starting"})
    assert msg["parent_header"] == {}
    assert msg["metadata"] == {}
    assert "subshell_id" not in msg["header"]
    msg = codec.new_message("status", {}, {})
    assert "subshell_id" not in msg["header"]


def test_session_id_can_be_given():
    codec = Codec(KEY, session_id="my-session")
    assert codec.session_id == "my-session"
    assert codec.new_message("status", {})["header"]["session"] == "my-session"
    assert Codec(KEY).session_id != Codec(KEY).session_id


def test_serialize_appends_buffers(codec):
    msg = codec.new_message("comm_msg", {"data": {}})
    frames = codec.serialize(msg, [b"topic"], [b"buf1", memoryview(b"buf2")])
    assert frames[0] == b"topic" and frames[1] == DELIM
    assert frames[-2:] == [b"buf1", memoryview(b"buf2")]
    m = Codec(KEY).parse([bytes(f) for f in frames]).decode()
    assert m.buffers == [b"buf1", b"buf2"]


def test_new_message_ids_unique_across_threads(codec):
    n_threads, per_thread = 4, 10_000
    results: list[list[str]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    forks = [codec, codec.fork(), codec.fork(), codec]

    def work(i: int) -> None:
        c = forks[i]
        barrier.wait()
        out = results[i]
        for _ in range(per_thread):
            out.append(c.new_message("stream", {})["header"]["msg_id"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for r in results for i in r]
    assert len(ids) == n_threads * per_thread
    assert len(set(ids)) == len(ids)
    # and across codecs of different sessions
    assert Codec(KEY).new_message("x", {})["header"]["msg_id"] not in set(ids)


# -- bugs --------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["header", "content"])
def test_deeply_nested_json_is_a_protocol_error(part):
    deep = b"[" * 100_000 + b"]" * 100_000
    parts = {"header": raw_header(), part: deep}
    header = parts.pop("header")
    codec = Codec(b"")  # no key: any peer that can connect may send this
    with pytest.raises(ProtocolError):
        codec.parse(signed(b"", header, **parts)).decode()


def test_lone_surrogate_in_header_is_rejected_or_echoed():
    codec = Codec(KEY)
    frames = signed(KEY, raw_header(msg_id="m-\ud800"))  # json.dumps writes "\\ud800"
    try:
        request = codec.parse(frames)
    except ProtocolError:
        return
    out = codec.reply_frames(request, {"status": "ok"})
    assert json.loads(reply_parts(out)[1][2]) == request.header


def test_nan_in_header_is_rejected_or_echoed_verbatim():
    codec = Codec(KEY)
    frames = signed(KEY, b'{"msg_id": "m", "msg_type": "kernel_info_request", "x": NaN}')
    try:
        request = codec.parse(frames)
    except ProtocolError:
        return
    out = codec.reply_frames(request, {"status": "ok"})
    echoed = json.loads(reply_parts(out)[1][2])
    assert json.dumps(echoed) == json.dumps(request.header)


# -- pack -------------------------------------------------------------------------------


def strict_json(raw: bytes):
    """Parse as a browser would: UTF-8 only, no NaN/Infinity."""

    def reject(const):
        raise ValueError(f"not JSON: {const}")

    return json.loads(raw.decode("utf-8"), parse_constant=reject)


def test_pack_plain_json():
    obj = {"a": [1, 2.5, None, True, "✓"], "b": {"c": ""}}
    raw = pack(obj)
    assert strict_json(raw) == obj
    assert "✓".encode() in raw  # not \u-escaped


def test_pack_non_json_types():
    import datetime as dt
    import fractions

    out = strict_json(
        pack(
            {
                "date": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                "day": dt.date(2024, 1, 2),
                "bytes": b"\x00\x01",
                "tuple": (1, 2),
                "frac": fractions.Fraction(1, 2),
                "obj": object,
            }
        )
    )
    assert out["date"] == "2024-01-02T03:04:05+00:00"
    assert out["day"] == "2024-01-02"
    assert out["bytes"] == "AAE="
    assert out["tuple"] == [1, 2]
    assert out["frac"] == 0.5
    assert isinstance(out["obj"], str)


def test_pack_nan_and_infinity_become_null():
    nan, inf = float("nan"), float("inf")
    out = strict_json(pack({"a": nan, "b": [inf, -inf, 1.0], "c": (nan,), "d": {"e": nan}}))
    assert out == {"a": None, "b": [None, None, 1.0], "c": [None], "d": {"e": None}}


@PACK_PROPERTY
@given(obj=st.recursive(
    _json_scalars_for_pack,
    lambda c: st.lists(c, max_size=4)
    | st.lists(c, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=16,
))
def test_property_pack_is_strict_json(obj):
    strict_json(pack(obj))


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"s": {float("nan")}}, id="set"),
        pytest.param({"g": frozenset([float("inf")])}, id="frozenset"),
    ],
)
def test_pack_nan_inside_converted_iterables(obj):
    strict_json(pack(obj))


def test_pack_numpy_array_next_to_nan():
    np = pytest.importorskip("numpy")
    strict_json(pack({"a": np.array([1.0, 2.0]), "b": float("nan")}))


@pytest.mark.parametrize("text", ["\ud800", "\udcff", "a\udc80b"])
def test_pack_lone_surrogates(text):
    out = strict_json(pack({"text": text}))
    assert out["text"] == text


# -- property tests -------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
header_like = st.dictionaries(
    st.sampled_from(["msg_id", "msg_type", "subshell_id", "session", "date", "version"])
    | st.text(max_size=6),
    json_values,
    max_size=6,
)
valid_header = st.fixed_dictionaries(
    {"msg_id": st.text(max_size=8), "msg_type": st.text(max_size=12)},
    optional={"subshell_id": json_values, "date": json_values},
)
json_bytes = (json_values | header_like | valid_header).map(lambda v: json.dumps(v).encode())
frame = st.one_of(
    st.binary(max_size=40),
    st.just(DELIM),
    st.just(b""),
    st.just(b"{}"),
    st.just(raw_header()),
    json_bytes,
)

_BASE_KEYED = Codec(KEY)
_BASE_UNKEYED = Codec(b"")
_SIGNERS = {KEY: Session(key=KEY), b"": Session(key=b"")}


def _resign(key: bytes, frames: list[bytes]) -> None:
    """Re-sign mutated frames in place with jupyter_client's reference signer."""
    if DELIM in frames:
        i = frames.index(DELIM)
        if len(frames) >= i + 6:
            frames[i + 1] = _SIGNERS[key].sign(frames[i + 2 : i + 6])


def parse_never_crashes(codec: Codec, frames: list[bytes]) -> None:
    """The invariant: parse/decode return a Message or raise ProtocolError, nothing else."""
    try:
        m = codec.parse(frames)
    except ProtocolError:
        return
    assert isinstance(m.header, dict)
    assert isinstance(m.msg_type, str) and isinstance(m.msg_id, str)
    assert m.subshell_id is None or isinstance(m.subshell_id, str)
    try:
        m.decode()
    except ProtocolError:
        return
    assert isinstance(m.parent_header, dict)
    assert isinstance(m.metadata, dict)
    assert isinstance(m.content, dict)
    assert all(isinstance(b, bytes) for b in m.buffers)


PROPERTY = settings(
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(
    frames=st.lists(frame, max_size=10)
    | st.builds(  # shaped like a message: idents, delimiter, signature, >= 4 parts
        lambda idents, sig, parts: [*idents, DELIM, sig, *parts],
        st.lists(frame, max_size=2),
        st.binary(max_size=8),
        st.lists(frame, min_size=4, max_size=7),
    ),
    keyed=st.booleans(),
    resign=st.booleans(),
)
def test_property_arbitrary_frames(frames, keyed, resign):
    codec = (_BASE_KEYED if keyed else _BASE_UNKEYED).fork()
    if resign:  # make the signature valid so that the JSON parts are reached
        _resign(KEY if keyed else b"", frames)
    parse_never_crashes(codec, frames)


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    how = data.draw(st.sampled_from(["replace", "json", "flip", "truncate", "insert", "dup"]))
    if how == "replace":
        return data.draw(st.binary(max_size=60))
    if how == "json":
        return data.draw(json_bytes)
    if how == "dup":
        return raw + raw
    if not raw:
        return data.draw(st.binary(min_size=1, max_size=4))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        bit = data.draw(st.integers(0, 7))
        return raw[:pos] + bytes([raw[pos] ^ (1 << bit)]) + raw[pos + 1 :]
    if how == "truncate":
        return raw[:pos]
    return raw[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + raw[pos:]


@PROPERTY
@given(
    data=st.data(),
    keyed=st.booleans(),
    resign=st.booleans(),
    n_idents=st.integers(0, 2),
    n_buffers=st.integers(0, 2),
    subshell=st.none() | st.text(max_size=8),
)
def test_property_mutated_valid_message(data, keyed, resign, n_idents, n_buffers, subshell):
    key = KEY if keyed else b""
    session = Session(key=key)
    _, frames = client_frames(
        session,
        "execute_request",
        {"code": "print(1)", "silent": False},
        parent={"msg_id": "p"},
        metadata={"m": [1, 2]},
        subshell_id=subshell,
        idents=[b"id%d" % i for i in range(n_idents)],
        buffers=[b"buf%d" % i for i in range(n_buffers)],
    )
    # the unmutated message is accepted
    Codec(key).parse(list(frames)).decode()

    idx = data.draw(st.integers(0, len(frames) - 1), label="frame index")
    frames[idx] = _mutate(data, frames[idx])
    codec = (_BASE_KEYED if keyed else _BASE_UNKEYED).fork()
    if resign:
        _resign(key, frames)
    parse_never_crashes(codec, frames)
