"""Spark (pyspark, local[1]) reads the store and answers like DuckDB, to the nanosecond.

One store for the module: a real capture of the AllTick simulator (the recorder's
own files, rolled every second) plus a second "capture host" whose run writes
trades on both sides of a UTC midnight into the same root, so the query runs
over several days, two venues' worth of partitions and two writers' file names.
One SparkSession for the module (the JVM start is most of the time), stopped at
teardown.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ConfigError
from schemas.events import Trade
from storage.catalog import connect
from storage.writer import StoreWriter
from tests.helpers import read_table, record_sim
from tickrec import spark as tspark

# The JVM's first query takes ~60 s on a loaded 2-core box (CPU, not waiting): past
# the suite's 120 s a timeout would break the module's one gateway for every test after.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MIDNIGHT = 1_714_608_000_000_000_000          # 2024-05-02T00:00:00Z
HOST_B_RUN = "20240501T235900-hostb-4242-0a1b2c"
HOST_B_TRADES = [
    # (symbol, ts_recv, ts_event, price, size): ns next to midnight on both sides
    ("AAPL.US", MIDNIGHT - 2_000_000_001, MIDNIGHT - 2_100_000_000, 101.25, 300.0),
    ("AAPL.US", MIDNIGHT - 1, None, 101.5, 100.0),             # 23:59:59.999999999
    ("AAPL.US", MIDNIGHT, MIDNIGHT - 3, 101.75, 200.0),        # 00:00:00.000000000
    ("AAPL.US", MIDNIGHT + 1, MIDNIGHT + 1, 99.99, 1000.0),
    ("BTCUSDT", MIDNIGHT - 999, MIDNIGHT - 1000, 64000.125, 0.5),
    ("BTCUSDT", MIDNIGHT + 123_456_789, None, 64001.5, 0.25),
    ("BTCUSDT", MIDNIGHT + 86_400_000_000_000 - 1, None, 63999.0, 2.0),   # last ns of the day
]

# One query text for both engines; only the way to get ns from a time column differs:
# DuckDB has TIMESTAMP_NS and epoch_ns(), Spark reads the column as the ns long itself.
AGGREGATE = """
SELECT venue, CAST(date AS STRING) AS day, symbol,
       count(*) AS n,
       sum(size) AS volume,
       sum(CAST(price AS DECIMAL(18, 6)) * CAST(size AS DECIMAL(18, 6))) AS notional,
       sum(price * size) / sum(size) AS vwap,
       min({ns_recv}) AS first_ns,
       max({ns_recv}) AS last_ns,
       max({ns_event}) AS last_event_ns,
       count({ns_event}) AS with_event_time
FROM trades
WHERE date BETWEEN DATE '2024-05-01' AND DATE '2099-12-31'
GROUP BY venue, date, symbol
ORDER BY venue, day, symbol
"""
DUCKDB = {"ns_recv": "epoch_ns(ts_recv)", "ns_event": "epoch_ns(ts_event)"}
SPARK = {"ns_recv": "ts_recv", "ns_event": "ts_event"}


def _host_b(root: Path, state: Path) -> None:
    writer = StoreWriter(root, "alltick", HOST_B_RUN, state)
    for i, (symbol, ts, ts_event, price, size) in enumerate(HOST_B_TRADES):
        writer.add_event(Trade(venue="alltick", symbol=symbol, ts_recv=ts, ts_event=ts_event,
                               seq=i, session=HOST_B_RUN, frame=i, pos=0, price=price,
                               size=size, side="buy"))
    writer.publish(writer.take())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark-store")
    # step 1 is played once AllTick's two subscriptions are in force (the simulator waits)
    asyncio.run(record_sim(root, ["AAPL.US", "700.HK"], rate=400, steps=700, seed=3,
                           faults="skip@550,dup@600"))
    _host_b(root, tmp_path_factory.mktemp("hostb-state"))
    return root


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    # C1 only and the serial collector: a JVM that lives for seconds warms up faster.
    # One retry: on a loaded shared machine the JVM's gateway can miss its start window.
    conf = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    try:
        session = tspark.session("local[1]", "tickrec-tests", conf)
    except ConfigError:
        session = tspark.session("local[1]", "tickrec-tests", conf)
    try:
        yield session
    finally:
        session.stop()


def _duckdb(root: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect(root)
    try:
        return [tuple(r) for r in con.sql(sql).fetchall()]
    finally:
        con.close()


def _spark_sql(spark: Any, root: Path, table: str, sql: str) -> list[tuple[Any, ...]]:
    tspark.read(spark, root, table).createOrReplaceTempView(table)
    return [tuple(r) for r in spark.sql(sql).collect()]


def test_same_aggregate_as_duckdb_over_several_days(spark: Any, store: Path) -> None:
    duck = _duckdb(store, AGGREGATE.format(**DUCKDB))
    sprk = _spark_sql(spark, store, "trades", AGGREGATE.format(**SPARK))
    days = {r[1] for r in duck}
    assert {"2024-05-01", "2024-05-02"} <= days and len(days) >= 3     # + the capture's day
    assert len(sprk) == len(duck)
    for d, s in zip(duck, sprk):
        # vwap is a double sum: the two engines add in different orders (relative 1e-12);
        # everything else, the decimal notional included, is exactly equal.
        assert d[:6] + d[7:] == s[:6] + s[7:], (d, s)
        assert isinstance(s[5], Decimal) and isinstance(s[7], int)
        assert math.isclose(d[6], s[6], rel_tol=1e-12), (d, s)
    by_key = {(r[1], r[2]): r for r in sprk}
    assert by_key[("2024-05-01", "AAPL.US")][7:9] == (MIDNIGHT - 2_000_000_001, MIDNIGHT - 1)
    assert by_key[("2024-05-02", "AAPL.US")][7:9] == (MIDNIGHT, MIDNIGHT + 1)
    assert by_key[("2024-05-02", "BTCUSDT")][8] == MIDNIGHT + 86_400_000_000_000 - 1


def test_every_time_column_is_exact_nanoseconds(spark: Any, store: Path) -> None:
    """Row by row, Spark's longs are pyarrow's int64 ns and DuckDB's epoch_ns."""
    truth = sorted((r["session"], r["frame"], r["pos"], r["ts_recv"], r["ts_event"])
                   for r in read_table(store, "trades"))
    keys = "session, frame, pos"
    duck = sorted(_duckdb(store, f"SELECT {keys}, epoch_ns(ts_recv), epoch_ns(ts_event) "
                                 "FROM trades"))
    sprk = sorted(_spark_sql(spark, store, "trades", f"SELECT {keys}, ts_recv, ts_event "
                                                     "FROM trades"))
    assert len(truth) > 100
    assert truth == duck == sprk
    assert any(t[3] % 1000 for t in truth)        # sub-microsecond digits are really there
    # gaps and sessions: several time columns per row, some null
    for table, cols in (("gaps", ("ts_recv", "ts_start", "ts_end")),
                        ("sessions", ("ts_recv", "opened", "closed"))):
        rows = sorted(tuple(r[c] for c in ("session",) + cols) for r in read_table(store, table))
        got = sorted(_spark_sql(spark, store, table, f"SELECT session, {', '.join(cols)} "
                                                     f"FROM {table}"))
        assert rows and got == rows, table


