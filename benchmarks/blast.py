"""A server that sends a pre-encoded AllTick capture as fast as the socket takes it.

Run as its own process so it has its own core: ``python -m benchmarks.blast N``.
Prints its URL, then for each client: waits for the first client frame (the
subscribe), answers it, and sends the N frames, then idles until the client
leaves.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, serve

from replay.sim.market import Market
from schemas.venues.alltick import encode_depth, encode_trade


def frames(n: int, symbols: list[str], seed: int = 11) -> list[str]:
    market = Market(symbols, seed)
    out = []
    t = 1_767_225_600_000
    for i in range(n):
        tick = market.next()
        if tick.stream == "trades":
            out.append(encode_trade(tick.symbol, tick.seq, t + i, tick.price, tick.size, tick.side,
                                    tick.strings))
        else:
            out.append(encode_depth(tick.symbol, tick.seq, t + i, tick.bids, tick.asks,
                                    tick.strings))
    return out


async def main(n: int) -> None:
    payload = frames(n, ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"])

    async def handler(ws: ServerConnection) -> None:
        first = json.loads(await ws.recv())
        await ws.send(json.dumps({"cmd_id": first["cmd_id"] + 1, "seq_id": first.get("seq_id"),
                                  "ret": 200, "msg": "ok", "data": {}}))
        for f in payload:
            await ws.send(f)
        try:
            async for _ in ws:
                pass
        except Exception:  # noqa: BLE001 - the client may go away any way it likes
            pass

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=1 << 20,
                     ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}/quote-stock-b-ws-api", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
