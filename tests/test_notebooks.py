"""The notebooks in notebooks/ run top to bottom (nbclient) against a fresh store.

The store is a short AllTick capture with the demo's kinds of fault (a skipped
sequence number, a duplicate, a malformed frame, a dropped connection), made
once for the module with ``record_sim``: the same tables as ``tickrec demo``
leaves, in a few seconds instead of fifteen. The kernel gets ``TICKREC_ROOT``
(the store), ``MPLBACKEND=Agg`` and this checkout first on ``PYTHONPATH``. Any
failing cell fails the test; a cell added at the end reports the figures the
notebook drew, so a plot that came out empty fails too.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import record_sim

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SYMBOLS = ["AAPL.US", "700.HK", "TSLA.US"]

FIGURES_CELL = """
import json as _json
import matplotlib.pyplot as _plt
print("FIGURES " + _json.dumps({
    "backend": _plt.get_backend().lower(),
    "figures": [[len(ax.lines) + len(ax.collections) for ax in _plt.figure(n).axes]
                for n in _plt.get_fignums()]}))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nb-store")
    # step 1 is played once AllTick's two subscriptions are in force (the simulator waits)
    asyncio.run(record_sim(root, SYMBOLS, rate=400, steps=1500, seed=42,
                           faults="skip@500,dup@600,malformed@700,disconnect@800"))
    return root


def execute(name: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), f"{path.name} is committed with outputs"
    nb.cells.append(nbformat.v4.new_code_cell(FIGURES_CELL))
    monkeypatch.setenv("TICKREC_ROOT", str(store))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    client = NotebookClient(nb, timeout=90, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()        # raises CellExecutionError (with the cell and traceback) on failure
    return nb


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("output_type") == "stream" and o["name"] == "stdout")


def figures(nb: nbformat.NotebookNode) -> Any:
    line = next(x for x in stdout(nb).splitlines() if x.startswith("FIGURES "))
    return json.loads(line[len("FIGURES "):])


def test_tick_history_runs_and_draws_every_plot(store: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("tick_history", store, monkeypatch)
    out = stdout(nb)
    assert f"store: {store.resolve()}" in out
    for symbol in SYMBOLS:
        assert symbol in out
    assert "disconnect" in out and "sequence" in out        # the gap summary table
    got = figures(nb)
    assert got["backend"] == "agg"
    # price/VWAP (a panel per symbol), spread, messages per second, gap timeline
    assert len(got["figures"]) == 4
    assert len(got["figures"][0]) == len(SYMBOLS)
    assert all(n > 0 for fig in got["figures"] for n in fig), got


def test_backtest_is_deterministic_and_runs_live(store: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("backtest_replay", store, monkeypatch)     # asserts inside the notebook
    out = stdout(nb)
    assert "identical:" in out
    assert "live: 400 events from ws://127.0.0.1:" in out
    got = figures(nb)
    assert len(got["figures"]) == 1 and all(n > 0 for n in got["figures"][0]), got
