"""The template registry: template ids that stay the same across partitions and restarts.

The registry is a small frame (one row per template ever seen) and the lineage is an append-only frame
of generalizations; the signals stage persists them as `signals.log_templates` and
`signals.template_lineage`. Everything here is a pure function of frames, so a partition can be
re-run and gives the same ids.

How a partition's mined templates meet the registry (`update_registry`):

1. A template already registered keeps its id (ids are content-addressed, see `template_id_of`); if it
   was generalized since, it resolves through the lineage to the template that replaced it.
2. A template that an active registered template covers (same tokens, `<*>` where they differ) takes
   that template's id: once a position is known to vary, a partition that shows one value there does
   not create a new template.
3. Otherwise the template is new. Registered templates it covers are generalized to it.
4. Finally the active templates are merged with each other by the miner's own rules over templates
   (`generalize_templates`), so a variable whose values arrive one per partition is still found.
   Every template replaced in steps 3 and 4 gets a lineage row `old_template_id -> new_template_id`;
   events stored with the old id never need relabeling, readers resolve them with
   `resolve_template_ids`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

import polars as pl

from qa_assets.lib.frames import require_frame
from qa_assets.lib.templates.miner import (
    DEFAULT_SETTINGS,
    SLOT,
    VARIABLE,
    MinerSettings,
    generalize_templates,
    template_id_of,
    tokenize_shape,
)

TIMESTAMP = pl.Datetime("us", "UTC")
ACTIVE = "active"
GENERALIZED = "generalized"

REGISTRY_SCHEMA: dict[str, pl.DataType] = {
    "template_id": pl.String(),
    "template": pl.String(),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
    "line_count": pl.Int64(),
    "status": pl.String(),  # `active`, or `generalized` (see the lineage for its successor)
}
LINEAGE_SCHEMA: dict[str, pl.DataType] = {
    "old_template_id": pl.String(),
    "new_template_id": pl.String(),
    "generalized_at": TIMESTAMP,
}
PARTITION_TEMPLATES_SCHEMA: dict[str, pl.DataType] = {
    "template_id": pl.String(),
    "template": pl.String(),
    "line_count": pl.Int64(),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
}
ASSIGNMENT_SCHEMA: dict[str, pl.DataType] = {
    "template_id": pl.String(),  # as mined in the partition
    "registry_template_id": pl.String(),  # the registry's id for those lines
    "registry_template": pl.String(),
}


class RegistryInputError(ValueError):
    """A frame handed to the registry lacks a column or has wrong values; the message names it."""


@dataclass(frozen=True)
class RegistryUpdate:
    """The result of matching one partition against the registry.

    `registry`: the whole registry after the update (write it back in full, or upsert by template_id).
    `lineage_added`: new lineage rows only (the lineage table is append-only).
    `assignments`: per template id mined in the partition, the registry id its lines carry.
    """

    registry: pl.DataFrame
    lineage_added: pl.DataFrame
    assignments: pl.DataFrame


def empty_registry() -> pl.DataFrame:
    return pl.DataFrame(schema=REGISTRY_SCHEMA)


def empty_lineage() -> pl.DataFrame:
    return pl.DataFrame(schema=LINEAGE_SCHEMA)


def summarize_partition(
    events: pl.DataFrame, *, seen_at: datetime | None = None, time_column: str | None = None
) -> pl.DataFrame:
    """Per template of a mined partition (`mine_templates` output, optionally with a time column): line
    count and first/last time seen, from `time_column` when given, else `seen_at` for all lines."""
    _require_columns(events, ["template_id", "template"], "events")
    if time_column is None:
        if seen_at is None:
            raise RegistryInputError("summarize_partition needs seen_at or time_column to date the templates")
        stamped = events.with_columns(pl.lit(seen_at).cast(TIMESTAMP).alias("_seen"))
    else:
        _require_columns(events, [time_column], "events")
        dtype = events.schema[time_column]
        if not isinstance(dtype, pl.Datetime):
            raise RegistryInputError(
                f"events column {time_column!r} is {dtype}, not a datetime; parse it first"
            )
        seen = pl.col(time_column).cast(pl.Datetime("us", dtype.time_zone))
        seen = seen.dt.convert_time_zone("UTC") if dtype.time_zone else seen.dt.replace_time_zone("UTC")
        stamped = events.with_columns(seen.alias("_seen"))
    return (
        stamped.group_by("template_id", "template")
        .agg(
            pl.len().cast(pl.Int64).alias("line_count"),
            pl.col("_seen").min().alias("first_seen"),
            pl.col("_seen").max().alias("last_seen"),
        )
        .select(list(PARTITION_TEMPLATES_SCHEMA))
        .sort("template_id")
    )


def update_registry(
    registry: pl.DataFrame,
    partition_templates: pl.DataFrame,
    *,
    generalized_at: datetime,
    lineage: pl.DataFrame | None = None,
    settings: MinerSettings = DEFAULT_SETTINGS,
) -> RegistryUpdate:
    """Match a partition's templates (`summarize_partition` output) against the registry.

    `lineage` (the stored lineage) lets a template that was generalized earlier resolve to its successor;
    `generalized_at` stamps the lineage rows this update adds. Deterministic: the same inputs give the
    same ids, so re-running a partition changes nothing but the counts it adds.
    """
    _require_columns(registry, list(REGISTRY_SCHEMA), "registry")
    _require_columns(partition_templates, list(PARTITION_TEMPLATES_SCHEMA), "partition_templates")
    lineage = empty_lineage() if lineage is None else lineage
    _require_columns(lineage, list(LINEAGE_SCHEMA), "lineage")
    stamp = _as_utc_value(generalized_at)

    rows: dict[str, dict] = {row["template_id"]: dict(row) for row in registry.iter_rows(named=True)}
    by_length: dict[int, list[str]] = defaultdict(list)  # template ids by token count: covering keeps length
    for template_id, row in rows.items():
        by_length[len(_tokens(row["template"]))].append(template_id)
    successor = _successors(lineage)
    added: list[dict] = []
    assignment: dict[str, str] = {}

    def retire(old_id: str, new_id: str) -> None:
        if old_id == new_id or rows[old_id]["status"] != ACTIVE:
            return
        rows[old_id]["status"] = GENERALIZED
        successor[old_id] = new_id
        added.append({"old_template_id": old_id, "new_template_id": new_id, "generalized_at": stamp})

    def current(template_id: str) -> str:
        seen = set()
        while template_id in successor and template_id not in seen:
            seen.add(template_id)
            template_id = successor[template_id]
        return template_id

    for row in partition_templates.sort("template").iter_rows(named=True):
        mined_id, text = row["template_id"], row["template"]
        registry_id = template_id_of(text)
        if registry_id in rows:
            target = current(registry_id)
        else:
            target = _covering(text, rows, by_length)
            if target is None:
                rows[registry_id] = {
                    "template_id": registry_id,
                    "template": text,
                    "first_seen": row["first_seen"],
                    "last_seen": row["last_seen"],
                    "line_count": 0,
                    "status": ACTIVE,
                }
                by_length[len(_tokens(text))].append(registry_id)
                for covered in _covered_by(text, rows, by_length):
                    _absorb_counts(rows[registry_id], rows[covered])
                    retire(covered, registry_id)
                target = registry_id
        _add_counts(rows[target], row)
        assignment[mined_id] = target

    # Step 4: merge active templates with each other, with the miner's rules applied to templates.
    active = sorted((r for r in rows.values() if r["status"] == ACTIVE), key=lambda r: r["template"])
    general = generalize_templates(
        [r["template"] for r in active], [r["line_count"] for r in active], settings
    )
    by_text = {r["template"]: r for r in active}
    for old_text, new_text in sorted(general.items()):
        new_id = current(template_id_of(new_text))  # a template generalized before: its successor
        if new_id not in rows:
            rows[new_id] = {
                "template_id": new_id,
                "template": new_text,
                "first_seen": None,
                "last_seen": None,
                "line_count": 0,
                "status": ACTIVE,
            }
        _absorb_counts(rows[new_id], by_text[old_text])
        retire(by_text[old_text]["template_id"], new_id)

    new_registry = pl.DataFrame(list(rows.values()), schema=REGISTRY_SCHEMA).sort("template_id")
    texts = dict(zip(new_registry["template_id"], new_registry["template"], strict=True))
    assignments = pl.DataFrame(
        [
            {
                "template_id": mined,
                "registry_template_id": current(target),
                "registry_template": texts[current(target)],
            }
            for mined, target in sorted(assignment.items())
        ],
        schema=ASSIGNMENT_SCHEMA,
    )
    return RegistryUpdate(new_registry, pl.DataFrame(added, schema=LINEAGE_SCHEMA), assignments)


def resolve_template_ids(template_ids: pl.Series, lineage: pl.DataFrame) -> pl.Series:
    """Map template ids (stored with old events, say) to the templates that replaced them, following the
    lineage to its end; ids never generalized come back unchanged."""
    _require_columns(lineage, ["old_template_id", "new_template_id"], "lineage")
    successor = _successors(lineage)
    final: dict[str, str] = {}
    for start in successor:
        seen = set()
        node = start
        while node in successor and node not in seen:
            seen.add(node)
            node = successor[node]
        final[start] = node
    if not final:
        return template_ids.cast(pl.String)
    mapping = pl.DataFrame(
        {"old": list(final), "new": list(final.values())}, schema={"old": pl.String, "new": pl.String}
    )
    return template_ids.cast(pl.String).replace(mapping["old"], mapping["new"])


def relabel_events(events: pl.DataFrame, assignments: pl.DataFrame) -> pl.DataFrame:
    """Give a mined partition's events the registry's template ids and texts (`RegistryUpdate.assignments`).

    Where the registry's template is more general than the mined one, `params` (if present) is rebuilt
    for it: the line is put back together from the mined template and its parameters, then split by the
    registry's template, so the parameters always fill the template the event carries.
    """
    _require_columns(events, ["template_id", "template"], "events")
    _require_columns(assignments, list(ASSIGNMENT_SCHEMA), "assignments")
    joined = events.join(assignments, on="template_id", how="left", maintain_order="left")
    relabeled = joined.with_columns(
        pl.coalesce("registry_template_id", "template_id").alias("template_id"),
        pl.coalesce("registry_template", "template").alias("template"),
    )
    if "params" in events.columns:
        relabeled = relabeled.with_columns(_reparametrize(joined))
    return relabeled.drop("registry_template_id", "registry_template")


def _reparametrize(joined: pl.DataFrame) -> pl.Series:
    changed = (
        joined.with_row_index("_row")
        .filter(
            pl.col("registry_template").is_not_null() & (pl.col("registry_template") != pl.col("template"))
        )
        .select("_row", "template", "registry_template", "params")
    )
    if changed.height == 0:
        return joined["params"]
    parts = []
    for (old, new), lines in changed.partition_by("template", "registry_template", as_dict=True).items():
        pieces = old.split(VARIABLE)
        message = [pl.lit(pieces[0])]
        for index, piece in enumerate(pieces[1:]):
            message += [pl.col("params").list.get(index, null_on_oob=True).fill_null(""), pl.lit(piece)]
        extracted = pl.concat_str(message).str.extract_groups(_template_regex(new))
        fields = [extracted.struct.field(f"p{i}") for i in range(new.count(VARIABLE))]
        params = pl.concat_list(fields) if fields else pl.lit([], dtype=pl.List(pl.String))
        parts.append(lines.select("_row", params.alias("params")))
    rebuilt = pl.concat(parts)
    # Null except on rebuilt lines, then coalesce: keeps the untouched lists where they are.
    source = pl.concat([rebuilt["params"], pl.Series([None], dtype=rebuilt["params"].dtype)], rechunk=False)
    position = pl.repeat(rebuilt.height, joined.height, dtype=pl.UInt32, eager=True).scatter(
        rebuilt["_row"], pl.int_range(rebuilt.height, dtype=pl.UInt32, eager=True)
    )
    return pl.select(pl.coalesce(source.gather(position), joined["params"])).to_series().alias("params")


def _template_regex(template: str) -> str:
    literal = [re.sub(r"(?:\\\s)+", r"\\s+", re.escape(piece)) for piece in template.split(VARIABLE)]
    groups = "".join(f"(?P<p{i}>.*?){piece}" for i, piece in enumerate(literal[1:]))
    return "(?s)^" + literal[0] + groups + "$"


# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _tokens(template: str) -> tuple[str, ...]:
    return tuple(token.text for token in tokenize_shape(template.replace(VARIABLE, SLOT)))


def _covers(general: tuple[str, ...], specific: tuple[str, ...]) -> bool:
    """Token by token: equal, or a whole-token variable in `general`; and at least one of those."""
    if len(general) != len(specific) or general == specific:
        return False
    return all(g in (s, SLOT) for g, s in zip(general, specific, strict=True))


def _covering(template: str, rows: dict[str, dict], by_length: dict[int, list[str]]) -> str | None:
    """The most specific active registered template that covers `template` (fewest variables)."""
    tokens = _tokens(template)
    candidates = [
        rows[template_id]
        for template_id in by_length.get(len(tokens), ())
        if rows[template_id]["status"] == ACTIVE and _covers(_tokens(rows[template_id]["template"]), tokens)
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda r: (_tokens(r["template"]).count(SLOT), r["template_id"]))
    return best["template_id"]


def _covered_by(template: str, rows: dict[str, dict], by_length: dict[int, list[str]]) -> list[str]:
    tokens = _tokens(template)
    return sorted(
        template_id
        for template_id in by_length.get(len(tokens), ())
        if rows[template_id]["status"] == ACTIVE and _covers(tokens, _tokens(rows[template_id]["template"]))
    )


def _add_counts(target: dict, partition_row: dict) -> None:
    target["line_count"] += int(partition_row["line_count"])
    target["first_seen"] = _earliest(target["first_seen"], partition_row["first_seen"])
    target["last_seen"] = _latest(target["last_seen"], partition_row["last_seen"])


def _absorb_counts(target: dict, source: dict) -> None:
    """A generalized template takes over the history of the templates it replaces."""
    target["line_count"] += int(source["line_count"])
    target["first_seen"] = _earliest(target["first_seen"], source["first_seen"])
    target["last_seen"] = _latest(target["last_seen"], source["last_seen"])


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _successors(lineage: pl.DataFrame) -> dict[str, str]:
    successor: dict[str, str] = {}
    for old, new in lineage.sort("generalized_at").select("old_template_id", "new_template_id").iter_rows():
        successor[old] = new
    return successor


def _require_columns(frame: pl.DataFrame, columns: Iterable[str], name: str) -> None:
    require_frame(frame, name, list(columns), _PRODUCERS.get(name, name), RegistryInputError)


_PRODUCERS = {"events": "signals.log_events", "registry": "signals.log_templates",
              "partition_templates": "partition's mined templates", "lineage": "signals.log_template_lineage",
              "assignments": "template assignment"}


def _as_utc_value(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
