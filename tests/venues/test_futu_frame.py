"""Futu packet framing: the 44-byte TCP header, the stream reader, OpenD's WebSocket header."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ProtocolError
from schemas.venues import futu_frame as ff

bodies = st.binary(max_size=300)
packets = st.builds(lambda pid, serial, body, fmt: ff.pack(pid, serial, body, fmt),
                    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), bodies,
                    st.sampled_from([0, 1]))


def test_header_layout_is_the_sdks() -> None:
    # futu-api: MESSAGE_HEAD_FMT = "<1s1sI2B2I20s8s", sha1 of the plain body, 8 zero bytes
    body = b"\x08\x00"
    raw = ff.pack(1004, 7, body)
    assert len(raw) == 44 + 2 and ff.HEADER_SIZE == 44
    assert raw[:2] == b"FT"
    assert struct.unpack_from("<I", raw, 2)[0] == 1004
    assert raw[6:8] == b"\x00\x00"                      # protobuf, version 0
    assert struct.unpack_from("<II", raw, 8) == (7, 2)
    assert raw[16:36] == hashlib.sha1(body).digest() and raw[36:44] == bytes(8)
    pkt = ff.unpack(raw)
    assert (pkt.proto_id, pkt.serial, pkt.body, pkt.fmt, pkt.raw) == (1004, 7, body, 0, raw)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), bodies, st.sampled_from([0, 1]))
def test_pack_unpack_round_trip(pid: int, serial: int, body: bytes, fmt: int) -> None:
    pkt = ff.unpack(ff.pack(pid, serial, body, fmt))
    assert (pkt.proto_id, pkt.serial, pkt.body, pkt.fmt) == (pid, serial, body, fmt)
    assert pkt.sha1_ok
    assert ff.pack(pid, serial, body, fmt) == pkt.raw


@given(st.lists(packets, max_size=6))
@settings(max_examples=60)
def test_split_at_every_offset_gives_the_same_packets(raws: list[bytes]) -> None:
    stream = b"".join(raws)
    for cut in range(len(stream) + 1):
        r = ff.PacketReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [p.raw for p in got] == raws
        assert r.buffered == 0


@given(st.lists(packets, max_size=5), st.data())
def test_byte_at_a_time_and_random_chunks(raws: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(raws)
    r = ff.PacketReader()
    assert [p.raw for b in range(len(stream)) for p in r.feed(stream[b:b + 1])] == raws
    r, pos, got = ff.PacketReader(), 0, []
    while pos < len(stream):
        n = data.draw(st.integers(1, 64))
        got += r.feed(stream[pos:pos + n])
        pos += n
    assert [p.raw for p in got] == raws


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(packets, min_size=1, max_size=4))))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                    max_size=3)):
        data[pos % len(data)] = value
    return bytes(data)


@given(st.one_of(st.binary(max_size=400), mutated_streams()),
       st.lists(st.integers(1, 50), max_size=10))
@settings(max_examples=400)
def test_any_bytes_give_packets_or_a_framing_error(junk: bytes, cuts: list[int]) -> None:
    r = ff.PacketReader(max_body=200)
    pos = 0
    for n in cuts + [len(junk)]:
        try:
            for p in r.feed(junk[pos:pos + n]):
                assert p.sha1_ok and len(p.body) <= 200
        except ff.FramingError as exc:
            assert isinstance(exc, (ff.BadMagic, ff.BadChecksum, ff.Oversize))
            if exc.fatal:       # the reader stays broken with the same error
                with pytest.raises(type(exc)):
                    r.feed(b"FT")
                return
        pos += n


def test_several_packets_in_one_read_and_a_partial_tail() -> None:
    a, b, c = ff.pack(3011, 1, b"a" * 10), ff.pack(1004, 2, b""), ff.pack(3001, 3, b"xyz")
    r = ff.PacketReader()
    assert [p.serial for p in r.feed(a + b + c[:20])] == [1, 2]
    assert r.buffered == 20
    assert [p.serial for p in r.feed(c[20:])] == [3]


def test_bad_magic_is_fatal_after_the_good_packets() -> None:
    good = ff.pack(3011, 1, b"ok")
    r = ff.PacketReader()
    assert [p.serial for p in r.feed(good + b"XX" + bytes(60))] == [1]
    with pytest.raises(ff.BadMagic, match="'FT'"):
        r.feed(b"")
    with pytest.raises(ff.BadMagic):
        r.feed(good)                                # framing is lost for good
    with pytest.raises(ff.BadMagic):
        ff.PacketReader().feed(b"Z")                # visible from the first byte


def test_bad_checksum_skips_only_that_packet() -> None:
    good1, good2 = ff.pack(3011, 1, b"one"), ff.pack(3011, 3, b"three")
    bad = bytearray(ff.pack(3011, 2, b"two"))
    bad[-1] ^= 1
    r = ff.PacketReader()
    assert [p.serial for p in r.feed(good1 + bytes(bad) + good2)] == [1]
    with pytest.raises(ff.BadChecksum, match="serial 2"):
        r.feed(b"")
    assert [p.serial for p in r.feed(b"")] == [3]
    lenient = ff.PacketReader(verify=False)
    got = lenient.feed(good1 + bytes(bad) + good2)
    assert [(p.serial, p.sha1_ok) for p in got] == [(1, True), (2, False), (3, True)]


def test_oversize_is_refused_before_the_body_arrives() -> None:
    r = ff.PacketReader(max_body=1000)
    head = ff.pack(3011, 1, b"x" * 1001)[:44]
    with pytest.raises(ff.Oversize, match="1001"):
        r.feed(head)
    assert isinstance(ff.Oversize("x"), ProtocolError)


def test_unpack_wants_exactly_one_packet() -> None:
    raw = ff.pack(1001, 1, b"body")
    with pytest.raises(ff.Truncated):
        ff.unpack(raw[:-1])
    with pytest.raises(ff.Truncated):
        ff.unpack(raw + b"\x00")
    with pytest.raises(ff.Truncated):
        ff.unpack(b"FT")
    with pytest.raises(ff.BadMagic):
        ff.unpack(b"ft" + raw[2:])


def test_websocket_framing() -> None:
    req = ff.pack_ws_request(3001, 42, b"body")
    assert req[:8] == b"ft-v1.0\x00" and len(req) == 20 + 4
    assert struct.unpack_from(">IQ", req, 8) == (3001, 42)
    assert ff.unpack_ws(req, from_server=False) == ff.WsFrame(3001, 42, b"body")
    rep = ff.pack_ws_reply(3001, 42, b"b", error=-1, message="no quote right")
    assert len(rep) == 44 + 1
    assert ff.unpack_ws(rep, from_server=True) == ff.WsFrame(3001, 42, b"b", -1, "no quote right")
    with pytest.raises(ff.Truncated):
        ff.unpack_ws(req, from_server=True)
    with pytest.raises(ff.BadMagic):
        ff.unpack_ws(b"FT" + req[2:], from_server=False)
