"""``make bench``: one table, each figure beside its baseline measured in the same run.

This machine is shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from benchmarks import capture, pacing, query, replay_memory, replay_speed, storage


def row(name: str, ours: float, base: float | None, unit: str, target: str, met: bool) -> str:
    ratio = f"{ours / base:6.2f}" if base else "     -"
    base_s = f"{base:>12,.1f}" if base is not None else " " * 12
    return (f"{name:38s} {ours:>12,.1f} {base_s} {ratio}  {unit:10s} {target:18s} "
            f"{'met' if met else 'MISSED'}")


def _capture(quick: bool) -> None:
    """Capture through the whole pipeline beside a bare client; recorder RSS."""
    for line in capture.report(quick, row):
        print(line, flush=True)


def _replay(quick: bool) -> None:
    """Replay at max speed, objects and batches, beside pyarrow and the limits."""
    rep = replay_speed.run(500_000 if quick else 2_000_000)
    for t in ("trades", "book"):
        way = f"   pyarrow: {rep[f'{t}_baseline_way']}"
        print(row(f"replay max {t}, objects vs pyarrow", rep[f"{t}_objects"], rep[f"{t}_baseline"],
                  "events/s", ">= 1,000,000/s", rep[f"{t}_objects"] >= 1e6) + way)
        print(row(f"replay max {t}, objects vs object limit", rep[f"{t}_objects"],
                  rep[f"{t}_limit"], "events/s", ">= 1,000,000/s", rep[f"{t}_objects"] >= 1e6))
        print(row(f"replay max {t}, objects vs read+build bound", rep[f"{t}_objects"],
                  rep[f"{t}_bound"], "events/s", ">= 1,000,000/s", rep[f"{t}_objects"] >= 1e6)
              + f"   read alone {rep[f'{t}_read']:,.0f}/s")
        print(row(f"replay max {t}, objects vs machine limit", rep[f"{t}_objects"],
                  rep[f"{t}_machine"], "events/s", ">= 1,000,000/s", rep[f"{t}_objects"] >= 1e6)
              + f"   unordered decode+values+records; values+records alone {rep[f'{t}_values']:,.0f}/s")
        print(row(f"replay max {t}, async feed vs async for", rep[f"{t}_feed"], rep[f"{t}_async"],
                  "events/s", ">= 1,000,000/s", rep[f"{t}_feed"] >= 1e6)
              + "   replay.open(speed='max'); baseline: async for over replay_sync")
        print(row(f"replay max {t}, JSON lines vs json.dumps", rep[f"{t}_lines"],
                  rep[f"{t}_dumps"], "events/s", "-", True)
              + f"   tickrec replay's lines; objects alone {rep[f'{t}_objects']:,.0f}/s")
        print(row(f"replay max {t}, batches vs pyarrow", rep[f"{t}_batches"], rep[f"{t}_baseline"],
                  "rows/s", ">= 10,000,000/s", rep[f"{t}_batches"] >= 1e7) + way)
        print(row(f"replay max {t}, batches vs ordered in mem", rep[f"{t}_batches"],
                  rep[f"{t}_ordered"], "rows/s", ">= 10,000,000/s", rep[f"{t}_batches"] >= 1e7)
              + f"   pyarrow unordered, text decoded "
                f"{rep[f'{t}_pyarrow']['dictionary, 1 thread, text decoded']:,.0f}/s")


def _memory(quick: bool) -> None:
    """Peak RSS of a replay streaming the rows, beside bare pyarrow."""
    mem = replay_memory.run(10_000_000 if quick else 100_000_000)
    for mode in ("batches", "objects"):
        m = mem[mode]
        print(row(f"replay peak RSS {mode}, {m['rows'] / 1e6:.0f}M rows vs pyarrow", m["peak_mb"],
                  mem["pyarrow"]["peak_mb"], "MB", "<= 300 MB", m["peak_mb"] <= 300))


def _storage(quick: bool) -> None:
    """Bytes per stored row and per raw frame beside one zstd stream."""
    st = storage.run(50_000 if quick else 200_000)
    print(row("bytes per trades row", st["trade_bytes"], None, "bytes", "<= 11", st["trade_bytes"] <= 11))
    print(row("bytes per book row (5 levels)", st["book_bytes"], None, "bytes", "-", True))
    print(row("bytes per raw frame vs one zstd-3 stream", st["raw_bytes"], st["zstd_stream_bytes"],
              "bytes", "<= 1.2x stream", st["raw_bytes"] <= 1.2 * st["zstd_stream_bytes"]))
    print(f"(raw frames average {st['raw_frame_len']:.0f} bytes on the wire)")


def _pacing(quick: bool) -> None:
    """Pacing lateness and CPU at 1x and 10x beside the machine limit."""
    for p in pacing.run(2_000 if quick else 10_000):
        mode = "precise" if p["precise"] else "default"
        target_ms = 0.2 if p["precise"] else 1.5
        met = p["p99_ms"] <= target_ms and (p["precise"] or p["cpu"] < 0.10)
        print(row(f"pacing {p['speed']:g}x {mode}: p99 lateness", p["p99_ms"], None, "ms",
                  f"<= {target_ms} ms" + ("" if p["precise"] else ", cpu<10%"), met)
              + f"   p50 {p['p50_ms']:.3f} max {p['max_ms']:.2f} ms, cpu {p['cpu']:.0%}, "
                f"{p['blocks'] / p['seconds']:.0f} blocking wake-ups/s"
              + ("" if p["precise"] else
                 f" at {p['wake_us']:.0f} µs each (events included) vs {p['loop_us']:.0f} µs "
                 f"for an asyncio loop pass, {p['bare_us']:.0f} µs for a bare sleep loop"))
        if not p["precise"]:
            print(row(f"pacing {p['speed']:g}x default: CPU vs machine limit", 100 * p["cpu"],
                      100 * p["limit_cpu"], "% CPU", "< 10 %", p["cpu"] < 0.10)
                  + f"   a task woken on the same grid (p99 {p['limit_p99_ms']:.2f} ms); "
                    f"no task, the loop's callback alone: {p['floor_cpu']:.1%}; "
                    f"the host took {p['steal']:.1%} of the CPUs meanwhile")
            print(row(f"pacing {p['speed']:g}x, whole replay vs pacing", 100 * p["feed_cpu"],
                      100 * p["cpu"], "% CPU", "-", True)
                  + f"   replay.open over the same events as trades (reading, records, "
                    f"pacing), p99 {p['feed_p99_ms']:.2f} ms")


def _query(quick: bool) -> None:
    """The VWAP scan beside read_parquet and the narrow query's first row."""
    q = query.run(10_000_000 if quick else 100_000_000)
    print(row(f"query VWAP scan, {q['rows'] / 1e6:.0f}M rows vs read_parquet", q["scan_per_s"],
              q["limit_per_s"], "rows/s", ">= 100,000,000/s", q["scan_per_s"] >= 1e8)
          + f"   per CPU-s {q['scan_per_cpu_s'] / 1e6:.1f} M vs {q['limit_per_cpu_s'] / 1e6:.1f} M")
    print(row("query VWAP scan vs pyarrow 3-column decode", q["scan_per_s"], q["decode_per_s"],
              "rows/s", "-", True))
    print(row("query one symbol one hour: first row", q["first_row_ms"], None, "ms", "< 20 ms",
              q["first_row_ms"] < 20) + f"   new connection {q['first_row_new_ms']:.0f} ms")
    print(row("bytes per sealed trades row", q["bytes_per_row"], None, "bytes", "-", True))


