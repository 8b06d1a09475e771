"""The QA knowledge base: one row per defect, defect → cause → resolution → artifacts.

Human feedback (governance ``FEEDBACK``) wins over the models: a corrected defect type, severity or root
cause (service, change) replaces the automated value, a rejection marks the defect ``rejected``, and the latest
verdict is quoted in ``review``. The resolution is read from the status and the deployments around the end:

- ``open`` → ``open: no resolution yet``; ``regression`` → seen again after it had been resolved;
  ``rejected`` → not a defect;
- ``resolved`` → the deployment of the cause's (or the defect's) service that ended it (the latest one
  before the symptoms stopped, else the first one shortly after; see ``resolution_changes``): "resolved
  after rollback of X to V", "after config change …", "after deploying X V"; without one, "resolved without
  a recorded change".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    TS,
    feedback_events,
    iso,
    one_line,
    require_frame,
    top_causes,
)

KNOWLEDGE_BASE: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    "fingerprint": pl.String,
    "service": pl.String,
    "defect_type": pl.String,
    "severity": pl.String,
    "status": pl.String,
    "cause_service": pl.String,
    "cause_kind": pl.String,
    "change_id": pl.String,
    "cause_confidence": pl.Float64,
    "resolution": pl.String,
    "resolved_at": TS,
    "resolution_change_id": pl.String,
    "corrected_by_feedback": pl.List(pl.String),  # the columns a person corrected
    "review": pl.String,  # the latest human verdict: who, when, comment
    "artifacts": pl.List(pl.String),  # paths of the defect's artifacts
    "first_seen": TS,
    "last_seen": TS,
}
DEFECT_COLUMNS = ("defect_id", "fingerprint", "service", "defect_type", "severity", "status", "first_seen",
                  "last_seen")
CAUSE_COLUMNS = ("defect_id", "rank", "service", "cause_kind", "change_id", "confidence")
# feedback fields (governance FEEDBACK) -> the knowledge-base column they correct
_CORRECTED_COLUMN = {
    "defect_type": "defect_type",
    "severity": "severity",
    "root_cause_service": "cause_service",
    "root_cause_change_id": "change_id",
}


def empty_knowledge_base() -> pl.DataFrame:
    return pl.DataFrame(schema=KNOWLEDGE_BASE)


def _artifact_lists(artifact_paths: Any) -> dict[str, list[str]]:
    if artifact_paths is None:
        return {}
    if isinstance(artifact_paths, pl.DataFrame):
        require_frame(artifact_paths, "artifact_paths", ("defect_id", "path"), "the artifact index")
        grouped = artifact_paths.filter(pl.col("path").is_not_null()).group_by("defect_id").agg(
            pl.col("path").unique().sort())
        return {r["defect_id"]: list(r["path"]) for r in grouped.to_dicts()}
    return {str(k): sorted(str(p) for p in v) for k, v in dict(artifact_paths).items()}


def resolution_changes(defects: pl.DataFrame, causes: pl.DataFrame, deployments: pl.DataFrame | None,
                        slack: timedelta, lookahead: timedelta) -> dict[str, dict[str, Any]]:
    """Per resolved defect, the deployment of the cause's or the defect's service that most likely ended it.

    A fix lands before the symptoms stop: the latest change after ``first_seen`` and no later than
    ``last_seen + slack`` (one or two windows: the last anomalous window may straddle the fix). Without one,
    the first change in the ``lookahead`` after ``last_seen`` (deployment events can be stamped late). Changes
    of the cause's service come before the defect's own (the fix belongs where the cause is); the change
    blamed for the defect never counts as its fix."""
    if deployments is None or deployments.height == 0:
        return {}
    require_frame(deployments, "deployments", ("event_id", "event_type", "timestamp", "service", "version"),
                  "raw.deployments")
    resolved = defects.filter(pl.col("status") == "resolved").select("defect_id", "service", "first_seen",
                                                                      "last_seen")
    if resolved.height == 0:
        return {}
    candidates = resolved.join(
        causes.select("defect_id", pl.col("service").alias("cause_service"), "change_id"),
        on="defect_id", how="left",
    )
    services = pl.concat([
        candidates.select("defect_id", "first_seen", "last_seen", "change_id", pl.col("service").alias("on"),
                          on_cause=pl.col("service") == pl.col("cause_service").fill_null("")),
        candidates.select("defect_id", "first_seen", "last_seen", "change_id", pl.col("cause_service").alias("on"),
                          on_cause=pl.lit(True)),
    ]).filter(pl.col("on").is_not_null()).unique()
    extra = [c for c in ("change_kind", "previous_version") if c in deployments.columns]
    changes = deployments.select(pl.col("service").alias("on"), pl.col("event_id").alias("resolution_change_id"),
                                 "event_type", "timestamp", "version", *extra)
    end = pl.col("last_seen").fill_null(pl.col("first_seen"))
    found = (
        services.join(changes, on="on", how="inner")
        .filter(
            (pl.col("timestamp") > pl.col("first_seen"))
            & (pl.col("timestamp") <= end + lookahead)
            & (pl.col("change_id").is_null() | (pl.col("resolution_change_id") != pl.col("change_id")))
        )
        .with_columns(before_end=pl.col("timestamp") <= end + slack)
        # before the end: the latest first; after it: the earliest first
        .with_columns(order=pl.when(pl.col("before_end")).then(-pl.col("timestamp").dt.epoch("us"))
                      .otherwise(pl.col("timestamp").dt.epoch("us")))
        .sort(["defect_id", "before_end", "on_cause", "order"], descending=[False, True, True, False])
        .group_by("defect_id", maintain_order=True)
        .first()
    )
    return {r["defect_id"]: r for r in found.to_dicts()}


def _describe_change(change: dict[str, Any]) -> str:
    service = one_line(change.get("on"), 80)
    version = one_line(change.get("version"), 60)
    when = iso(change.get("timestamp"))
    ident = one_line(change.get("resolution_change_id"), 80)
    if change.get("event_type") == "rolledback":
        return f"resolved after rollback of {service} to {version} (change {ident}, {when})"
    if change.get("change_kind") == "config":
        return f"resolved after config change {version} on {service} (change {ident}, {when})"
    return f"resolved after deploying {service} {version} (change {ident}, {when})"


def knowledge_base(
    defects: pl.DataFrame,
    root_causes: pl.DataFrame,
    feedback: pl.DataFrame | None,
    artifact_paths: pl.DataFrame | dict[str, list[str]] | None,
    *,
    deployments: pl.DataFrame | None = None,
    resolution_slack_minutes: float = 2.0,
    resolution_lookahead_minutes: float = 15.0,
) -> pl.DataFrame:
    """One ``KNOWLEDGE_BASE`` row per defect (see the module docstring).

    ``feedback``: governance ``FEEDBACK`` rows (or their long form, ``feedback_as_events``).
    ``artifact_paths``: the artifact index (rows with defect_id and path) or {defect_id: [paths]}.
    ``deployments`` (raw.deployments) lets the resolution name the change that ended a defect."""
    defects = require_frame(defects, "defects", DEFECT_COLUMNS, "defects.defects")
    root_causes = require_frame(root_causes, "root_causes", CAUSE_COLUMNS, "rca.root_causes")
    if defects.height == 0:
        return empty_knowledge_base()
    causes = top_causes(root_causes)
    paths = _artifact_lists(artifact_paths)
    events = feedback_events(feedback)
    changes = resolution_changes(defects, causes, deployments, timedelta(minutes=resolution_slack_minutes),
                                  timedelta(minutes=resolution_lookahead_minutes))
    cause_by = {r["defect_id"]: r for r in causes.to_dicts()}
    corrections: dict[str, dict[str, Any]] = {}
    latest: dict[str, dict[str, Any]] = {}
    # events are sorted by time: later corrections of a field replace earlier ones
    for event in events.to_dicts():
        latest[event["defect_id"]] = event
        column = _CORRECTED_COLUMN.get(str(event.get("field") or ""))
        if event.get("action") == "correct" and column and event.get("value") is not None:
            corrections.setdefault(event["defect_id"], {})[column] = event["value"]

    rows = []
    # per defect: defects are few, and each resolution is its own sentence
    for defect in defects.to_dicts():
        defect_id = defect["defect_id"]
        cause = cause_by.get(defect_id, {})
        fixed = corrections.get(defect_id, {})
        review = latest.get(defect_id)
        status = "rejected" if review is not None and review.get("action") == "reject" else defect.get("status")
        cause_fixed = bool({"cause_service", "change_id"} & set(fixed))
        row = {
            "defect_id": defect_id,
            "fingerprint": defect.get("fingerprint"),
            "service": defect.get("service"),
            "defect_type": fixed.get("defect_type", defect.get("defect_type")),
            "severity": fixed.get("severity", defect.get("severity")),
            "status": status,
            "cause_service": fixed.get("cause_service", cause.get("service")),
            # a person named another cause: the model's kind and change no longer describe it
            "cause_kind": None if cause_fixed and "cause_service" in fixed
            and fixed["cause_service"] != cause.get("service") else cause.get("cause_kind"),
            "change_id": fixed.get("change_id", None if "cause_service" in fixed
                                   and fixed["cause_service"] != cause.get("service") else cause.get("change_id")),
            "cause_confidence": 1.0 if cause_fixed or (review is not None and review.get("action") == "approve")
            else cause.get("confidence"),
            "corrected_by_feedback": sorted(fixed),
            "review": _review_text(review),
            "artifacts": paths.get(defect_id, []),
            "first_seen": defect.get("first_seen"),
            "last_seen": defect.get("last_seen"),
        }
        row.update(_resolution(defect, status, changes.get(defect_id)))
        rows.append(row)
    return pl.DataFrame(rows, schema=KNOWLEDGE_BASE)


def _review_text(event: dict[str, Any] | None) -> str | None:
    if event is None:
        return None
    who = one_line(event.get("author"), 60) or "someone"
    when = iso(event.get("created_at"))
    verb = {"approve": "approved", "reject": "rejected", "correct": "corrected"}.get(str(event.get("action")),
                                                                                    str(event.get("action")))
    note = f": {one_line(event['comment'], 300)}" if event.get("comment") else ""
    return f"{verb} by {who} at {when}{note}"


def _resolution(defect: dict[str, Any], status: str | None, change: dict[str, Any] | None) -> dict[str, Any]:
    resolved_at: datetime | None = defect.get("last_seen") if status == "resolved" else None
    change_id = None
    if status == "rejected":
        text = "rejected in triage: not a defect"
    elif status == "regression":
        text = "regression: seen again after it had been resolved"
    elif status == "resolved" and change is not None:
        text = _describe_change(change)
        change_id = change.get("resolution_change_id")
    elif status == "resolved":
        text = f"resolved without a recorded change: the symptoms stopped at {iso(defect.get('last_seen'))}"
    else:
        text = "open: no resolution yet"
    return {"resolution": text, "resolved_at": resolved_at, "resolution_change_id": change_id}
