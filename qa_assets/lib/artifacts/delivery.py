"""Ticket delivery: the GitHub and Jira payload files filed on the trackers, through an outbox.

``qa.ticket_outbox`` (``OUTBOX``) has one row per defect and tracker (``ticket_id`` = ``<tracker>:<defect_id>``).
Each run first plans (``plan_outbox``), then sends what is due (``deliver_outbox``):

- ``rejected``: a reviewer rejected the defect (feedback ``reject``, or ``defects.defects`` status rejected);
  it is never filed.
- ``delivered``: the tracker holds exactly this payload (``payload_sha256 == delivered_sha256``); nothing is sent.
- ``held_for_review``: escalation. A defect of a review severity (S1) or with a classification confidence below
  the threshold is not filed automatically; feedback ``approve`` or ``correct`` about it (docs/feedback.md,
  ``qa-assets feedback DEFECT --approve``) releases it on the next run. An approval stays valid for later
  payloads of the same defect.
- ``pending``: due. Without a remote issue it is created (GitHub ``POST …/issues``, remembering ``number``;
  Jira ``POST /rest/api/3/issue``, remembering ``key``); with one, that issue is updated in place (GitHub
  ``PATCH …/issues/{number}``, Jira ``PUT /rest/api/3/issue/{key}``), so a defect never gets a second ticket.
  A tracker that cannot be reached (or answers 5xx/429) leaves the row ``pending`` with ``last_error``: the run
  does not fail and the next run tries again. After one such failure the tracker's other tickets wait for the
  next run instead of each waiting out its own retries.
- ``failed``: the tracker refused the request (a 4xx other than 408/429, e.g. a Jira field its project lacks);
  ``last_error`` holds its answer. It is tried again on every run, so fixing the setting is enough. (An issue
  deleted on the tracker keeps failing its updates: delete the outbox row to file a new one.)

Tokens never reach the table: ``Tracker.headers`` is built from environment variables at run time.
``attempts`` counts every HTTP request made for the ticket.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from qa_assets.lib import governance
from qa_assets.lib import warehouse as wh
from qa_assets.lib.http_client import send_json

TS = pl.Datetime("us")
OUTBOX_TABLE = "qa.ticket_outbox"
OUTBOX: dict[str, pl.DataType] = {
    "ticket_id": pl.String,  # <tracker>:<defect_id>
    "defect_id": pl.String,
    "tracker": pl.String,  # github | jira
    "payload_path": pl.String,  # the payload file under the artifacts folder (qa.artifacts path)
    "payload_sha256": pl.String,  # of the current payload file
    "delivered_sha256": pl.String,  # of the payload the tracker last accepted; null until then
    "status": pl.String,  # one of OUTBOX_STATUSES
    "attempts": pl.Int64,  # HTTP requests made for this ticket, retries included
    "last_error": pl.String,  # the last failure, or why the ticket was not attempted; null after a delivery
    "review_reason": pl.String,  # why it is held (or rejected, or who released it)
    "remote_id": pl.String,  # GitHub issue number / Jira issue id
    "remote_key": pl.String,  # OWNER/REPO#number / Jira key (QA-123)
    "remote_url": pl.String,  # the web page
    "created_at": TS,
    "delivered_at": TS,
    "updated_at": TS,
}
OUTBOX_STATUSES = ("pending", "delivered", "failed", "held_for_review", "rejected")
KIND_TRACKER = {"github_issue": "github", "jira_issue": "jira"}  # qa.artifacts kind -> tracker
TRACKER_NAMES = {"github": "GitHub issue", "jira": "Jira issue"}
JIRA_CREATE_ONLY = ("project", "issuetype")  # Jira's edit screen refuses these fields
POLICY_VERSION = "outbox-v1"
_TRACKER_DOWN = frozenset({401, 403, 407})  # credentials or proxy: every other ticket would be refused too


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ------------------------------------------------------------------------------------ trackers


@dataclass(frozen=True)
class Tracker:
    """A tracker's create endpoint and its request headers (authentication is read from the environment
    by the caller; it is never stored)."""

    name: str  # github | jira
    url: str  # https://api.github.com/repos/OWNER/REPO/issues, or https://SITE/rest/api/3/issue
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.name not in TRACKER_NAMES:
            raise ValueError(f"unknown tracker {self.name!r}; use one of {', '.join(TRACKER_NAMES)}")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"{self.name} endpoint {self.url!r} is not an http(s) URL")

    def request(self, payload: dict[str, Any], remote_id: str | None, remote_key: str | None
                ) -> tuple[str, str, dict[str, Any]]:
        """(method, url, body): create the issue, or update the one filed before."""
        base = self.url.rstrip("/")
        if self.name == "github":
            if remote_id:
                return "PATCH", f"{base}/{urllib.parse.quote(remote_id, safe='')}", payload
            return "POST", base, payload
        if remote_key:
            fields = {k: v for k, v in (payload.get("fields") or {}).items() if k not in JIRA_CREATE_ONLY}
            return "PUT", f"{base}/{urllib.parse.quote(remote_key, safe='')}", {"fields": fields}
        return "POST", base, payload

    def remote(self, answer: Any) -> dict[str, str | None] | None:
        """remote_id, remote_key and remote_url from a create answer; None when it names no issue."""
        if not isinstance(answer, dict):
            return None
        if self.name == "github":
            number = answer.get("number")
            if number is None:
                return None
            path = urllib.parse.urlsplit(self.url).path.strip("/").split("/")
            repo = f"{path[1]}/{path[2]}" if len(path) >= 4 and path[0] == "repos" else ""
            return {"remote_id": str(number), "remote_key": f"{repo}#{number}",
                    "remote_url": answer.get("html_url") or answer.get("url")}
        key = answer.get("key")
        if not key:
            return None
        site = self.url.split("/rest/", 1)[0] if "/rest/" in self.url else None
        return {"remote_id": None if answer.get("id") is None else str(answer["id"]), "remote_key": str(key),
                "remote_url": f"{site}/browse/{key}" if site else answer.get("self")}


def github_tracker(url: str, token: str | None = None) -> Tracker:
    """GitHub REST: ``url`` is the repository's issues endpoint; ``token`` a fine-grained or classic token."""
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Tracker("github", url, headers)