SECTIONS = {"capture": _capture, "replay": _replay, "memory": _memory, "storage": _storage,
            "pacing": _pacing, "query": _query}


def main() -> None:
    """``--quick``: smaller sizes; ``--only pacing,query``: those sections of the table."""
    args = sys.argv[1:]
    quick = "--quick" in args
    names = list(SECTIONS)
    if "--only" in args:
        at = args.index("--only") + 1
        names = args[at].split(",") if at < len(args) else []
        unknown = [n for n in names if n not in SECTIONS]
        if not names or unknown:
            sys.exit(f"--only takes sections from {', '.join(SECTIONS)}; got {unknown or 'none'}")
    stolen_s, began = pacing.steal_s(), time.perf_counter()
    print(f"tickrec benchmarks on {platform.node()}: {os.cpu_count()} cores, "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    print(f"{'figure':38s} {'ours':>12s} {'baseline':>12s} {'ratio':>6s}  {'unit':10s} "
          f"{'target':18s} verdict")
    for name in names:
        SECTIONS[name](quick)
    wall = time.perf_counter() - began
    print(f"(the run took {wall / 60:.1f} min; the host took "
          f"{(pacing.steal_s() - stolen_s) / (wall * (os.cpu_count() or 1)):.1%} of the CPUs "
          f"meanwhile: /proc/stat steal)")


if __name__ == "__main__":
    main()
