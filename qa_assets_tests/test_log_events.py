"""One hour of logs → log events with registry ids: stable across hours, identical on re-runs."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from qa_assets.lib.ingest.tables import LOGS, conform
from qa_assets.lib.templates.events import (
    LINEAGE,
    TEMPLATES,
    recount_registry,
    template_hour,
    templating_problems,
)

H0 = datetime(2025, 1, 6, 9)


def logs(hour: datetime, bodies: list[str], service: str = "cart") -> pl.DataFrame:
    return conform(pl.DataFrame({
        "hour": [hour] * len(bodies),
        "timestamp": [hour + timedelta(seconds=7 * i) for i in range(len(bodies))],
        "service": [service] * len(bodies), "level": ["INFO"] * len(bodies), "body": bodies,
        "source_file": ["f"] * len(bodies), "source_line": list(range(1, len(bodies) + 1)),
    }), LOGS)


def test_ids_are_stable_across_hours_and_new_templates_marked_once():
    first = logs(H0, [f"user {i} logged in from web" for i in range(20)] + [f"cache miss for key k{i}" for i in range(20)])
    one = template_hour(first, pl.DataFrame(schema=TEMPLATES), pl.DataFrame(schema=LINEAGE), hour=H0)
    assert one.events.select("template_id").n_unique() == 2
    assert one.events.filter(pl.col("is_new_template")).height >= 2
    h1 = H0 + timedelta(hours=1)
    second = logs(h1, [f"user {i} logged in from web" for i in range(50, 60)] + ["disk full on /var"])
    two = template_hour(second, one.registry, one.lineage_added, hour=h1)
    login = two.events.filter(pl.col("template").str.contains("logged in"))
    assert set(login["template_id"]) <= set(one.events["template_id"])
    assert not login["is_new_template"].any()
    assert two.events.filter(pl.col("template").str.contains("disk full"))["is_new_template"].all()
    params = login["params"].to_list()
    assert all(p == [str(50 + i)] for i, p in enumerate(params))


def test_rerunning_an_hour_gives_the_same_events_and_counts():
    bodies = [f"order {i} shipped to zone {i % 3}" for i in range(30)]
    first = template_hour(logs(H0, bodies), pl.DataFrame(schema=TEMPLATES), pl.DataFrame(schema=LINEAGE), hour=H0)
    again = template_hour(logs(H0, bodies), first.registry, first.lineage_added, hour=H0)
    assert again.events.equals(first.events)
    counts = again.events.group_by("template_id").agg(pl.len().alias("lines"))
    recounted = recount_registry(again.registry, counts, first.lineage_added)
    assert recounted.filter(pl.col("status") == "active")["line_count"].sum() == 30


def test_templating_problems_name_lost_lines_and_events_without_a_template():
    lines = logs(H0, [f"user {i} logged in from web" for i in range(5)] + [""])
    events = template_hour(lines, pl.DataFrame(schema=TEMPLATES), pl.DataFrame(schema=LINEAGE), hour=H0).events
    assert templating_problems(lines.height, events) == []
    assert templating_problems(lines.height + 2, events) == ["8 raw log lines but 6 events"]
    broken = events.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("template_id"))
                                 .alias("template_id"))
    assert templating_problems(lines.height, broken) == ["1 of 6 events have no template id"]
