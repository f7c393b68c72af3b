"""Futu OpenD packet framing, sans-I/O: the 44-byte TCP header and the WebSocket header.

TCP (PROTOCOLS.md, Futu section). Every packet is a 44-byte little-endian header
and a body::

    "FT"  u32 proto_id  u8 fmt (0 protobuf, 1 JSON)  u8 version (0)  u32 serial
    u32 body_len  20-byte SHA1 of the plain body  8 reserved bytes

``pack`` builds one packet, ``unpack`` reads exactly one, and ``PacketReader``
splits a byte stream into packets however the stream was cut: ``feed(data)``
returns every packet completed so far (several per call, or none while a packet
is still partial).

WebSocket (OpenD's WebSocket port, used by the JavaScript SDK). Each binary
message is one packet with a big-endian header: ``"ft-v1.0\\0"``, u32 cmd, u64
request id; messages from the server add i32 error and a 20-byte NUL-padded
error text (44 bytes in all). No SHA1.

Errors, all ``ProtocolError`` (``schemas.errors``)::

    FramingError            the bytes are not a packet
    ├── BadMagic            the header does not start with "FT" / "ft-v1.0\\0"  (stream lost)
    ├── Oversize            body_len is over the limit                       (stream lost)
    ├── BadChecksum         the body does not match the header's SHA1  (packet skipped)
    └── Truncated           ``unpack`` got less than one packet, or more

After ``BadMagic`` or ``Oversize`` a ``PacketReader`` cannot find the next
packet boundary again: it stays broken and raises the same error on every
later ``feed``. After ``BadChecksum`` the bad packet has been consumed and the
reader goes on with the bytes after it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from schemas.errors import ProtocolError

MAGIC = b"FT"
HEADER = struct.Struct("<2sIBBII20s8s")
HEADER_SIZE = HEADER.size                     # 44
RESERVED = bytes(8)
FMT_PROTOBUF, FMT_JSON = 0, 1
MAX_BODY = (1 << 20) - HEADER_SIZE            # a whole packet fits the decoder's frame limit

WS_SIGN = b"ft-v1.0\x00"
WS_REQUEST = struct.Struct(">8sIQ")           # client -> OpenD: 20 bytes
WS_REPLY = struct.Struct(">8sIQi20s")         # OpenD -> client: 44 bytes


class FramingError(ProtocolError):
    """The bytes are not a Futu packet. ``fatal``: the stream cannot be read on."""
    fatal = True


class BadMagic(FramingError):
    """A header that does not start with the protocol's signature."""


class Oversize(FramingError):
    """A body length over the reader's limit."""


class BadChecksum(FramingError):
    """A body whose SHA1 differs from the header's; the packet is skipped."""
    fatal = False


class Truncated(FramingError):
    """``unpack`` was given less than one whole packet (or trailing bytes)."""
    fatal = False


@dataclass(frozen=True, slots=True)
class Packet:
    """One TCP packet; ``raw`` is header + body exactly as they travel."""
    proto_id: int
    serial: int
    body: bytes
    fmt: int = FMT_PROTOBUF
    version: int = 0
    sha1: bytes = b""
    reserved: bytes = RESERVED

    @property
    def sha1_ok(self) -> bool:
        return hashlib.sha1(self.body).digest() == self.sha1

    @property
    def raw(self) -> bytes:
        return HEADER.pack(MAGIC, self.proto_id, self.fmt, self.version, self.serial,
                           len(self.body), self.sha1, self.reserved) + self.body


def pack(proto_id: int, serial: int, body: bytes, fmt: int = FMT_PROTOBUF) -> bytes:
    """Header + body of one TCP packet (the SHA1 is computed here)."""
    return HEADER.pack(MAGIC, proto_id & 0xFFFFFFFF, fmt, 0, serial & 0xFFFFFFFF, len(body),
                       hashlib.sha1(body).digest(), RESERVED) + body


def _header(data: bytes, max_body: int) -> tuple[Packet, int]:
    """Parse the header at the start of ``data`` (at least HEADER_SIZE bytes)."""
    magic, proto_id, fmt, ver, serial, length, sha1, reserved = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadMagic(f"packet does not start with 'FT' but {bytes(magic)!r}")
    if length > max_body:
        raise Oversize(f"packet {proto_id} announces a body of {length} bytes, over the "
                       f"{max_body}-byte limit")
    return Packet(proto_id, serial, b"", fmt, ver, sha1, reserved), length


