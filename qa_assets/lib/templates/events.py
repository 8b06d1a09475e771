"""One hour of raw logs → `signals.log_events`, matched against the template registry.

Pure over its inputs: the stored registry and lineage plus the hour's logs give the same events and ids
on every re-run. `is_new_template` marks the lines of a template's first minute ever (the registry's
`first_seen`), so a re-run of the hour that introduced a template marks the same lines again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from qa_assets.lib.ingest.tables import TS
from qa_assets.lib.templates.miner import mine_templates
from qa_assets.lib.templates.registry import (
    LINEAGE_SCHEMA,
    REGISTRY_SCHEMA,
    resolve_template_ids,
    relabel_events,
    summarize_partition,
    update_registry,
)

LOG_EVENTS: dict[str, pl.DataType] = {
    "hour": TS,
    "timestamp": TS,
    "service": pl.String,
    "level": pl.String,
    "template_id": pl.String,
    "template": pl.String,
    "params": pl.List(pl.String),
    "is_new_template": pl.Boolean,
    "exception_type": pl.String,
    "trace_id": pl.String,
    "span_id": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}
# Stored with naive UTC timestamps like every other table.
TEMPLATES: dict[str, pl.DataType] = {**REGISTRY_SCHEMA, "first_seen": TS, "last_seen": TS}
LINEAGE: dict[str, pl.DataType] = {**LINEAGE_SCHEMA, "generalized_at": TS}


@dataclass(frozen=True)
class TemplatedHour:
    events: pl.DataFrame  # LOG_EVENTS
    registry: pl.DataFrame  # TEMPLATES, the whole registry after this hour
    lineage_added: pl.DataFrame  # LINEAGE rows to append


def _aware(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).cast(TS).dt.replace_time_zone("UTC") for c in columns)


def _naive(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None) for c in columns)


def template_hour(logs: pl.DataFrame, registry: pl.DataFrame, lineage: pl.DataFrame, *,
                  hour: datetime) -> TemplatedHour:
    """Mine the hour's log bodies (all services together: shapes repeat across them) and register them."""
    registry = _aware(registry, ["first_seen", "last_seen"]).select(list(REGISTRY_SCHEMA))
    lineage = _aware(lineage, ["generalized_at"]).select(list(LINEAGE_SCHEMA))
    if logs.height == 0:
        return TemplatedHour(pl.DataFrame(schema=LOG_EVENTS), _naive(registry, ["first_seen", "last_seen"]),
                             pl.DataFrame(schema=LINEAGE))
    mined = mine_templates(logs["body"].fill_null(""))
    events = pl.concat([logs.select("timestamp", "service", "level", "exception_type", "trace_id", "span_id",
                                    "source_file", "source_line"), mined], how="horizontal")
    summary = summarize_partition(events, time_column="timestamp")
    update = update_registry(registry, summary, generalized_at=hour.replace(tzinfo=None), lineage=lineage)
    events = relabel_events(events, update.assignments)
    first_minute = update.registry.select(
        "template_id", pl.col("first_seen").dt.replace_time_zone(None).dt.truncate("1m").alias("_first"))
    events = events.join(first_minute, on="template_id", how="left").with_columns(
        (pl.col("timestamp").dt.truncate("1m") == pl.col("_first")).fill_null(False).alias("is_new_template"),
        pl.lit(hour).cast(TS).alias("hour"),
    )
    return TemplatedHour(
        events=events.select([pl.col(c).cast(t) for c, t in LOG_EVENTS.items()]),
        registry=_naive(update.registry, ["first_seen", "last_seen"]),
        lineage_added=_naive(update.lineage_added, ["generalized_at"]),
    )


def recount_registry(registry: pl.DataFrame, counts: pl.DataFrame, lineage: pl.DataFrame) -> pl.DataFrame:
    """Set `line_count` from the stored events (template_id, lines), following the lineage, so re-running
    an hour never counts its lines twice."""
    resolved = counts.with_columns(resolve_template_ids(counts["template_id"], lineage).alias("template_id"))
    totals = resolved.group_by("template_id").agg(pl.col("lines").sum().cast(pl.Int64).alias("_lines"))
    return registry.join(totals, on="template_id", how="left").with_columns(
        pl.when(pl.col("status") == "active").then(pl.col("_lines").fill_null(0)).otherwise(0).alias("line_count")
    ).drop("_lines")


def templating_problems(raw_lines: int, events: pl.DataFrame) -> list[str]:
    """What went missing between the hour's raw log lines and its events: lines without an event, events
    without a template id; empty when every line has its template."""
    problems = []
    if events.height != raw_lines:
        problems.append(f"{raw_lines} raw log lines but {events.height} events")
    untemplated = events.filter(pl.col("template_id").is_null()).height if events.height else 0
    if untemplated:
        problems.append(f"{untemplated} of {events.height} events have no template id")
    return problems
