"""Sans-IO core of the Jupyter wire protocol (messaging spec 5.5).

Nothing here touches a socket or a thread: frames in, dicts out, and back.
The IO layers (router, control, iopub) call into it.

Invariants:
- A message is accepted only if its HMAC signature matches the connection key
  and was not seen before (replay protection); otherwise ``ProtocolError``.
- ``split_frames`` and ``parse_*`` raise only ``ProtocolError`` on bad input,
  whatever the frames hold.
- Outgoing messages are serialized and signed here: built as dicts
  (``new_message``, then ``serialize``), or in one step without the dict
  (``frames``, what the kernel sends four times per execute request: our own
  header's JSON formatted by hand, the same bytes as packing it).  We do not
  use jupyter_client's ``Session``: importing it imports Tornado, which this
  kernel must not load; the date and the signature are ``stamps``.
- A parent header is echoed back exactly as received (dates are not parsed).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import math
import numbers
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from .stamps import Signer, iso_date, now_iso

PROTOCOL_VERSION = "5.5"
DELIM = b"<IDS|MSG>"


class ProtocolError(Exception):
    """A message that cannot be accepted: malformed frames, bad signature, bad JSON."""


class Header(dict):
    """A received header, carrying the exact bytes it was parsed from.

    A request's header is the parent of every message it causes (busy, outputs,
    reply, idle): ``serialize`` echoes ``raw`` instead of packing the dict
    again, and the bytes live exactly as long as the header does.
    """

    __slots__ = ("raw",)


@dataclass(slots=True)
class Message:
    """One incoming message.

    The router parses only ``header``; ``decode`` fills the rest on the
    thread that handles the message.
    """

    idents: list[bytes]
    parts: list[bytes]  # [signature, header, parent, metadata, content, *buffers]
    header: dict[str, Any]
    parent_header: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)
    buffers: list[bytes] = field(default_factory=list)
    #: when its handling began (``time.time()``, set by the lifecycle): the reply's
    #: ``metadata.started``, which JupyterLab shows as the time a cell started
    started: float | None = None
    decoded: bool = False

    @property
    def msg_type(self) -> str:
        return self.header["msg_type"]

    @property
    def msg_id(self) -> str:
        return self.header["msg_id"]

    @property
    def subshell_id(self) -> str | None:
        return self.header.get("subshell_id")

    def as_dict(self) -> dict[str, Any]:
        """The nested message dict that libraries (``comm``, ipywidgets) expect."""
        return {
            "header": self.header,
            "msg_id": self.msg_id,
            "msg_type": self.msg_type,
            "parent_header": self.parent_header,
            "metadata": self.metadata,
            "content": self.content,
            "buffers": self.buffers,
        }

    def decode(self) -> Message:
        """Parse parent header, metadata and content; ProtocolError if invalid.

        Parsed once: the router decodes a comm message to route it by its comm,
        and the subshell that handles it decodes it again for free."""
        if self.decoded:
            return self
        self.parent_header = _load_dict(self.parts[2], "parent_header")
        self.metadata = _load_dict(self.parts[3], "metadata")
        self.content = _load_dict(self.parts[4], "content")
        self.buffers = list(self.parts[5:])
        self.decoded = True
        return self


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One encoder and decoder for the process: json.dumps/loads with options build a
# new one per call (~2 us each, several times per message).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
#: the decoder's own scanner (C): ``JSONDecoder.decode`` wraps it in Python with two
#: whitespace regexes, 4.5 us for a request's header against 2.9 us called directly
_SCAN = _DECODER.scan_once
_JSON_WHITESPACE = " \t\n\r"


def _load_dict(raw: bytes, what: str) -> dict[str, Any]:
    if raw == b"{}":  # most parent headers and metadata: a new dict, not a JSON parse
        return {}
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if text[:1] == "{":  # an object from its first character: the scanner alone
            value, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_JSON_WHITESPACE):
                raise ValueError(f"extra data at character {end}")
        else:
            value = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"{what} is not valid JSON: {e}") from None
    except StopIteration:  # the scanner found no value where one must start
        raise ProtocolError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def split_frames(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split ZMQ identities from the message parts at the delimiter."""
    try:
        i = frames.index(DELIM)
    except ValueError:
        raise ProtocolError("no <IDS|MSG> delimiter") from None
    parts = frames[i + 1 :]
    if len(parts) < 5:
        raise ProtocolError(f"expected at least 5 frames after the delimiter, got {len(parts)}")
    return frames[:i], parts


class ReplayHistory:
    """The last ``SIZE`` signatures accepted, on every channel; safe from any thread.

    ``add`` is the whole interface, so the kernel can hand ``Codec`` another
    history with the same rule: the C part's (``transport/_native_control.c``),
    which its control reader shares.
    """

    SIZE = 2**16

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, signature: bytes) -> bool:
        """True if ``signature`` is new (it is remembered now), False if seen before."""
        with self._lock:
            if signature in self._seen:
                return False
            self._seen[signature] = None
            if len(self._seen) > self.SIZE:
                self._seen.popitem(last=False)
            return True


