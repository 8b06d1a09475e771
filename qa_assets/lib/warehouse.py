"""The DuckDB warehouse: connections, tables declared from polars schemas, idempotent writes.

DuckDB admits one writing process per file. Dagster steps share the `duckdb` pool (limit 1), and
`connect` also waits out a lock held by another process (a CLI run beside the UI) instead of failing.
Identifiers (schemas, tables, columns) come from code and are checked by `statement`; values from
telemetry are always bound parameters.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_LOCK_MESSAGES = ("Could not set lock", "Conflicting lock", "database is locked")


class WarehouseError(RuntimeError):
    """The warehouse could not be opened or written; the message says what to do."""


def statement(template: str, **identifiers: str) -> str:
    """Fill `{name}` placeholders in SQL with identifiers that come from code, never from data.

    Raises ValueError for anything that is not a plain (optionally schema-qualified) identifier, so a
    value from telemetry can never be spliced into SQL by mistake.
    """
    for name, value in identifiers.items():
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            raise ValueError(f"{name}={value!r} is not a plain SQL identifier")
    return template.format(**identifiers)


def is_md_path(path: str) -> bool:
    return path.startswith("md:") or path.startswith("motherduck:")


@contextmanager
def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    lock_timeout_s: float | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse briefly; wait (with backoff) while another process holds its write lock.

    `lock_timeout_s` defaults to QA_ASSETS_LOCK_TIMEOUT_S, else 300 s. 0 fails on the first conflict:
    tests set it to prove the `duckdb` pool alone keeps writers apart (a retry would hide a conflict)."""
    if lock_timeout_s is None:
        lock_timeout_s = float(os.environ.get("QA_ASSETS_LOCK_TIMEOUT_S", "300"))
    target = str(path)
    if not is_md_path(target) and target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        if read_only and not Path(target).exists():
            raise WarehouseError(
                f"warehouse {target} does not exist yet: run `qa-assets run` or materialize the telemetry assets first"
            )
    config: dict[str, str | int] = {}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.1
    while True:
        try:
            con = duckdb.connect(target, read_only=read_only, config=config)
            break
        except duckdb.IOException as exc:
            if not any(m in str(exc) for m in _LOCK_MESSAGES) or time.monotonic() > deadline:
                raise WarehouseError(
                    f"cannot open warehouse {target}: {exc}. Another process holds it; stop that process "
                    "or run qa-assets steps in the `duckdb` concurrency pool (see dagster.yaml)."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # output goes to logs, not a terminal
        yield con
    finally:
        con.close()


_DUCKDB_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Int64: "BIGINT",
    pl.Int32: "INTEGER",
    pl.Int16: "SMALLINT",
    pl.UInt32: "UBIGINT",
    pl.Float64: "DOUBLE",
    pl.Float32: "FLOAT",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Datetime: "TIMESTAMP",
}


def duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List):
        return duckdb_type(dtype.inner) + "[]"
    for polars_type, sql_type in _DUCKDB_TYPES.items():
        if isinstance(dtype, polars_type) or dtype == polars_type:
            return sql_type
    raise TypeError(f"no DuckDB type for {dtype}")


def ensure_table(
    con: duckdb.DuckDBPyConnection, table: str, schema: Mapping[str, pl.DataType]
) -> None:
    """Create `schema.table` with these columns if it is missing; add columns a newer version declares."""
    schema_name, _ = table.split(".")
    con.execute(statement("CREATE SCHEMA IF NOT EXISTS {schema}", schema=schema_name))
    columns = ", ".join(
        statement('"{column}" ', column=name) + duckdb_type(dtype) for name, dtype in schema.items()
    )
    con.execute(statement("CREATE TABLE IF NOT EXISTS {table} (", table=table) + columns + ")")
    existing = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            table.split("."),
        ).fetchall()
    }
    for name, dtype in schema.items():
        if name not in existing:
            con.execute(
                statement('ALTER TABLE {table} ADD COLUMN "{column}" ', table=table, column=name)
                + duckdb_type(dtype)
            )


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema_name, table_name = table.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema_name, table_name],
        ).fetchone()[0]
    )


def insert(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> int:
    """Append a frame by column name; returns the row count."""
    if frame.height == 0:
        return 0
    con.register("_incoming", frame.to_arrow())
    try:
        con.execute(statement("INSERT INTO {table} BY NAME SELECT * FROM _incoming", table=table))
    finally:
        con.unregister("_incoming")
    return frame.height


def replace_where(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    key_column: str | None,
    key_values: Sequence[object] | None = None,
) -> int:
    """Delete the rows whose `key_column` is in `key_values` (every row when `key_column` is None: a table
    rebuilt whole), then insert `frame`, in one transaction: re-running a partition gives the same table."""
    con.execute("BEGIN TRANSACTION")
    try:
        if key_column is None:
            con.execute(statement("DELETE FROM {table}", table=table))
        elif key_values:
            con.execute(
                statement("DELETE FROM {table} WHERE {column} IN (SELECT unnest(?))", table=table, column=key_column),
                [list(key_values)],
            )
        written = insert(con, table, frame)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return written


def read_frame(con: duckdb.DuckDBPyConnection, query: str, parameters: Sequence[object] | None = None) -> pl.DataFrame:
    """Run a query and return a polars frame (works on duckdb 1.5 and 2.x)."""
    return con.sql(query, params=list(parameters) if parameters is not None else None).pl()


def read_table(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    """A whole table as a polars frame."""
    return con.sql(statement("SELECT * FROM {table}", table=table)).pl()
