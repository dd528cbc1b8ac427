#!/usr/bin/env python3
"""Reads Delta tables medlake wrote with Trino and prints what it sees.

The interoperability test compares this output with Spark's
(scripts/spark_check.py) and medlake's own read of the same tables. It talks
to a Trino server (scripts/trino-up.sh) over Trino's HTTP client protocol,
with the standard library only, registers each table location in a schema of
its own (``system.register_table``), reads it, and by default unregisters it
again (never touching the table's files).

Values are printed in the canonical text form of spark_check.py: timestamps
as microseconds since the epoch (UTC), dates as ``YYYY-MM-DD``, decimals with
their scale (``12.50``), booleans as ``true``/``false``, floats as Python's
repr, binary as hex, maps as JSON objects (sorted keys) of canonical values,
arrays and rows as Python's str of the values Spark collects, other numbers
and strings as text, null as ``null``.

Trino's Delta Lake connector reads a Delta ``timestamp`` column as
``timestamp(3) with time zone`` (fixed in the connector; no catalog or
session property changes it): milliseconds only. From Parquet INT64
microseconds (what medlake writes) it rounds half up, i.e. to
``floor((us + 500) / 1000) * 1000``; from Parquet INT96 (Spark's default) it
truncates (``floor(us / 1000) * 1000``). ``timestamp_ntz`` columns are
``timestamp(6)``, exact. ``timestamp_precision`` gives, per column, the
fractional digits Trino kept (3 or 6; null for other types), so a comparison
rounds its own values to that precision; the canonical value stays
microseconds (milliseconds * 1000).

Decimals are printed as Trino does, with their scale and no exponent
(``0.0000001``), as medlake does; Spark's Python prints ``1E-7`` style from
scale 7 on.

Usage (any Python 3.9+)::

    trino_check.py [--server URL] [--catalog local|s3] [--schema NAME] [--keep]
        TABLE_LOCATION [--key COL[,COL]] [--limit N] [TABLE_LOCATION ...]
    trino_check.py [--server URL] [--catalog C] [--schema S] --sql "QUERY"

TABLE_LOCATION is a local path for catalog ``local`` (made absolute and
registered as ``local:///abs/path``) or ``s3://bucket/prefix/table`` for
catalog ``s3``. The table is registered under its last path component. Prints
one JSON object per table, one per line::

    {"path": ..., "count": N, "columns": [...], "types": [...],
     "timestamp_precision": [3 | 6 | null, ...], "rows": [[...], ...]}

Rows are ordered by the --key columns (ascending, nulls first, like Spark's
orderBy), else sorted by their canonical text; at most --limit rows (all by
default). With --sql it prints one object: columns, types, rows.

Options: --server (default $TRINO_SERVER, else http://127.0.0.1:$TRINO_PORT,
port 8085), --user (medlake), --session NAME=VALUE (repeatable session
property), --timeout seconds per query (600), --keep (leave the tables
registered, e.g. for ad-hoc queries). Exit status: 0 on success, 1 when a
query fails or the server cannot be reached (the message says which), 2 on
usage errors.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import decimal
import json
import os
import re
import secrets
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USAGE = (
    "usage: trino_check.py [--server URL] [--catalog local|s3] [--schema NAME] [--keep] "
    "TABLE_LOCATION [--key COLS] [--limit N] [TABLE_LOCATION ...]\n"
    "       trino_check.py [--server URL] [--catalog C] [--schema S] --sql QUERY"
)


class TrinoError(Exception):
    """A query Trino failed, or a server that does not answer."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


