"""The hand-written stamps of outgoing messages equal what the libraries they replace
produce (``subshell_kernel.core.stamps``, ``Codec._header_json``, ``Codec.frames``)."""

from __future__ import annotations

import hmac
import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subshell_kernel.core.protocol import DELIM, Codec, Header, ProtocolError, _load_dict, pack
from subshell_kernel.core.stamps import Signer, iso_date

KEY = b"a0436f6c-1916-498b-8eb9-e81ab9368e84"


@pytest.mark.parametrize("t", [0.5, 1.000001, 1700000000.25, 1764601222.123456, 4102444799.9])
def test_iso_date_is_isoformat_with_microseconds(t):
    expected = datetime.fromtimestamp(int(t), timezone.utc).isoformat()
    got = iso_date(t)
    assert got[:19] == expected[:19] and got.endswith("+00:00")
    assert abs(datetime.fromisoformat(got).timestamp() - t) < 2e-6


def test_iso_date_at_a_whole_second_still_has_the_fraction():
    assert iso_date(1700000000.0) == "2023-11-14T22:13:20.000000+00:00"


@given(st.binary(max_size=300), st.sampled_from(["sha256", "sha512", "md5", "sha1"]),
       st.lists(st.binary(max_size=80), max_size=5))
@settings(max_examples=200, deadline=None, database=None)
def test_signer_is_hmac(key, digest, parts):
    expected = hmac.new(key, b"".join(parts), digest).hexdigest().encode()
    assert Signer(key, digest).sign(parts) == expected


PARENTS = [
    None,
    {},
    {"msg_id": "p"},
    {"msg_id": "p", "subshell_id": "s-1"},
    {"msg_id": "p", "subshell_id": None},
    {"msg_id": "p", "subshell_id": 'quote " and \\ and \n é 漢'},
    {"msg_id": "p", "subshell_id": 7},
    {"msg_id": "p", "subshell_id": ["x"]},
    {"msg_id": "p", "subshell_id": "lone \udc00 surrogate"},
]


@pytest.mark.parametrize("parent", PARENTS)
@pytest.mark.parametrize("msg_type", ["status", 'odd "type"\t', "é"])
@pytest.mark.parametrize("session", ["", "a-session", 'q"uote\\'])
def test_header_json_is_pack_of_the_header(parent, msg_type, session):
    codec = Codec(KEY, session_id=session)
    date = iso_date(1764601222.5)
    fast = codec._header_json(41, msg_type, parent, date)
    expected = pack(codec._header(41, msg_type, parent, date))
    if fast is not None:
        assert fast == expected
    else:  # only where pack must decide
        sub = (parent or {}).get("subshell_id")
        assert not (sub is None or isinstance(sub, str)) or "\udc00" in sub


@pytest.mark.parametrize("parent", PARENTS)
def test_frames_are_serialize_of_new_message(parent):
    codec = Codec(KEY)
    content, metadata = {"name": "stdout", "text": "x é"}, {"k": [1, 2]}
    idents, buffers = [b"topic"], [b"buf"]
    fast = codec.frames("stream", content, parent, metadata, idents, buffers)
    slow = codec.serialize(codec.new_message("stream", content, parent, metadata), idents,
                           buffers)
    i = fast.index(DELIM)
    assert fast[:i + 1] == slow[:i + 1] and fast[-1] == slow[-1] == b"buf"
    f_header, s_header = json.loads(fast[i + 2]), json.loads(slow[i + 2])
    for h in (f_header, s_header):
        h.pop("msg_id"), h.pop("date")
    assert f_header == s_header
    assert fast[i + 3:i + 6] == slow[i + 3:i + 6]  # parent, metadata, content
    assert fast[i + 1] == codec.sign(fast[i + 2:i + 6])


def test_frames_echo_a_received_header_and_take_packed_content():
    codec = Codec(KEY)
    parent = Header({"msg_id": "p", "subshell_id": "s"})
    parent.raw = b'{"msg_id":"p","subshell_id":"s"}'
    frames = codec.frames("status", b'{"execution_state": "idle"}', parent, None, [b"t"])
    assert frames[:2] == [b"t", DELIM]
    assert frames[4:] == [parent.raw, b"{}", b'{"execution_state": "idle"}']
    assert json.loads(frames[3])["subshell_id"] == "s"


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=20))
@settings(max_examples=300, deadline=None, database=None)
def test_pack_is_the_json_encoder(value):
    try:
        expected = json.dumps(value, ensure_ascii=False).encode("utf8")
    except UnicodeEncodeError:  # a lone surrogate: pack escapes it
        expected = json.dumps(value, ensure_ascii=True).encode("ascii")
    assert pack(value) == expected


def test_pack_of_a_circular_object_is_a_value_error():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        pack({"content": loop})


@pytest.mark.parametrize("metadata", [None, {}, {"m": 1, "started": "overridden"}])
def test_reply_metadata_says_when_the_request_started(metadata):
    codec = Codec(KEY)
    parent = Header({"msg_id": "p", "msg_type": "execute_request"})
    parent.raw = b'{"msg_id": "p", "msg_type": "execute_request"}'
    frames = [b"id", DELIM, codec.sign([parent.raw, b"{}", b"{}", b"{}"]), parent.raw,
              b"{}", b"{}", b"{}"]
    request = codec.parse(frames)
    request.started = 1764601222.25
    out = codec.reply_frames(request, {"status": "ok"}, metadata)
    i = out.index(DELIM)
    expected = {"started": "2025-12-01T15:00:22.250000+00:00", **(metadata or {})}
    assert json.loads(out[i + 4]) == expected
    assert out[i + 1] == codec.sign(out[i + 2:i + 6])


def _reference_load(raw: bytes):
    """What ``_load_dict`` must agree with: the full decoder, constants rejected."""
    value = json.loads(raw.decode("utf-8"), parse_constant=lambda name: 1 / 0)
    if not isinstance(value, dict):
        raise TypeError
    return value


@pytest.mark.parametrize("raw", [
    b"{}", b'{"a": 1}', b' {"a": 1}', b'{"a": 1} \n\t\r', b'{"a": 1}\x0b', b'{"a": 1} x',
    b'{"a": 1}{}', b"{", b'{"a": NaN}', b'{"a": Infinity}', b"[1]", b"", b"  ", b'"s"',
    b'{"\xc3\xa9": "\\ud800"}', b"\xff{}", b'{"a": {"b": [1, 2.5e3, null, true]}}',
])
def test_load_dict_is_the_full_decoder(raw):
    try:
        expected = _reference_load(raw)
    except Exception:
        with pytest.raises(ProtocolError):
            _load_dict(raw, "content")
    else:
        assert _load_dict(raw, "content") == expected