def unpack(data: bytes, *, verify: bool = True, max_body: int = MAX_BODY) -> Packet:
    """Exactly one TCP packet from ``data``.

    Raises ``BadMagic``, ``Oversize``, ``Truncated`` (short, or bytes after the
    packet) and, with ``verify``, ``BadChecksum``.
    """
    if not MAGIC.startswith(bytes(data[:2])):
        raise BadMagic(f"packet does not start with 'FT' but {bytes(data[:2])!r}")
    if len(data) < HEADER_SIZE:
        raise Truncated(f"{len(data)} bytes are less than the {HEADER_SIZE}-byte header")
    head, length = _header(data, max_body)
    if len(data) != HEADER_SIZE + length:
        raise Truncated(f"packet {head.proto_id} announces a {length}-byte body but "
                        f"{len(data) - HEADER_SIZE} bytes follow the header")
    pkt = Packet(head.proto_id, head.serial, bytes(data[HEADER_SIZE:]), head.fmt, head.version,
                 head.sha1, head.reserved)
    if verify and not pkt.sha1_ok:
        raise BadChecksum(f"packet {pkt.proto_id} serial {pkt.serial}: body SHA1 mismatch")
    return pkt


class PacketReader:
    """Incremental TCP framing: bytes in any cut, whole packets out.

    ``feed(data)`` appends ``data`` and returns the packets completed, in order.
    When an error is in line, the packets before it are returned first and the
    error is raised by the next call (``feed(b"")`` is enough to see it), so no
    good packet is ever lost to a bad one. With ``verify=False`` bodies are not
    checked (a decoder downstream checks them and keeps the bad packet raw).
    """

    def __init__(self, *, verify: bool = True, max_body: int = MAX_BODY) -> None:
        self.verify = verify
        self.max_body = max_body
        self._buf = bytearray()
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a returned packet."""
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Remove and return the unread bytes (what is left once framing is lost)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        if self._broken is not None:
            raise type(self._broken)(str(self._broken))
        self._buf += data
        out: list[Packet] = []
        buf = self._buf
        pos = 0
        try:
            while True:
                avail = len(buf) - pos
                if avail < HEADER_SIZE:
                    # a wrong signature is visible before the whole header is in
                    if not MAGIC.startswith(bytes(buf[pos:pos + 2])):
                        raise BadMagic("packet does not start with 'FT' but "
                                       f"{bytes(buf[pos:pos + 2])!r}")
                    break
                head, length = _header(bytes(buf[pos:pos + HEADER_SIZE]), self.max_body)
                if avail < HEADER_SIZE + length:
                    break
                body = bytes(buf[pos + HEADER_SIZE:pos + HEADER_SIZE + length])
                pkt = Packet(head.proto_id, head.serial, body, head.fmt, head.version,
                             head.sha1, head.reserved)
                if self.verify and not pkt.sha1_ok:
                    if out:
                        break       # hand out the good ones; the next call raises
                    pos += HEADER_SIZE + length
                    raise BadChecksum(f"packet {pkt.proto_id} serial {pkt.serial}: "
                                      "body SHA1 mismatch")
                out.append(pkt)
                pos += HEADER_SIZE + length
        except FramingError as exc:
            if exc.fatal:
                if out:
                    del buf[:pos]
                    return out      # the good packets first; the next call raises
                self._broken = exc
            del buf[:pos]
            raise
        del buf[:pos]
        return out


# --- WebSocket framing ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WsFrame:
    """One OpenD WebSocket message. ``error``/``message`` only on server messages."""
    cmd: int
    req_id: int
    body: bytes
    error: int | None = None
    message: str | None = None


def pack_ws_request(cmd: int, req_id: int, body: bytes) -> bytes:
    return WS_REQUEST.pack(WS_SIGN, cmd & 0xFFFFFFFF, req_id & 0xFFFFFFFFFFFFFFFF) + body


def pack_ws_reply(cmd: int, req_id: int, body: bytes, error: int = 0, message: str = "") -> bytes:
    text = message.encode()[:20].ljust(20, b"\x00")
    return WS_REPLY.pack(WS_SIGN, cmd & 0xFFFFFFFF, req_id & 0xFFFFFFFFFFFFFFFF, error,
                         text) + body


def unpack_ws(data: bytes, *, from_server: bool) -> WsFrame:
    """One WebSocket message: a server's (44-byte header) or a client's (20 bytes)."""
    st = WS_REPLY if from_server else WS_REQUEST
    if not WS_SIGN.startswith(bytes(data[:len(WS_SIGN)])):
        raise BadMagic(f"WebSocket message does not start with 'ft-v1.0\\0' but {data[:8]!r}")
    if len(data) < st.size:
        raise Truncated(f"{len(data)} bytes are less than the {st.size}-byte WebSocket header")
    if from_server:
        _, cmd, req_id, error, text = WS_REPLY.unpack_from(data)
        msg = text.split(b"\x00", 1)[0].decode("utf-8", "replace")
        return WsFrame(cmd, req_id, bytes(data[st.size:]), error, msg)
    _, cmd, req_id = WS_REQUEST.unpack_from(data)
    return WsFrame(cmd, req_id, bytes(data[st.size:]))
