"""Per source file: records read = accepted + quarantined, checked against what the tables hold."""

from __future__ import annotations

import duckdb
import polars as pl

from qa_assets.lib import warehouse
from qa_assets.lib.ingest.landing import LEDGER_TABLE, PARTITIONED_TABLES, ensure_ingest_tables


def _stored_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = [f"{schema}.{name}" for name in PARTITIONED_TABLES for schema in ("staging", "raw")]
    names.append("raw.catalog")
    if warehouse.table_exists(con, "raw.feedback"):
        names.append("raw.feedback")
    return names


def accounting_mismatches(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, int]:
    """Files whose ledger counts don't add up or don't match the stored rows; and how many were checked."""
    ensure_ingest_tables(con)
    accepted_union = " UNION ALL ".join(
        warehouse.statement("SELECT source_file, count(*) AS n FROM {t} GROUP BY source_file", t=t)
        for t in _stored_tables(con)
    )
    query = (
        "WITH stored AS (SELECT source_file, sum(n) AS n FROM (" + accepted_union + ") GROUP BY source_file), "
        "quarantined AS (SELECT source_file, count(*) AS n FROM raw.quarantine GROUP BY source_file) "
        "SELECT f.path, f.records_read, f.accepted, f.quarantined, "
        "coalesce(s.n, 0) AS stored_accepted, coalesce(q.n, 0) AS stored_quarantined "
        + warehouse.statement("FROM {ledger} f ", ledger=LEDGER_TABLE)
        + "LEFT JOIN stored s ON s.source_file = f.path LEFT JOIN quarantined q ON q.source_file = f.path "
        "WHERE f.status IN ('ingested', 'partial')"
    )
    files = warehouse.read_frame(con, query)
    bad = files.filter(
        (pl.col("records_read") != pl.col("accepted") + pl.col("quarantined"))
        | (pl.col("accepted") != pl.col("stored_accepted"))
        | (pl.col("quarantined") != pl.col("stored_quarantined"))
    )
    return bad, files.height
