"""Small markdown renderings for asset metadata and CLI summaries; everything embedded is escaped."""

from __future__ import annotations

import re

import polars as pl

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape_markdown(value: object) -> str:
    """Telemetry text shown in markdown: special characters escaped, newlines flattened."""
    text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_table(frame: pl.DataFrame, max_rows: int = 50, max_cell: int = 120) -> str:
    """A GitHub-flavoured markdown table of the first rows of `frame`."""
    if frame.width == 0:
        return "(no columns)"
    header = "| " + " | ".join(escape_markdown(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    rows = []
    for row in frame.head(max_rows).iter_rows():
        cells = []
        for value in row:
            text = "" if value is None else str(value)
            if len(text) > max_cell:
                text = text[: max_cell - 1] + "…"
            cells.append(escape_markdown(text))
        rows.append("| " + " | ".join(cells) + " |")
    more = [f"\n… {frame.height - max_rows} more rows"] if frame.height > max_rows else []
    return "\n".join([header, rule, *rows, *more])


def text_table(frame: pl.DataFrame) -> str:
    """A plain fixed-width table for terminals."""
    columns = frame.columns
    cells = [[("" if v is None else str(v)) for v in row] for row in frame.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join(v.rjust(w) if v.replace(".", "").isdigit() else v.ljust(w)
                             for v, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def warehouse_summary(con) -> dict[str, pl.DataFrame]:
    """What the warehouse holds, per stage, as small frames (the CLI prints them)."""
    from qa_assets.lib import warehouse

    out: dict[str, pl.DataFrame] = {}
    if warehouse.table_exists(con, "raw.ingested_files"):
        out["telemetry: stored records per source"] = warehouse.read_frame(
            con,
            "SELECT kind AS source, count(*) AS files, sum(records_read) AS records_read, "
            "sum(accepted) AS accepted, sum(quarantined) AS quarantined, "
            "count(*) FILTER (WHERE status = 'duplicate') AS duplicate_files, "
            "count(*) FILTER (WHERE status = 'waiting') AS waiting_files "
            "FROM raw.ingested_files GROUP BY kind ORDER BY kind",
        )
        rows = []
        for name in ("spans", "logs", "metrics", "deployments", "test_cases", "catalog"):
            table = f"raw.{name}"
            if warehouse.table_exists(con, table):
                count = con.execute(warehouse.statement("SELECT count(*) FROM {t}", t=table)).fetchone()[0]
                rows.append({"table": table, "rows": count})
        out["telemetry: raw tables"] = pl.DataFrame(rows)
        out["telemetry: top quarantine reasons"] = warehouse.read_frame(
            con,
            "SELECT source_kind, left(reason, 90) AS reason, count(*) AS records FROM raw.quarantine "
            "GROUP BY ALL ORDER BY records DESC LIMIT 8",
        )
    if warehouse.table_exists(con, "defects.defects"):
        out["defects: by type and severity"] = warehouse.read_frame(
            con,
            "SELECT defect_type, severity, count(*) AS defects, count(*) FILTER (WHERE status = 'regression') "
            "AS regressions, count(DISTINCT incident_id) AS incidents FROM defects.defects GROUP BY ALL ORDER BY ALL",
        )
    if warehouse.table_exists(con, "rca.root_causes"):
        out["defects with their most likely root cause"] = warehouse.read_frame(
            con,
            "SELECT d.severity, d.service, d.defect_type, strftime(d.first_seen, '%Y-%m-%d %H:%M') AS first_seen, "
            "r.service AS cause_service, r.cause_kind, left(coalesce(r.change_id, ''), 12) AS change, "
            "round(r.confidence, 2) AS confidence FROM defects.defects d LEFT JOIN rca.root_causes r "
            "ON r.defect_id = d.defect_id AND r.rank = 1 ORDER BY d.severity, d.first_seen LIMIT 20",
        )
    return out


def print_warehouse_summary(path) -> None:
    from qa_assets.lib import warehouse

    with warehouse.connect(path, read_only=True) as con:
        sections = warehouse_summary(con)
    for title, frame in sections.items():
        print(f"\n{title}")
        print(text_table(frame) if frame.height else "  (none)")