def test_partitions_are_columns_and_prune(spark: Any, store: Path) -> None:
    df = tspark.read(spark, store, "trades")
    assert df.schema["venue"].dataType.typeName() == "string"
    assert df.schema["date"].dataType.typeName() == "date"
    assert df.schema["ts_recv"].dataType.typeName() == "long"
    one_day = df.where("venue = 'alltick' AND date = DATE '2024-05-01'")
    assert sorted(r.ts_recv for r in one_day.select("ts_recv").collect()) == \
        sorted(t[1] for t in HOST_B_TRADES if t[1] < MIDNIGHT)
    plan = one_day._jdf.queryExecution().executedPlan().toString()
    assert "PartitionFilters: [" in plan and "PartitionFilters: []" not in plan
    # ns → timestamp for display: truncated to the microsecond, in UTC
    shown = one_day.where(f"ts_recv = {MIDNIGHT - 1}").select(
        tspark.ns_to_timestamp("ts_recv").cast("string").alias("t")).collect()
    assert [r.t for r in shown] == ["2024-05-01 23:59:59.999999"]


def test_the_default_reader_refuses_nanosecond_timestamps(spark: Any, store: Path) -> None:
    """Why ``read`` sets spark.sql.legacy.parquet.nanosAsLong: without it Spark fails."""
    path = tspark.table_path(store, "trades")
    spark.conf.set(tspark.NANOS_AS_LONG, "false")
    try:
        with pytest.raises(Exception, match="PARQUET_TYPE_ILLEGAL|TIMESTAMP\\(NANOS"):
            spark.read.option("basePath", path).parquet(path).collect()
    finally:
        spark.conf.set(tspark.NANOS_AS_LONG, "true")
    assert tspark.read(spark, store, "trades").count() == len(read_table(store, "trades"))


def test_missing_table_is_empty_and_temp_files_are_ignored(spark: Any, store: Path,
                                                           tmp_path: Path) -> None:
    assert tspark.read(spark, store, "tickers").count() == 0
    assert tspark.read(spark, store, "tickers").columns[-2:] == ["venue", "date"]
    # a half-written file under a writer's hidden temp name is not read
    day = next((store / "trades" / "venue=alltick").glob("date=2024-05-02"))
    tmp = day / f".{HOST_B_RUN}-999999.parquet.tmp"
    tmp.write_bytes(b"PAR1 not yet whole")
    try:
        assert tspark.read(spark, store, "trades").count() == len(read_table(store, "trades"))
    finally:
        tmp.unlink()
    with pytest.raises(Exception, match="does not exist"):
        tspark.read(spark, tmp_path / "nowhere", "trades")


def _rows_scanned(df: Any) -> int:
    """Rows the Parquet scan handed on (after row-group skipping, before Spark's filter)."""
    df.collect()
    plan = df._jdf.queryExecution().executedPlan()       # AQE is off in tspark.LOCAL_CONF
    nodes, total = [plan], 0
    while nodes:
        node = nodes.pop()
        if node.nodeName().startswith("Scan parquet"):
            total += node.metrics().apply("numOutputRows").value()
        children = node.children().iterator()
        while children.hasNext():
            nodes.append(children.next())
    return int(total)


def test_spark_skips_row_groups_on_plain_longs_only(spark: Any, tmp_path: Path) -> None:
    """docs/scaling-out.md: a nanosAsLong column's predicate does not reach the Parquet
    reader (every row group is read), a plain INT64 one's does. If this starts failing,
    Spark learned to push the first down: update the doc's advice to filter on ``date``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    n, per_group = 10_000, 1_000
    ns = pa.array(range(MIDNIGHT, MIDNIGHT + n), pa.int64())
    pq.write_table(pa.table({"t_ns": ns.cast(pa.timestamp("ns", tz="UTC")), "t_long": ns}),
                   tmp_path / "t.parquet", row_group_size=per_group)
    df = spark.read.parquet(str(tmp_path / "t.parquet"))
    cut = MIDNIGHT + n - 10
    assert _rows_scanned(df.where(f"t_ns >= {cut}").groupBy().count()) == n
    assert _rows_scanned(df.where(f"t_long >= {cut}").groupBy().count()) == per_group
