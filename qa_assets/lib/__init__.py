"""Domain logic as plain functions over polars frames and DuckDB: no Dagster imports here."""
