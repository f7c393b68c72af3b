"""The bulk frame reader (recorder/wsframe.py) parses what websockets' own parser parses:
arbitrary messages, fragmented or not, with control frames between the fragments, cut
at arbitrary byte boundaries; and refuses what RFC 6455 says a client must refuse."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from recorder.wsframe import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    MessageReader,
    client_frame,
    close_payload,
    parse_close,
)

MAX = 1 << 16


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return Frame(Opcode(opcode), payload, fin).serialize(mask=False)


@st.composite
def wire(draw: st.DrawFn) -> list[bytes]:
    """Server frames of a few messages: data messages cut into fragments, control frames
    (ping, pong) anywhere between fragments; a close frame may end it."""
    frames: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        payload = (draw(st.text(max_size=300)).encode() if opcode == TEXT
                   else draw(st.binary(max_size=300)))
        if draw(st.integers(0, 9)) == 0:
            payload *= draw(st.sampled_from([1, 126, 300]))   # 16-bit and 64-bit lengths
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
        for k, part in enumerate(parts):
            frames.append(server_frame(opcode if k == 0 else 0, part, k == len(parts) - 1))
            if draw(st.booleans()):
                frames.append(server_frame(draw(st.sampled_from([PING, PONG])),
                                           draw(st.binary(max_size=125))))
    if draw(st.booleans()):
        frames.append(server_frame(CLOSE, close_payload(draw(st.sampled_from([1000, 1001, 4000])),
                                                        draw(st.text(max_size=20)))))
    return frames


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def websockets_messages(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """What websockets' parser makes of the same bytes, fragments joined."""
    proto = ClientProtocol(parse_uri("ws://x/"), max_size=MAX)
    proto.state = State.OPEN
    proto.parser = proto.parse()
    next(proto.parser)
    out: list[tuple[int, bytes]] = []
    frags: list[bytes] = []
    first = 0
    for chunk in chunks:
        proto.receive_data(chunk)
        for frame in proto.events_received():
            assert isinstance(frame, Frame)
            op = int(frame.opcode)
            if op >= CLOSE:
                out.append((op, bytes(frame.data)))
                continue
            if op != 0:
                first = op
            frags.append(bytes(frame.data))
            if frame.fin:
                out.append((first, b"".join(frags)))
                frags = []
    return out


@given(wire(), st.lists(st.integers(0, 1 << 20), max_size=8))
def test_any_frames_cut_anywhere_parse_as_websockets_parses_them(
        frames: list[bytes], cuts: list[int]) -> None:
    chunks = split(b"".join(frames), cuts)
    reader = MessageReader(MAX)
    ours = [m for chunk in chunks for m in reader.feed(chunk)]
    assert reader.error is None
    assert ours == websockets_messages(chunks)


@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=4))
def test_a_text_message_is_handed_out_and_then_refused_with_1007_only_if_not_utf8(
        payload: bytes, cuts: list[int]) -> None:
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    reader = MessageReader(MAX)
    data = server_frame(TEXT, payload) + server_frame(BINARY, b"after")
    out = [m for chunk in split(data, cuts) for m in reader.feed(chunk)]
    if valid:
        assert out == [(TEXT, payload), (BINARY, b"after")] and reader.error is None
    else:
        assert out == [(TEXT, payload)]                 # kept, and nothing after it
        assert reader.error is not None and reader.error.code == 1007


def test_a_message_over_max_size_is_refused_with_1009_whole_or_in_fragments() -> None:
    whole = MessageReader(100)
    assert whole.feed(server_frame(TEXT, b"ok") + server_frame(BINARY, b"x" * 101)) == [(TEXT, b"ok")]
    assert whole.error is not None and whole.error.code == 1009
    assert "exceeds limit" in whole.error.reason
    frags = MessageReader(100)
    out = frags.feed(server_frame(BINARY, b"x" * 60, fin=False) + server_frame(PING, b"p")
                     + server_frame(0, b"x" * 60))
    assert out == [(PING, b"p")] and frags.error is not None and frags.error.code == 1009
    assert frags.feed(server_frame(TEXT, b"later")) == []     # nothing after an error


def test_frames_a_client_must_refuse_fail_with_1002() -> None:
    masked = Frame(Opcode.TEXT, b"hi").serialize(mask=True)
    rsv = bytes([0xC1, 2]) + b"hi"
    unknown = bytes([0x83, 0])
    long_ping = bytes([0x89, 126]) + struct.pack("!H", 126) + b"p" * 126
    split_ping = bytes([0x09, 1]) + b"p"
    stray_cont = server_frame(0, b"x")
    unfinished = server_frame(TEXT, b"a", fin=False) + server_frame(TEXT, b"b")
    short_close = bytes([0x88, 1, 3])
    for bad in (masked, rsv, unknown, long_ping, split_ping, stray_cont, unfinished, short_close):
        reader = MessageReader(MAX)
        assert reader.feed(server_frame(TEXT, b"before") + bad) == [(TEXT, b"before")], bad
        assert reader.error is not None and reader.error.code == 1002, (bad, reader.error)


@given(st.sampled_from([PING, PONG, TEXT, BINARY, CLOSE]),
       st.binary(max_size=70_000), st.binary(min_size=4, max_size=4))
def test_our_frames_are_masked_and_read_back_by_websockets(opcode: int, payload: bytes,
                                                          mask: bytes) -> None:
    if opcode in (PING, PONG, CLOSE):
        payload = payload[:125]
    data = client_frame(opcode, payload, mask)
    assert data[1] & 0x80 and data[0] == 0x80 | opcode
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
        raise AssertionError("the frame was not complete")
    except StopIteration as done:
        frame = done.value
    assert (int(frame.opcode), frame.data, frame.fin) == (opcode, payload, True)


@given(st.integers(1000, 4999), st.text(max_size=200))
def test_close_payloads_round_trip_within_a_control_frame(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert len(payload) <= 125
    got_code, got_reason = parse_close(payload)
    assert got_code == code and reason.startswith(got_reason)
    assert parse_close(b"") == (1005, "")
