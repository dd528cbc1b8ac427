#!/usr/bin/env python3
"""Reads Delta tables medlake wrote with Spark (delta-spark) and prints what it sees.

The interoperability test compares this output with medlake's own read of the
same tables. Values are printed in one canonical text form both sides can
produce: timestamps as microseconds since the epoch (UTC), dates as
``YYYY-MM-DD``, decimals with their scale (``12.50``), booleans as
``true``/``false``, other numbers and strings as text, null as ``null``.

Usage (with the project's Python, ``$HOME/.cache/medlake/venv/bin/python``)::

    spark_check.py TABLE_PATH --key id[,id2] [--limit 1000] [TABLE_PATH --key ... ...]

prints one JSON object per table, one per line::

    {"path": ..., "count": N, "history_length": H, "columns": [...],
     "rows": [[...], ...]}   # sorted by the key columns, at most --limit rows

Several tables go in one call so the Spark session starts once.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import decimal
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from spark_session import get_spark  # noqa: E402


def canonical(value):
    """The text form of one value (see the module docs)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        # The session time zone is UTC, so naive values are UTC.
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return str(calendar.timegm(value.timetuple()) * 1_000_000 + value.microsecond)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return json.dumps({str(k): canonical(v) for k, v in value.items()}, sort_keys=True)
    return str(value)


def check(spark, path: str, keys: list[str], limit: int) -> dict:
    df = spark.read.format("delta").load(path)
    columns = df.columns
    ordered = df.orderBy(*keys) if keys else df
    rows = [[canonical(r[c]) for c in columns] for r in ordered.limit(limit).collect()]
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").count()
    return {
        "path": path,
        "count": df.count(),
        "history_length": history,
        "columns": columns,
        "rows": rows,
    }


def parse(argv: list[str]) -> list[tuple[str, list[str], int]]:
    """Splits ``PATH --key K [--limit N]`` groups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--key", default="", help="comma-separated sort columns")
    parser.add_argument("--limit", type=int, default=1000)
    groups, current = [], []
    for arg in argv:
        if current and not arg.startswith("--") and not current[-1].startswith("--"):
            groups.append(current)
            current = []
        current.append(arg)
    if current:
        groups.append(current)
    out = []
    for group in groups:
        args = parser.parse_args(group)
        out.append((os.path.abspath(args.path), [k for k in args.key.split(",") if k], args.limit))
    return out


def main(argv: list[str]) -> int:
    tables = parse(argv)
    if not tables:
        print("usage: spark_check.py TABLE_PATH --key COLS [...]", file=sys.stderr)
        return 2
    spark = get_spark("medlake-spark-check")
    try:
        for path, keys, limit in tables:
            print(json.dumps(check(spark, path, keys, limit)), flush=True)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
