"""RFC 6455 frames for a WebSocket client, no I/O: parse what the server sends in bulk,
build what we send (masked).

``MessageReader.feed(data)`` takes bytes as they come off the socket, split anywhere,
and returns the messages completed by them, in wire order, as ``(opcode, payload)``:
``TEXT``/``BINARY`` for data messages (fragments joined), ``CLOSE``/``PING``/``PONG`` for
control frames (which may arrive between the fragments of a message). A text
message's payload stays bytes: it has been checked to be UTF-8 but not decoded.

The first protocol violation sets ``error`` (a ``FrameError`` with the close code to
fail the connection with: 1002 a malformed frame, 1007 a text message that is not
UTF-8, 1009 a message over ``max_size``); the messages before it are still returned,
nothing after it is parsed. A text message that is not UTF-8 is returned too (the
recorder keeps every frame it read) just before the error. Extensions are never
negotiated by this client, so any RSV bit is a violation.
"""

from __future__ import annotations

import os
import struct

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (CONT, TEXT, BINARY)
CONTROL_OPCODES = (CLOSE, PING, PONG)
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class FrameError(Exception):
    """A protocol violation: ``code`` is the close code, ``reason`` the close reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class MessageReader:
    """Parse server frames (unmasked) from a byte stream into messages."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.error: FrameError | None = None
        self._buf = b""
        self._frag_op: int | None = None     # opcode of the message being fragmented
        self._frags: list[bytes] = []
        self._frag_len = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages completed by ``data`` (see the module docstring)."""
        if self.error is not None:
            return []
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        append = out.append
        end = len(buf)
        i = 0
        max_size = self.max_size
        while end - i >= 2:
            b0 = buf[i]
            n = buf[i + 1]
            if n & 0x80 or b0 & 0x70:
                self._fail(1002, "incorrect masking" if n & 0x80 else "reserved bits must be 0")
                break
            n &= 0x7F
            start = i + 2
            if n == 126:
                if end - i < 4:
                    break
                n = _U16.unpack_from(buf, start)[0]
                start += 2
            elif n == 127:
                if end - i < 10:
                    break
                n = _U64.unpack_from(buf, start)[0]
                start += 8
            opcode = b0 & 0x0F
            if opcode > 2:
                if opcode not in CONTROL_OPCODES:
                    self._fail(1002, f"invalid opcode: {opcode}")
                    break
                if n > 125 or not b0 & 0x80:
                    self._fail(1002, "control frame too long" if n > 125 else "fragmented control frame")
                    break
            elif n > max_size - self._frag_len:
                self._fail(1009, f"frame with {n + self._frag_len} bytes exceeds limit of "
                                 f"{max_size} bytes")
                break
            stop = start + n
            if stop > end:
                break
            payload = buf[start:stop]
            i = stop
            if b0 == 0x81 and self._frag_op is None:        # the hot case: a whole text frame
                if not payload.isascii() and not self._utf8(payload, out):
                    break
                append((TEXT, payload))
            elif opcode > 2 or (b0 == 0x82 and self._frag_op is None):
                if opcode == CLOSE and not self._close_ok(payload):
                    break
                append((opcode, payload))
            elif not self._fragment(b0, payload, out):
                break
        self._buf = buf[i:] if self.error is None else b""
        return out

    def _fragment(self, b0: int, payload: bytes, out: list[tuple[int, bytes]]) -> bool:
        opcode = b0 & 0x0F
        if (opcode == CONT) != (self._frag_op is not None):
            self._fail(1002, "unexpected continuation frame" if opcode == CONT
                       else "expected a continuation frame")
            return False
        if opcode != CONT:
            self._frag_op = opcode
        self._frags.append(payload)
        self._frag_len += len(payload)
        if not b0 & 0x80:
            return True
        first, whole = self._frag_op, b"".join(self._frags)
        self._frag_op, self._frags, self._frag_len = None, [], 0
        if first == TEXT and not whole.isascii() and not self._utf8(whole, out):
            return False
        out.append((TEXT if first == TEXT else BINARY, whole))
        return True

    def _utf8(self, payload: bytes, out: list[tuple[int, bytes]]) -> bool:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append((TEXT, payload))     # kept: the caller journals it, then fails
            self._fail(1007, str(exc))
            return False
        return True

    def _close_ok(self, payload: bytes) -> bool:
        if len(payload) == 1:
            self._fail(1002, "close frame too short")
            return False
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError as exc:
            self._fail(1007, str(exc))
            return False
        return True

    def _fail(self, code: int, reason: str) -> None:
        self.error = FrameError(code, reason)


def parse_close(payload: bytes) -> tuple[int, str]:
    """Close code and reason of a close frame's payload (1005 when it has none)."""
    if len(payload) < 2:
        return 1005, ""
    return _U16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame (reason cut to fit a control frame)."""
    raw = reason.encode("utf-8")[:123]
    return _U16.pack(code) + raw.decode("utf-8", "ignore").encode("utf-8")


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One whole frame from the client: FIN set, masked with ``mask`` (4 random bytes
    when not given), as RFC 6455 requires of a client."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0xFE)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0xFF)) + _U64.pack(n)
    return head + mask + _apply_mask(payload, mask)


def _apply_mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")