def jira_tracker(url: str, token: str | None = None, user: str | None = None) -> Tracker:
    """Jira REST v3: ``url`` is ``https://SITE/rest/api/3/issue``. With ``user`` (Jira Cloud: the account's
    e-mail) the token is an API token sent as basic auth; without, a personal access token (Bearer)."""
    import base64

    headers = {"Accept": "application/json"}
    if token and user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return Tracker("jira", url, headers)


@dataclass(frozen=True)
class ReviewPolicy:
    """Which defects wait for a person before a ticket is filed (escalation)."""

    confidence_below: float = 0.6  # the defects stage marks the same classifications needs_review
    severities: tuple[str, ...] = ("S1",)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # requests per ticket and run
    backoff_s: float = 1.0  # then 2, 4, ... seconds
    timeout_s: float = 10.0


# ------------------------------------------------------------------------------------ planning


def review_verdicts(defects: pl.DataFrame, feedback: pl.DataFrame | None, policy: ReviewPolicy) -> pl.DataFrame:
    """Per defect: ``review`` (release | hold | reject) and ``review_reason``.

    A person's latest feedback wins (reject, or approve/correct releases); otherwise a review severity or a
    confidence below the threshold holds the ticket."""
    base = defects.select("defect_id", "severity", "confidence", "status")
    if feedback is not None and feedback.height:
        latest = governance.latest_feedback(feedback).select(
            "defect_id", pl.col("decision").alias("_verdict"), pl.col("author").alias("_author"))
    else:
        latest = pl.DataFrame(schema={"defect_id": pl.String, "_verdict": pl.String, "_author": pl.String})
    joined = base.join(latest, on="defect_id", how="left")
    verdict, confidence = pl.col("_verdict"), pl.col("confidence")
    held_severity = pl.col("severity").is_in(list(policy.severities))
    low = confidence.is_null() | (confidence < policy.confidence_below)
    return joined.select(
        "defect_id",
        pl.when(verdict == "reject").then(pl.lit("reject"))
        .when(pl.col("status") == governance.REJECTED_STATUS).then(pl.lit("reject"))
        .when(verdict.is_in(["approve", "correct"])).then(pl.lit("release"))
        .when(held_severity | low).then(pl.lit("hold"))
        .otherwise(pl.lit("release")).alias("review"),
        pl.when(verdict == "reject").then(pl.format("rejected in review by {}", pl.col("_author")))
        .when(pl.col("status") == governance.REJECTED_STATUS).then(pl.lit("rejected in triage"))
        .when(verdict == "approve").then(pl.format("approved by {}", pl.col("_author")))
        .when(verdict == "correct").then(pl.format("corrected by {}", pl.col("_author")))
        .when(held_severity).then(pl.format("severity {} is filed only after a person approves it", "severity"))
        .when(confidence.is_null()).then(pl.lit("the classification has no confidence"))
        .when(low).then(pl.format(f"classification confidence {{}} is below {policy.confidence_below}",
                                  confidence.round(2)))
        .otherwise(pl.lit(None, pl.String)).alias("review_reason"),
    )