class Codec:
    """Verifies, parses, builds and serializes messages for one connection key.

    Each socket owner has its own ``Codec`` (``fork``); the replay history is
    shared by all of them, so a message captured on one channel is not
    accepted on another.  Building and serializing are safe from any thread.
    """

    def __init__(self, key: bytes, signature_scheme: str = "hmac-sha256", session_id: str = "",
                 history: ReplayHistory | None = None):
        scheme, _, digest = signature_scheme.partition("-")
        if scheme != "hmac" or not digest:
            raise ValueError(f"unsupported signature scheme {signature_scheme!r}")
        self._signer = Signer(key, digest) if key else None
        self.session_id = session_id or uuid.uuid4().hex
        self._history = history if history is not None else ReplayHistory()
        # next() on itertools.count is atomic under the GIL: unique ids from any thread
        self._counter = itertools.count()
        self._id_prefix = f"{self.session_id[:8]}_{os.getpid()}_"
        # the constant pieces of our own headers' JSON (``_header_json``)
        self._json_id_prefix = '{"msg_id": ' + encode_basestring(self._id_prefix)[:-1]
        self._json_session = (', "username": "kernel", "session": '
                              + encode_basestring(self.session_id) + ', "date": "')

    @property
    def id_prefix(self) -> str:
        """What each of our msg ids starts with (a counter follows)."""
        return self._id_prefix

    def fork(self) -> Codec:
        """A codec for another thread: same key, session, ids and replay history."""
        other = object.__new__(Codec)
        other.__dict__.update(self.__dict__)
        return other

    def sign(self, parts: list[bytes]) -> bytes:
        if self._signer is None:
            return b""
        return self._signer.sign(parts)

    # -- incoming -----------------------------------------------------------------
    def parse(self, frames: list[bytes], verify: bool = True) -> Message:
        """Split, verify and parse the header of ``frames``; ProtocolError if bad.

        ``verify=False`` only for frames verified already (by the C control
        reader): verifying them again would find their signature seen."""
        idents, parts = split_frames(frames)
        if verify:
            self.verify(parts)
        header = _load_dict(parts[1], "header")
        for key in ("msg_id", "msg_type"):
            if not isinstance(header.get(key), str):
                raise ProtocolError(f"header.{key} is missing or not a string")
        sub = header.get("subshell_id")
        if sub is not None and not isinstance(sub, str):
            raise ProtocolError("header.subshell_id is not a string")
        header = Header(header)
        header.raw = parts[1]
        return Message(idents, parts, header)

    def verify(self, parts: list[bytes]) -> None:
        if self._signer is None:
            return
        signature = parts[0]
        if not signature:
            raise ProtocolError("unsigned message")
        if not hmac.compare_digest(signature, self.sign(parts[1:5])):
            raise ProtocolError("invalid signature")
        if not self._history.add(signature):
            raise ProtocolError("replayed signature")

    # -- outgoing -----------------------------------------------------------------
    def new_message(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A message dict whose parent header is ``parent`` (echoed verbatim)."""
        return {
            "header": self._header(next(self._counter), msg_type, parent, now_iso()),
            "parent_header": parent or {},
            "metadata": metadata or {},
            "content": content,
        }

    def _header(self, n: int, msg_type: str, parent: dict[str, Any] | None,
                date: str) -> dict[str, Any]:
        header = {
            "msg_id": self._id_prefix + str(n),
            "msg_type": msg_type,
            "username": "kernel",
            "session": self.session_id,
            "date": date,
            "version": PROTOCOL_VERSION,
        }
        if parent and "subshell_id" in parent:
            header["subshell_id"] = parent["subshell_id"]
        return header

    def _header_json(self, n: int, msg_type: str, parent: dict[str, Any] | None,
                     date: str) -> bytes | None:
        """``pack(self._header(...))``, formatted by hand: the same bytes (tested) in
        0.6 us instead of 6.3 us.  None where only ``pack`` knows the answer: a
        parent's ``subshell_id`` that is not a string or null, text UTF-8 cannot
        encode (a lone surrogate)."""
        text = (f'{self._json_id_prefix}{n}", "msg_type": {encode_basestring(msg_type)}'
                f'{self._json_session}{date}", "version": "{PROTOCOL_VERSION}"')
        if parent and "subshell_id" in parent:
            sub = parent["subshell_id"]
            if sub is None:
                text += ', "subshell_id": null'
            elif type(sub) is str:
                text += ', "subshell_id": ' + encode_basestring(sub)
            else:
                return None
        try:
            return (text + "}").encode("utf8")
        except UnicodeEncodeError:
            return None

    def serialize(
        self, msg: dict[str, Any], idents: list[bytes] | None = None, buffers: list | None = None
    ) -> list:
        """Wire frames: idents, delimiter, signature, header, parent, metadata, content, buffers."""
        parent = msg["parent_header"]
        return self._frames(
            pack(msg["header"]),
            parent.raw if type(parent) is Header else pack(parent),
            pack(msg["metadata"]) if msg["metadata"] else b"{}",
            pack(msg["content"]),
            idents,
            buffers,
        )

    def frames(
        self,
        msg_type: str,
        content: dict[str, Any] | bytes,
        parent: dict[str, Any] | None = None,
        metadata: dict[str, Any] | bytes | None = None,
        idents: list[bytes] | None = None,
        buffers: list | None = None,
    ) -> list:
        """``serialize(new_message(msg_type, content, parent, metadata), idents, buffers)``
        in one step, without the message dict; ``content`` and ``metadata`` may be given
        packed already (a constant such as a status's)."""
        n, date = next(self._counter), now_iso()
        header = self._header_json(n, msg_type, parent, date)
        if header is None:
            header = pack(self._header(n, msg_type, parent, date))
        if not parent:
            parent_json = b"{}"
        else:
            parent_json = parent.raw if type(parent) is Header else pack(parent)
        return self._frames(
            header,
            parent_json,
            metadata if type(metadata) is bytes else pack(metadata) if metadata else b"{}",
            content if type(content) is bytes else pack(content),
            idents,
            buffers,
        )

    def _frames(self, header: bytes, parent: bytes, metadata: bytes, content: bytes,
                idents: list[bytes] | None, buffers: list | None) -> list:
        frames = [*(idents or ()), DELIM, self.sign((header, parent, metadata, content)),
                  header, parent, metadata, content]
        if buffers:
            frames.extend(buffers)
        return frames

    def reply_frames(
        self, request: Message, content: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> list:
        """Serialized ``*_reply`` to ``request``, addressed back to its sender; its
        metadata says when the request's handling ``started``."""
        started = request.started
        if started is None:
            packed = pack(metadata) if metadata else b"{}"
        elif not metadata:  # the common case, formatted by hand (a date needs no escapes)
            packed = b'{"started": "%s"}' % iso_date(started).encode()
        else:
            packed = pack({"started": iso_date(started), **metadata})
        return self.frames(reply_type(request.msg_type), content, request.header, packed,
                           request.idents)


def _json_default(obj: Any) -> Any:
    """JSON for what user code puts in messages beyond plain JSON types."""
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, Iterable) and not isinstance(obj, (str, dict)):
        return list(obj)
    return repr(obj)


_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=False, allow_nan=False)
#: ``_ENCODER``'s own C encoder, built once: ``JSONEncoder.encode`` builds a new one
#: per call (4.9 us to pack an execute reply's content, 2.2 us with this one).  It
#: keeps no circular-reference markers (they would be shared by every thread), so a
#: circular object ends in RecursionError, and ``_ENCODER`` then says what it is.
_C_ENCODE = (
    c_make_encoder(None, _json_default, encode_basestring, None, ": ", ", ", False, False, False)
    if c_make_encoder is not None
    else None
)


def pack(obj: Any) -> bytes:
    """One frame of strict JSON, for whatever user code put in a message.

    NaN and infinities become null (they are not JSON); a lone surrogate,
    which UTF-8 cannot encode, is sent escaped (``ensure_ascii``).
    """
    try:
        text = "".join(_C_ENCODE(obj, 0)) if _C_ENCODE is not None else _ENCODER.encode(obj)
    except (ValueError, RecursionError):
        text = _strict_text(obj)
    try:
        return text.encode("utf8")
    except UnicodeEncodeError:
        return json.dumps(json.loads(text), ensure_ascii=True).encode("ascii")


def _strict_text(obj: Any) -> str:
    """``pack``'s text where the fast encoder stopped: NaN and infinities, or a
    circular object (``_ENCODER`` raises its ValueError for that one)."""
    try:
        return _ENCODER.encode(obj)
    except ValueError:
        plain = json.loads(json.dumps(obj, default=_json_default))
        return json.dumps(_without_nan(plain), ensure_ascii=False, allow_nan=False)


def _without_nan(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _without_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_nan(v) for v in obj]
    return obj


def reply_type(msg_type: str) -> str:
    base = msg_type.removesuffix("_request")
    return base + "_reply"


def error_content(ename: str, evalue: str, traceback: list[str] | None = None) -> dict[str, Any]:
    """The content of an error reply (spec: status, ename, evalue, traceback)."""
    return {
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": traceback if traceback is not None else [f"{ename}: {evalue}"],
    }


def iopub_topic(msg_type: str) -> bytes:
    return b"kernel." + msg_type.encode()
