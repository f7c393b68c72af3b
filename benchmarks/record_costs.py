"""Where the time of one replayed record goes: CPU ns per row of each step the
cheapest unordered reader must take (``replay_speed._machine_limit``), measured
one step at a time on the same decoded rows, the cyclic collector off.

Steps: the Parquet decode (plain ``iter_batches``, text as dictionaries); the
values of each kind of column (``ints``: numbers through numpy ``tolist``;
``texts``: a dictionary gather or a list repeat; ``levels``: the list columns'
row lists, 2-D ``tolist`` ``LEVEL_BLOCK`` rows at a time); ``records``: the
generated builder (``object.__new__`` plus a slot store per field) over ready
values, each record dropped as it is taken; and, to check that the parts add
up, ``values+records`` as the machine limit does it. Each figure is the best of
``rounds``, the steps interleaved.

Run: ``PYTHONPATH=. python -m benchmarks.record_costs [ROWS_PER_DAY] [TABLE]``.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.replay_speed import MACHINE_BLOCK, _block_values, _dictionary_batches, _records_of
from benchmarks.replay_store import make_day
from replay.rows import EACH, RECORD_COLUMNS

LEVEL_BLOCK = 128


def _kind(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return "levels"
    return "texts" if pa.types.is_dictionary(t) or pa.types.is_string(t) else "ints"


def _steps(files: list[Path], table: str) -> dict[str, Callable[[], int]]:
    cols = list(RECORD_COLUMNS[table])
    batches = [b for f in files for b in _dictionary_batches(f, cols)]
    prepared = [[_block_values(b.column(c)) for c in cols] for b in batches]
    kinds = [_kind(batches[0].schema.field(c).type) for c in cols]
    ready = [[v(0, b.num_rows) for v in vals] for b, vals in zip(batches, prepared)]
    each = EACH[table]

    def decode() -> int:
        return sum(b.num_rows for f in files for b in _dictionary_batches(f, cols))

    def values_of(kind: str) -> Callable[[], int]:
        def run() -> int:
            block = LEVEL_BLOCK if kind == "levels" else MACHINE_BLOCK
            for b, vals in zip(batches, prepared):
                for lo in range(0, b.num_rows, block):
                    out = [v(lo, min(lo + block, b.num_rows))
                           for v, k in zip(vals, kinds) if k == kind]
                    del out
            return sum(b.num_rows for b in batches)
        return run

    def records() -> int:
        return sum(sum(1 for _ in each("alltick", *lists)) for lists in ready)

    def values_records() -> int:
        return sum(_records_of(each, vals, b.num_rows) for b, vals in zip(batches, prepared))
    steps = {"decode": decode}
    steps |= {k: values_of(k) for k in ("ints", "texts", "levels") if k in kinds}
    steps |= {"records": records, "values+records": values_records}
    return steps


def run(rows_per_day: int = 500_000, table: str = "book", rounds: int = 3) -> dict[str, Any]:
    """CPU ns per row of each step (module doc) over one sealed and one rolled day."""
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_day(root, 0, rows_per_day, "sealed")
        make_day(root, 1, rows_per_day, "rolled")
        steps = _steps(sorted(root.glob(f"{table}/*/*/*.parquet")), table)
        was_on = gc.isenabled()
        gc.disable()
        try:
            for _ in range(rounds):
                for name, fn in steps.items():
                    t0 = time.process_time()
                    n = fn()
                    best[name] = min(best.get(name, float("inf")),
                                     (time.process_time() - t0) / n * 1e9)
        finally:
            if was_on:
                gc.enable()
    return best


if __name__ == "__main__":
    import sys
    costs = run(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000,
                sys.argv[2] if len(sys.argv) > 2 else "book")
    for name, ns in costs.items():
        print(f"{name:16s} {ns:8.0f} ns/row   ({1e9 / ns:12,.0f} rows/s)")