class Trino:
    """A minimal client of Trino's HTTP protocol (POST /v1/statement, then
    follow nextUri until the query finishes)."""

    def __init__(self, server: str, user: str, catalog: str | None = None,
                 schema: str | None = None, session: dict[str, str] | None = None,
                 timeout: float = 600.0):
        self.server = server.rstrip("/")
        self.user = user
        self.catalog = catalog
        self.schema = schema
        self.session = dict(session or {})
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {
            "X-Trino-User": self.user,
            "X-Trino-Source": "medlake-trino-check",
            "X-Trino-Time-Zone": "UTC",
            # Without it Trino rounds every timestamp to milliseconds and
            # names its type without the precision.
            "X-Trino-Client-Capabilities": "PARAMETRIC_DATETIME",
            "Content-Type": "text/plain; charset=utf-8",
        }
        if self.catalog:
            headers["X-Trino-Catalog"] = self.catalog
        if self.schema:
            headers["X-Trino-Schema"] = self.schema
        if self.session:
            headers["X-Trino-Session"] = ",".join(
                f"{k}={urllib.parse.quote(v, safe='')}" for k, v in self.session.items()
            )
        return headers

    def _request(self, method: str, url: str, body: bytes | None, deadline: float) -> dict:
        delay = 0.05
        while True:
            request = urllib.request.Request(url, data=body, method=method, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                # 502/503/504: the server is busy or starting; retry, as Trino's clients do.
                if e.code not in (502, 503, 504) or time.monotonic() > deadline:
                    detail = e.read().decode("utf-8", "replace").strip()
                    raise TrinoError(f"{method} {url}: HTTP {e.code} {e.reason}: {detail[:500]}") from None
            except urllib.error.URLError as e:
                raise TrinoError(
                    f"cannot reach Trino at {self.server}: {e.reason} (start it with scripts/trino-up.sh)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def query(self, sql: str) -> tuple[list[dict], list[list]]:
        """Runs sql; returns its columns (name, type, typeSignature) and rows
        (values as Trino's JSON encodes them)."""
        # A server that has just started may not list itself as a node of
        # its catalogs yet (it refreshes that every few seconds).
        retry_until = time.monotonic() + 30
        while True:
            try:
                return self._query(sql)
            except TrinoError as e:
                if e.name != "NO_NODES_AVAILABLE" or time.monotonic() > retry_until:
                    raise
            time.sleep(1)

    def _query(self, sql: str) -> tuple[list[dict], list[list]]:
        deadline = time.monotonic() + self.timeout
        result = self._request("POST", f"{self.server}/v1/statement", sql.encode("utf-8"), deadline)
        columns, rows = None, []
        while True:
            if "error" in result:
                error = result["error"]
                name = error.get("errorName", "")
                raise TrinoError(f"query failed ({name}): {error.get('message', error)}\n  query: {sql}", name)
            if columns is None and result.get("columns"):
                columns = result["columns"]
            rows.extend(result.get("data") or [])
            next_uri = result.get("nextUri")
            if not next_uri:
                break
            if time.monotonic() > deadline:
                self._cancel(next_uri)
                raise TrinoError(f"query did not finish within {self.timeout:.0f}s\n  query: {sql}")
            result = self._request("GET", next_uri, None, deadline)
        return columns or [], rows

    def _cancel(self, next_uri: str) -> None:
        try:
            urllib.request.urlopen(
                urllib.request.Request(next_uri, method="DELETE", headers=self._headers()), timeout=10
            ).close()
        except (urllib.error.URLError, OSError):
            pass


# --- canonical values --------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^(-?\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?: (.+))?$"
)


def _type_arguments(signature: dict) -> list:
    return signature.get("arguments") or []


def _type_parameter(argument: dict):
    """The type (dict) or number a typeSignature argument holds."""
    kind = argument.get("kind")
    value = argument.get("value")
    if kind == "NAMED_TYPE":
        return value.get("typeSignature")
    return value


def _row_field_names(signature: dict) -> list[str]:
    names = []
    for i, argument in enumerate(_type_arguments(signature)):
        value = argument.get("value") or {}
        field = value.get("fieldName") if isinstance(value, dict) else None
        names.append(field.get("name") if field else f"field{i}")
    return names


def timestamp_precision(signature: dict) -> int | None:
    """Fractional digits of a timestamp type, None for other types."""
    if signature.get("rawType") in ("timestamp", "timestamp with time zone"):
        arguments = _type_arguments(signature)
        return int(_type_parameter(arguments[0])) if arguments else 3
    return None


def _zone_offset(zone: str | None, naive: datetime.datetime) -> datetime.timedelta:
    if zone is None or zone in ("UTC", "Z", "GMT", "Etc/UTC", "+00:00"):
        return datetime.timedelta(0)
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", zone)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        return sign * datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    from zoneinfo import ZoneInfo

    offset = naive.replace(tzinfo=ZoneInfo(zone)).utcoffset()
    return offset or datetime.timedelta(0)


def timestamp_micros(text: str) -> int:
    """Microseconds since the epoch (UTC) of Trino's timestamp text
    ('2024-01-02 03:04:05.123456', optionally followed by a zone)."""
    match = _TIMESTAMP.match(text)
    if not match:
        raise ValueError(f"unexpected timestamp {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    naive = datetime.datetime(year, month, day, hour, minute, second)
    seconds = calendar.timegm(naive.timetuple()) - int(_zone_offset(match.group(8), naive).total_seconds())
    return seconds * 1_000_000 + int(fraction)


def _float(value) -> float:
    # Trino encodes NaN and infinities as strings.
    return float(value)


def python_value(value, signature: dict):
    """The Python value Spark's collect() gives for a Trino JSON value (for
    arrays and rows, which canonical() prints as Python's str)."""
    if value is None:
        return None
    raw = signature.get("rawType")
    if raw in ("tinyint", "smallint", "integer", "bigint"):
        return int(value)
    if raw == "double":
        return _float(value)
    if raw == "real":
        return struct.unpack("f", struct.pack("f", _float(value)))[0]
    if raw == "decimal":
        return decimal.Decimal(value)
    if raw == "date":
        return datetime.date.fromisoformat(value)
    if raw in ("timestamp", "timestamp with time zone"):
        micros = timestamp_micros(value)
        return datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)
    if raw == "varbinary":
        return bytearray(base64.b64decode(value))
    if raw == "array":
        element = _type_parameter(_type_arguments(signature)[0])
        return [python_value(v, element) for v in value]
    if raw == "map":
        key_type, value_type = (_type_parameter(a) for a in _type_arguments(signature))
        return {python_value(k, key_type): python_value(v, value_type) for k, v in value.items()}
    if raw == "row":
        fields = [_type_parameter(a) for a in _type_arguments(signature)]
        names = _row_field_names(signature)
        return _Row(names, [python_value(v, t) for v, t in zip(value, fields)])
    return value


class _Row:
    """Prints like pyspark's Row."""

    def __init__(self, names, values):
        self.names, self.values = names, values

    def __repr__(self):
        return "Row(%s)" % ", ".join(f"{n}={v!r}" for n, v in zip(self.names, self.values))

    __str__ = __repr__


def canonical(value, signature: dict):
    """The text form of one value (see the module docs and spark_check.py)."""
    if value is None:
        return None
    raw = signature.get("rawType")
    if raw == "boolean":
        return "true" if value else "false"
    if raw in ("timestamp", "timestamp with time zone"):
        return str(timestamp_micros(value))
    if raw == "date":
        return datetime.date.fromisoformat(value).isoformat()
    if raw == "decimal":
        # Trino's text keeps the scale and never an exponent ("0.0000001"),
        # like medlake's; Spark's Python Decimal prints "1E-7" from scale 7 on.
        return value
    if raw in ("double", "real"):
        return repr(python_value(value, signature))
    if raw == "varbinary":
        return base64.b64decode(value).hex()
    if raw == "map":
        key_type, value_type = (_type_parameter(a) for a in _type_arguments(signature))
        return json.dumps(
            {str(python_value(k, key_type)): canonical(v, value_type) for k, v in value.items()},
            sort_keys=True,
        )
    if raw in ("array", "row"):
        return str(python_value(value, signature))
    return str(value)


def canonical_rows(columns: list[dict], rows: list[list]) -> list[list]:
    signatures = [c["typeSignature"] for c in columns]
    return [[canonical(v, s) for v, s in zip(row, signatures)] for row in rows]


# --- tables --------------------------------------------------------------------


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_location(catalog: str, path: str) -> tuple[str, str]:
    """(path as printed, location as registered) of a command-line table."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path):
        return path, path
    if catalog != "local":
        raise TrinoError(f"{path}: catalog {catalog} takes URIs (s3://bucket/prefix/table), not local paths")
    absolute = os.path.abspath(path)
    return absolute, "local://" + absolute


def table_name(location: str, taken: set[str]) -> str:
    base = location.rstrip("/").rsplit("/", 1)[-1].lower() or "t"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def sort_key(row: list):
    return [(v is not None, v or "") for v in row]


def check(trino: Trino, catalog: str, schema: str, path: str, location: str, table: str,
          keys: list[str], limit: int | None, keep: bool) -> dict:
    system = f"{quote(catalog)}.system"
    found = trino.query(
        f"SELECT table_name FROM {quote(catalog)}.information_schema.tables "
        f"WHERE table_schema = {literal(schema)} AND table_name = {literal(table)}"
    )[1]
    if found:
        trino.query(
            f"CALL {system}.unregister_table(schema_name => {literal(schema)}, table_name => {literal(table)})"
        )
    trino.query(
        f"CALL {system}.register_table(schema_name => {literal(schema)}, "
        f"table_name => {literal(table)}, table_location => {literal(location)})"
    )
    try:
        qualified = f"{quote(catalog)}.{quote(schema)}.{quote(table)}"
        count = int(trino.query(f"SELECT count(*) FROM {qualified}")[1][0][0])
        sql = f"SELECT * FROM {qualified}"
        if keys:
            sql += " ORDER BY " + ", ".join(f"{quote(k)} ASC NULLS FIRST" for k in keys)
        if limit is not None and keys:
            sql += f" LIMIT {int(limit)}"
        columns, rows = trino.query(sql)
        rows = canonical_rows(columns, rows)
        if not keys:
            rows.sort(key=sort_key)
            if limit is not None:
                rows = rows[:limit]
    finally:
        if not keep:
            trino.query(
                f"CALL {system}.unregister_table(schema_name => {literal(schema)}, table_name => {literal(table)})"
            )
    return {
        "path": path,
        "location": location,
        "count": count,
        "columns": [c["name"] for c in columns],
        "types": [c["type"] for c in columns],
        "timestamp_precision": [timestamp_precision(c["typeSignature"]) for c in columns],
        "rows": rows,
    }


# --- command line ----------------------------------------------------------------

GLOBAL_OPTIONS = {"--server", "--catalog", "--schema", "--user", "--sql", "--session", "--timeout"}
GLOBAL_FLAGS = {"--keep"}
TABLE_OPTIONS = {"--key", "--limit"}


def parse(argv: list[str]) -> tuple[dict, list[dict]]:
    """Global options (anywhere) and ``LOCATION [--key K] [--limit N]`` groups."""
    options = {
        "server": os.environ.get("TRINO_SERVER")
        or f"http://127.0.0.1:{os.environ.get('TRINO_PORT', '8085')}",
        "catalog": "local",
        "schema": None,
        "user": "medlake",
        "sql": None,
        "session": {},
        "timeout": 600.0,
        "keep": False,
    }
    tables: list[dict] = []
    args = list(argv)
    i = 0

    def value_of(name: str) -> str:
        nonlocal i
        if "=" in args[i] and args[i].startswith("--"):
            return args[i].split("=", 1)[1]
        if i + 1 >= len(args):
            raise SystemExit(f"{USAGE}\nerror: {name} needs a value")
        i += 1
        return args[i]

    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        if name in GLOBAL_FLAGS:
            options[name[2:]] = True
        elif name in GLOBAL_OPTIONS:
            value = value_of(name)
            if name == "--session":
                key, _, val = value.partition("=")
                options["session"][key] = val
            elif name == "--timeout":
                options["timeout"] = float(value)
            else:
                options[name[2:]] = value
        elif name in TABLE_OPTIONS:
            if not tables:
                raise SystemExit(f"{USAGE}\nerror: {name} before any TABLE_LOCATION")
            value = value_of(name)
            if name == "--key":
                tables[-1]["keys"] = [k for k in value.split(",") if k]
            else:
                tables[-1]["limit"] = int(value)
        elif arg.startswith("--"):
            raise SystemExit(f"{USAGE}\nerror: unknown option {arg}")
        else:
            tables.append({"path": arg, "keys": [], "limit": None})
        i += 1
    return options, tables


def main(argv: list[str]) -> int:
    try:
        options, tables = parse(argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    catalog = options["catalog"]
    trino = Trino(options["server"], options["user"], catalog, options["schema"],
                  options["session"], options["timeout"])
    try:
        if options["sql"] is not None:
            if tables:
                print(f"{USAGE}\nerror: --sql takes no TABLE_LOCATION", file=sys.stderr)
                return 2
            columns, rows = trino.query(options["sql"])
            print(json.dumps({
                "columns": [c["name"] for c in columns],
                "types": [c["type"] for c in columns],
                "rows": canonical_rows(columns, rows),
            }), flush=True)
            return 0
        if not tables:
            print(USAGE, file=sys.stderr)
            return 2
        schema = (options["schema"] or f"check_{secrets.token_hex(4)}").lower()
        existing = trino.query(
            f"SELECT schema_name FROM {quote(catalog)}.information_schema.schemata "
            f"WHERE schema_name = {literal(schema)}"
        )[1]
        if not existing:
            trino.query(f"CREATE SCHEMA {quote(catalog)}.{quote(schema)}")
        try:
            taken: set[str] = set()
            for table in tables:
                path, location = table_location(catalog, table["path"])
                name = table_name(location, taken)
                result = check(trino, catalog, schema, path, location, name,
                               table["keys"], table["limit"], options["keep"])
                print(json.dumps(result), flush=True)
        finally:
            if not existing and not options["keep"]:
                trino.query(f"DROP SCHEMA IF EXISTS {quote(catalog)}.{quote(schema)}")
    except TrinoError as e:
        print(f"trino_check.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
