"""Deployment events straight from the landing folder, for the deployment sensor (no warehouse needed).

The cursor maps each deployment file to the size it had when read; a file seen again with the same size
is skipped, a grown or new one is parsed and the events not seen before (by event id) are returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from qa_assets.lib.ingest.cdevents import parse_cdevents
from qa_assets.lib.ingest.reader import read_whole

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
MAX_REMEMBERED_IDS = 5000


@dataclass
class FoundEvents:
    events: list[dict] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    known_services: list[str] = field(default_factory=list)


def _catalog_services(landing: Path) -> list[str]:
    from qa_assets.lib.ingest.catalog import parse_catalog

    names: set[str] = set()
    for path in sorted((landing / "catalog").glob("**/*")) if (landing / "catalog").is_dir() else []:
        if path.is_file():
            data, _ = read_whole(path)
            result = parse_catalog(data, str(path))
            names.update(n for n in result.accepted["name"].to_list() if n)
    return sorted(names)


def deployment_events_since(landing: Path, cursor: dict) -> FoundEvents:
    """New deployment events under `landing/deployments`, each with the hour partitions to verify
    (the hour of the event and the next one: symptoms of a bad deploy show in the minutes after it)."""
    sizes: dict[str, int] = dict(cursor.get("sizes", {}))
    seen: list[str] = list(cursor.get("seen", []))
    seen_set = set(seen)
    found = FoundEvents()
    folder = landing / "deployments"
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            size = path.stat().st_size
            if sizes.get(str(path)) == size:
                continue
            data, problem = read_whole(path)
            if problem:
                found.problems.append(f"{path}: {problem}")
            result = parse_cdevents(data, str(path))
            for reason in result.quarantine["reason"].to_list():
                found.problems.append(f"{path}: {reason}")
            for row in result.accepted.iter_rows(named=True):
                if row["event_id"] in seen_set or row["timestamp"] is None:
                    continue
                seen_set.add(row["event_id"])
                seen.append(row["event_id"])
                hour = row["timestamp"].replace(minute=0, second=0, microsecond=0)
                found.events.append({
                    "event_id": row["event_id"], "event_type": row["event_type"], "service": row["service"],
                    "version": row["version"], "change_kind": row["change_kind"], "timestamp": row["timestamp"],
                    "partition_keys": [hour.strftime(PARTITION_FORMAT),
                                       (hour + timedelta(hours=1)).strftime(PARTITION_FORMAT)],
                })
            sizes[str(path)] = size
    if found.events:
        found.known_services = _catalog_services(landing)
    found.cursor = {"sizes": sizes, "seen": seen[-MAX_REMEMBERED_IDS:]}
    return found