def plan_outbox(
    outbox: pl.DataFrame,
    tickets: pl.DataFrame,
    verdicts: pl.DataFrame,
    *,
    trackers: Collection[str],
    now: datetime | None = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The outbox rows of this run's ticket payloads, and the hold/reject events among them.

    ``tickets``: ``qa.artifacts`` rows (``defect_id, kind, path, sha256``); only kinds of ``trackers`` count.
    Rows of other defects are not returned (they stay as they are)."""
    now = now or utc_now()
    existing = {row["ticket_id"]: row for row in outbox.to_dicts()}
    review = {row["defect_id"]: row for row in verdicts.to_dicts()}
    wanted = tickets.filter(pl.col("kind").is_in(list(KIND_TRACKER)) & pl.col("path").is_not_null())
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    # a loop per ticket: two per defect at most
    for ticket in wanted.sort("defect_id", "kind").to_dicts():
        tracker = KIND_TRACKER[ticket["kind"]]
        if tracker not in trackers:
            continue
        defect_id = str(ticket["defect_id"])
        ticket_id = f"{tracker}:{defect_id}"
        old = existing.get(ticket_id)
        row = dict(old) if old else {**dict.fromkeys(OUTBOX), "ticket_id": ticket_id, "defect_id": defect_id,
                                      "tracker": tracker, "attempts": 0, "created_at": now}
        verdict = review.get(defect_id) or {"review": "hold",
                                            "review_reason": "the defect is not in defects.defects"}
        sha = ticket["sha256"]
        if verdict["review"] == "reject":
            status = "rejected"
        elif row["delivered_sha256"] == sha:
            status = "delivered"
        elif verdict["review"] == "hold":
            status = "held_for_review"
        elif old and old["status"] == "failed" and old["payload_sha256"] == sha:
            status = "failed"
        else:
            status = "pending"
        changed = old is None or old["status"] != status or old["payload_sha256"] != sha
        row.update(payload_path=ticket["path"], payload_sha256=sha, status=status,
                   review_reason=verdict["review_reason"])
        if changed:
            row["updated_at"] = now
            if status in ("held_for_review", "rejected"):
                events.append(_event(row, "held" if status == "held_for_review" else "rejected"))
        rows.append(row)
    return pl.DataFrame(rows, schema=OUTBOX), events


def _event(row: Mapping[str, Any], action: str) -> dict[str, Any]:
    keys = ("defect_id", "tracker", "payload_sha256", "remote_key", "remote_url", "review_reason", "last_error")
    return {**{k: row.get(k) for k in keys}, "action": action}


# ------------------------------------------------------------------------------------ delivering


def _sha256_file(path: str) -> tuple[dict[str, Any], str]:
    data = Path(path).read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def deliver_outbox(
    outbox: pl.DataFrame,
    trackers: Mapping[str, Tracker],
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = utc_now,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    log: Any = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Send the ``pending`` and ``failed`` rows; returns the rows after delivery and the created/updated events.

    Never raises for a tracker's failure. ``on_result`` gets each row as soon as its request is answered,
    so a caller can store it at once (a ticket created and then forgotten would be filed twice); store the
    returned rows too (rows not attempted this run carry the reason in ``last_error``)."""
    retry = retry or RetryPolicy()
    rows = outbox.to_dicts()
    down: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    for row in rows:
        tracker = trackers.get(row["tracker"])
        if row["status"] not in ("pending", "failed") or tracker is None:
            continue
        if tracker.name in down:  # no request made: stored with the rest by the caller
            row.update(last_error=f"not attempted: {down[tracker.name]}", updated_at=now())
            continue
        try:
            payload, sha = _sha256_file(row["payload_path"])
        except (OSError, ValueError) as exc:
            row.update(status="failed", updated_at=now(),
                       last_error=f"payload {row['payload_path']} cannot be read ({exc}): materialize qa/artifacts")
            if on_result:
                on_result(row)
            continue
        method, url, body = tracker.request(payload, row["remote_id"], row["remote_key"])
        result = send_json(method, url, body, headers=tracker.headers, attempts=retry.attempts,
                           timeout_s=retry.timeout_s, backoff_s=retry.backoff_s, sleep=sleep, log=log)
        row["attempts"] = (row["attempts"] or 0) + result.attempts
        row["updated_at"] = now()
        action = "created" if method == "POST" else "updated"
        remote = tracker.remote(result.body) if result.ok and action == "created" else {}
        if result.ok and remote is None:
            row.update(status="failed", last_error=(
                f"{method} {url} answered HTTP {result.status} without an issue "
                f"{'number' if tracker.name == 'github' else 'key'}: check that the URL is the issues endpoint"))
        elif result.ok:
            row.update(remote or {})
            row.update(status="delivered", payload_sha256=sha, delivered_sha256=sha, delivered_at=row["updated_at"],
                       last_error=None)
            events.append(_event(row, action))
        else:
            row.update(status="pending" if result.retryable else "failed", last_error=result.error)
            if result.retryable or result.status in _TRACKER_DOWN or (action == "created" and result.status == 404):
                down[tracker.name] = f"{tracker.name} failed earlier in this run ({result.error})"
        if on_result:
            on_result(row)
    return pl.DataFrame(rows, schema=OUTBOX), events


# ------------------------------------------------------------------------------------ recording


def ticket_decisions(events: list[dict[str, Any]], defects: pl.DataFrame) -> pl.DataFrame:
    """``governance.decision_log`` rows (stage qa_artifacts, decision ``ticket``, subject the defect) for
    tickets created, updated, held for review or rejected. One decision per tracker, action and payload
    version, so a re-run that changes nothing logs nothing new."""
    if not events:
        return pl.DataFrame(schema=governance.DECISION_LOG)
    facts = {row["defect_id"]: row for row in defects.select(
        "defect_id", "service", "defect_type", "severity", "confidence").to_dicts()}
    rows = []
    for event in events:
        defect = facts.get(event["defect_id"], {})
        what = (f"{defect.get('severity') or 'S?'} {defect.get('defect_type') or 'defect'} in "
                f"{defect.get('service') or '?'}")
        name = TRACKER_NAMES[event["tracker"]]
        action = event["action"]
        if action in ("created", "updated"):
            rationale = (f"{name} {event['remote_key']} {action} for {what}"
                         + (f" ({event['remote_url']})" if event.get("remote_url") else "")
                         + ("; the payload changed" if action == "updated" else "")
                         + (f"; {event['review_reason']}" if event.get("review_reason") else ""))
            status = "applied"
        elif action == "held":
            rationale = (f"{name} for {what} held for review: {event['review_reason']}. Release it with "
                         f"`qa-assets feedback {event['defect_id']} --approve --author NAME`")
            status = "needs_review"
        else:
            rationale = f"{name} for {what} not filed: {event['review_reason']}"
            status = "rejected"
        rows.append({
            "subject_id": event["defect_id"],
            "outcome": f"{event['tracker']}:{'held_for_review' if action == 'held' else action}",
            "confidence": defect.get("confidence"),
            "rationale": rationale,
            "status": status,
            "input_partitions": [f"ticket:{event['tracker']}:{action}:{(event['payload_sha256'] or '')[:16]}"],
        })
    frame = pl.DataFrame(rows, schema={"subject_id": pl.String, "outcome": pl.String, "confidence": pl.Float64,
                                       "rationale": pl.String, "status": pl.String,
                                       "input_partitions": pl.List(pl.String)})
    return governance.decision_rows(frame, stage="qa_artifacts", decision="ticket", subject_type="defect",
                                    model_name="ticket_delivery", model_version=POLICY_VERSION)


def load_outbox(con) -> pl.DataFrame:
    wh.ensure_table(con, OUTBOX_TABLE, OUTBOX)
    return wh.read_table(con, OUTBOX_TABLE)


def save_outbox(con, rows: pl.DataFrame | list[dict[str, Any]]) -> int:
    """Replace the outbox rows with these ``ticket_id``s (one transaction)."""
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, schema=OUTBOX)
    if frame.height == 0:
        return 0
    wh.ensure_table(con, OUTBOX_TABLE, OUTBOX)
    return wh.replace_where(con, OUTBOX_TABLE, frame.select(list(OUTBOX)), "ticket_id", frame["ticket_id"].to_list())


def status_counts(outbox: pl.DataFrame) -> dict[str, int]:
    """Rows per status (every status named, zeros included)."""
    found = dict(outbox.group_by("status").len().iter_rows()) if outbox.height else {}
    return {status: int(found.get(status, 0)) for status in OUTBOX_STATUSES}
