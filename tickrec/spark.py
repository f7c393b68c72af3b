"""The store read by Apache Spark (pyspark; the ``spark`` extra), locally or on a cluster.

    from tickrec import spark as tspark
    spark = tspark.session()                       # local[1]; or your cluster's session
    trades = tspark.read(spark, "data", "trades")  # or "s3a://bucket/store"
    trades.groupBy("symbol").count().show()

What it takes for Spark to read a tickrec store (docs/scaling-out.md):

- **Nanosecond times.** Every time column is Parquet ``INT64 TIMESTAMP(NANOS,
  isAdjustedToUTC=true)``. Spark's timestamp type holds microseconds, and by
  default its Parquet reader refuses the column (``[PARQUET_TYPE_ILLEGAL] Illegal
  Parquet type: INT64 (TIMESTAMP(NANOS,true))``). With
  ``spark.sql.legacy.parquet.nanosAsLong=true`` (Spark ≥ 3.2.4) the column
  reads as ``long``: the exact nanoseconds since the epoch, UTC, the same number
  as DuckDB's ``epoch_ns(ts_recv)`` and ``schemas.events``' ints. ``read`` sets
  that option on the session; ``ns_to_timestamp`` makes a (microsecond,
  truncated) Spark timestamp for display. Spark does not push a predicate on
  such a column down to Parquet's row-group statistics: filter on ``date`` too.
- **Partitions.** ``venue=…/date=…`` directories are Hive partitions; reading
  ``<root>/<table>`` with ``basePath`` = that directory gives ``venue`` (string)
  and ``date`` (the UTC date of ``ts_recv``) as columns, and a filter on them
  prunes directories before any file is opened.
- **Schema.** ``read`` passes the schema from ``schemas.tables`` (times as
  ``long``) instead of letting Spark infer one from every footer, so partition
  values are never guessed (a venue called ``123`` stays a string), files of an
  older schema version read with their missing columns as null, and the
  footers are not all read up front.
- **Only published files.** Writers publish by renaming a hidden temp
  (``.<run>-<n>.parquet.tmp``, or ``.<run>-s<n>.tmp`` written as rows arrive);
  Spark skips names starting with ``.`` or ``_``, and ``pathGlobFilter`` keeps
  to ``*.parquet``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from schemas.errors import ConfigError
from schemas.tables import TABLES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"

# Settings ``session`` starts with: small-data defaults for local use and tests.
LOCAL_CONF = {
    NANOS_AS_LONG: "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.driver.memory": "1g",
    "spark.sql.adaptive.enabled": "false",
}


def session(master: str = "local[1]", app_name: str = "tickrec",
            conf: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession set up to read the store (``LOCAL_CONF`` updated with ``conf``).

    Starting the JVM takes seconds; reuse the session and ``stop()`` it when done.
    Raises ``ConfigError`` when pyspark is not installed (``pip install
    'tickrec[spark]'``) or Java cannot be started.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("pyspark is not installed: pip install 'tickrec[spark]'") from None
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**LOCAL_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:    # py4j/JVM start-up failures have no common base class
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Spark did not start (is Java 17+ installed?): {first}") from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_type(t: pa.DataType) -> DataType:
    from pyspark.sql import types as T
    if pa.types.is_timestamp(t):
        return T.LongType()             # exact ns since the epoch, UTC (NANOS_AS_LONG)
    if pa.types.is_list(t):
        return T.ArrayType(_spark_type(t.value_type), containsNull=True)
    simple: dict[pa.DataType, DataType] = {
        pa.string(): T.StringType(), pa.int64(): T.LongType(), pa.int32(): T.IntegerType(),
        pa.float64(): T.DoubleType(), pa.binary(): T.BinaryType(), pa.bool_(): T.BooleanType(),
    }
    try:
        return simple[t]
    except KeyError:
        raise ConfigError(f"no Spark type for Arrow type {t}") from None


def spark_schema(table: str) -> StructType:
    """The Spark schema ``read`` uses: the table's columns, times as ``long`` ns,
    then the partition columns ``venue`` (string) and ``date`` (date)."""
    from pyspark.sql import types as T
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}: one of {', '.join(TABLES)}")
    fields = [T.StructField(f.name, _spark_type(f.type), True) for f in TABLES[table]]
    fields += [T.StructField("venue", T.StringType(), True),
               T.StructField("date", T.DateType(), True)]
    return T.StructType(fields)


def table_path(root: str | os.PathLike[str], table: str) -> str:
    """``<root>/<table>``: a URI (``s3a://bucket/store``) as given, a local path absolute."""
    text = os.fspath(root)
    if "://" in text:
        return f"{text.rstrip('/')}/{table}"
    return str(Path(text).resolve() / table)


def read(spark: SparkSession, root: str | os.PathLike[str], table: str) -> DataFrame:
    """One store table as a DataFrame (schema: ``spark_schema``), with ``venue`` and ``date``.

    Sets ``spark.sql.legacy.parquet.nanosAsLong`` on the session (the times read as
    exact ns ``long``s). A local root without that table gives an empty DataFrame,
    like the DuckDB views; a local root that does not exist raises ``ConfigError``.
    """
    schema = spark_schema(table)
    spark.conf.set(NANOS_AS_LONG, "true")
    path = table_path(root, table)
    if "://" not in path:
        base = Path(path).parent
        if not base.is_dir():
            raise ConfigError(f"store root {str(base)!r} does not exist")
        if not any(Path(path).glob("venue=*/date=*/*.parquet")):
            return spark.createDataFrame([], schema)
    return (spark.read.schema(schema)
            .option("basePath", path)
            .option("pathGlobFilter", "*.parquet")
            .parquet(path))


def ns_to_timestamp(column: str) -> Column:
    """A Spark timestamp from the ns ``long`` column named ``column``, truncated to
    microseconds (integer division, no float on the way): for display; compare and
    join on the ``long``."""
    from pyspark.sql import functions as F
    name = column.replace("`", "``")
    return F.expr(f"timestamp_micros(`{name}` div 1000)")


__all__ = ["LOCAL_CONF", "NANOS_AS_LONG", "ns_to_timestamp", "read", "session",
           "spark_schema", "table_path"]
