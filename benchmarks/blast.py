"""A server that sends a pre-encoded AllTick capture as fast as the socket takes it.

Run as its own process so it has its own core: ``python -m benchmarks.blast N``.
Prints its URL, then for each client: waits for the first client frame (the
subscribe), answers it, and sends the N frames, then idles until the client
leaves. ``python -m benchmarks.blast N --forever`` repeats the N frames until the
client leaves, each round with per-symbol sequence numbers and tick times moved
on (a continuous capture: no duplicate or regressing ``seq``); cheap to send.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator

from websockets.asyncio.server import ServerConnection, serve

from replay.sim.market import Market
from schemas.venues.alltick import encode_depth, encode_trade

T0_MS = 1_767_225_600_000
SUB = json.dumps({"cmd_id": 22004, "seq_id": 1, "trace": "b",
                  "data": {"symbol_list": [{"code": "AAPL.US"}]}})     # what a client sends
_SEQ, _TIME = 7_777_777_777_771, 3_333_333_333_333      # placeholders, found by their digits


def frames(n: int, symbols: list[str], seed: int = 11) -> list[str]:
    market = Market(symbols, seed)
    out = []
    for i in range(n):
        tick = market.next()
        out.append(_encode(tick, tick.seq, T0_MS + i))
    return out


def _encode(tick, seq: int, t_ms: int) -> str:  # type: ignore[no-untyped-def]
    if tick.stream == "trades":
        return encode_trade(tick.symbol, seq, t_ms, tick.price, tick.size, tick.side, tick.strings)
    return encode_depth(tick.symbol, seq, t_ms, tick.bids, tick.asks, tick.strings)


def endless(n: int, symbols: list[str], seed: int = 11) -> Iterator[str]:
    """The ``frames(n)`` capture repeated forever with seq and tick_time moving on
    (the encoding happens here, the generator only fills in numbers)."""
    market = Market(symbols, seed)
    ticks = [market.next() for _ in range(n)]
    per_round = Counter(t.symbol for t in ticks)
    parts = []
    for t in ticks:
        head, _, rest = _encode(t, _SEQ, _TIME).partition(str(_SEQ))
        mid, _, tail = rest.partition(str(_TIME))
        parts.append((head, mid, tail, t.seq, per_round[t.symbol]))
    return _repeat(parts, n)


def _repeat(parts: list[tuple[str, str, str, int, int]], n: int) -> Iterator[str]:
    rnd = 0
    while True:
        base_ms = T0_MS + rnd * n
        for i, (head, mid, tail, seq, step) in enumerate(parts):
            yield f"{head}{seq + rnd * step}{mid}{base_ms + i}{tail}"
        rnd += 1


async def main(n: int, forever: bool = False) -> None:
    symbols = ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"]
    payload = None if forever else frames(n, symbols)
    rounds = endless(n, symbols) if forever else None

    async def handler(ws: ServerConnection) -> None:
        first = json.loads(await ws.recv())
        await ws.send(json.dumps({"cmd_id": first["cmd_id"] + 1, "seq_id": first.get("seq_id"),
                                  "ret": 200, "msg": "ok", "data": {}}))
        try:
            if rounds is not None:          # one client at a time in this mode
                for f in rounds:
                    await ws.send(f)
            for f in payload or ():
                await ws.send(f)
            async for _ in ws:
                pass
        except Exception:  # noqa: BLE001 - the client may go away any way it likes
            return

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=1 << 20,
                     ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}/quote-stock-b-ws-api", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), "--forever" in sys.argv[2:]))
