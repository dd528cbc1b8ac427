#!/usr/bin/env python3
"""A local Spark session with Delta Lake, for interoperability tests and queries.

medlake's tables must stay readable by Spark (delta-spark 3.x). This module
builds the session the tests use to check that: ``local[2]``, low memory, no
UI, Delta's SQL extension and catalog, and the delta jars from the local jar
directory through ``spark.jars``. Nothing is resolved from the network at run
time (no ``spark.jars.packages``, so no Ivy): run ``make spark-deps`` once.

Import it::

    sys.path.insert(0, "scripts")
    from spark_session import get_spark
    spark = get_spark()
    spark.read.format("delta").load("lake/admissions").count()

or run it with the project's Python (``$HOME/.cache/medlake/venv/bin/python``)::

    spark_session.py smoke                       # write and read back a table
    spark_session.py table-info lake/admissions  # JSON: rows, schema, history, sample
    spark_session.py sql "SELECT count(*) FROM delta.\\`lake/admissions\\`"
    spark_session.py group-by-times lake/admissions lake/labs  # JSON: seconds per table

Environment: MEDLAKE_SPARK_JARS_DIR (default $HOME/.cache/medlake/spark-jars),
MEDLAKE_SPARK_DRIVER_MEMORY (default 1g).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from typing import Any

# Spark 3.5 on JDK 17: the module openings Spark itself passes to its driver,
# repeated so a session started any other way also works.
JDK17_OPTIONS = " ".join(
    [
        "-XX:+IgnoreUnrecognizedVMOptions",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
        "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
        "--add-opens=java.base/java.io=ALL-UNNAMED",
        "--add-opens=java.base/java.net=ALL-UNNAMED",
        "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "--add-opens=java.base/java.util=ALL-UNNAMED",
        "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
        "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
        "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
        "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
        "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
        "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
        "-Djdk.reflect.useDirectMethodHandle=false",
        "-Dio.netty.tryReflectionSetAccessible=true",
    ]
)


def delta_jars(jars_dir: str | None = None) -> list[str]:
    """The local delta-spark and delta-storage jars; fails with a hint when missing."""
    jars_dir = jars_dir or os.environ.get("MEDLAKE_SPARK_JARS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "medlake", "spark-jars"
    )
    jars = []
    for pattern in ("delta-spark_2.12-*.jar", "delta-storage-*.jar"):
        found = sorted(glob.glob(os.path.join(jars_dir, pattern)))
        if not found:
            raise RuntimeError(f"no {pattern} in {jars_dir}: run `make spark-deps`")
        jars.append(found[-1])
    return jars


def get_spark(app_name: str = "medlake-interop", extra_conf: dict[str, str] | None = None):
    """Builds (or returns the running) local Delta-enabled Spark session."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    conf = {
        "spark.master": "local[2]",
        "spark.app.name": app_name,
        "spark.jars": ",".join(delta_jars()),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.driver.memory": os.environ.get("MEDLAKE_SPARK_DRIVER_MEMORY", "1g"),
        "spark.driver.extraJavaOptions": JDK17_OPTIONS,
        "spark.executor.extraJavaOptions": JDK17_OPTIONS,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.session.timeZone": "UTC",
        # Tables are read by path; keep a stray saveAsTable out of the clone.
        "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "medlake-spark-warehouse"),
        "spark.databricks.delta.snapshotPartitions": "2",
    }
    conf.update(extra_conf or {})
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def table_info(spark, path: str, sample: int = 5, order_by: list[str] | None = None) -> dict:
    """Row count, schema, history and a few rows of the Delta table at ``path``."""
    df = spark.read.format("delta").load(path)
    rows = df.orderBy(*order_by) if order_by else df
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    return {
        "path": path,
        "rows": df.count(),
        "schema": [{"name": f.name, "type": f.dataType.simpleString()} for f in df.schema.fields],
        "history": [{"version": h["version"], "operation": h["operation"]} for h in history],
        "sample": [
            {k: _json_value(v) for k, v in r.asDict().items()} for r in rows.limit(sample).collect()
        ],
    }


def smoke(spark, directory: str) -> None:
    """Writes a small Delta table, appends, merges and reads it back; raises on a mismatch."""
    from delta.tables import DeltaTable

    path = os.path.join(directory, "smoke")
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta").save(path)
    spark.createDataFrame([(3, "c")], "id INT, v STRING").write.format("delta").mode("append").save(path)
    updates = spark.createDataFrame([(2, "B"), (4, "d")], "id INT, v STRING")
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(updates.alias("u"), "t.id = u.id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    got = sorted((r["id"], r["v"]) for r in spark.read.format("delta").load(path).collect())
    want = [(1, "a"), (2, "B"), (3, "c"), (4, "d")]
    if got != want:
        raise AssertionError(f"read back {got}, expected {want}")
    info = table_info(spark, path, order_by=["id"])
    if [h["version"] for h in info["history"]] != [2, 1, 0]:
        raise AssertionError(f"unexpected history {info['history']}")
    print(json.dumps(info))


def group_by_times(spark, paths: list[str], column: str) -> dict:
    """Seconds a ``GROUP BY column`` count takes over each table (the table
    loaded from its log each time, as a dashboard's query does), with the
    rows and groups it saw. A first group-by over the first table warms
    the JVM and Delta's reader up and is not counted: a dashboard's query
    runs on a warm cluster."""
    import time

    spark.read.format("delta").load(paths[0]).groupBy(column).count().collect()
    out = {}
    for path in paths:
        started = time.monotonic()
        groups = spark.read.format("delta").load(path).groupBy(column).count().collect()
        out[os.path.basename(path.rstrip("/"))] = {
            "seconds": round(time.monotonic() - started, 3),
            "groups": len(groups),
            "rows": sum(row["count"] for row in groups),
        }
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Local Spark with Delta Lake.")
    sub = parser.add_subparsers(dest="command", required=True)
    smoke_cmd = sub.add_parser("smoke", help="write and read back a Delta table")
    smoke_cmd.add_argument("dir", nargs="?", help="where to write it (default: a temp dir)")
    info_cmd = sub.add_parser("table-info", help="print a Delta table's facts as JSON")
    info_cmd.add_argument("path")
    info_cmd.add_argument("--sample", type=int, default=5)
    info_cmd.add_argument("--order-by", default="", help="comma-separated columns for the sample")
    sql_cmd = sub.add_parser("sql", help="run a Spark SQL query and show the result")
    sql_cmd.add_argument("query")
    sql_cmd.add_argument("--limit", type=int, default=50)
    times_cmd = sub.add_parser("group-by-times", help="JSON: seconds of a GROUP BY count per table")
    times_cmd.add_argument("paths", nargs="+")
    times_cmd.add_argument("--column", default="facility_id")
    args = parser.parse_args(argv)

    spark = get_spark()
    try:
        if args.command == "smoke":
            if args.dir:
                smoke(spark, args.dir)
            else:
                with tempfile.TemporaryDirectory(prefix="medlake-smoke-") as tmp:
                    smoke(spark, tmp)
            print("spark smoke test passed", file=sys.stderr)
        elif args.command == "table-info":
            order_by = [c for c in args.order_by.split(",") if c]
            print(json.dumps(table_info(spark, os.path.abspath(args.path), args.sample, order_by)))
        elif args.command == "group-by-times":
            print(json.dumps(group_by_times(spark, [os.path.abspath(p) for p in args.paths], args.column)))
        else:
            spark.sql(args.query).show(args.limit, truncate=False)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
