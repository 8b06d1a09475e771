"""Ticket delivery through qa.ticket_outbox, against GitHub- and Jira-like endpoints on a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from qa_assets.defs.qa_artifacts.assets import ticket_delivery
from qa_assets.defs.resources import ArtifactsResource, WarehouseResource
from qa_assets.lib import governance
from qa_assets.lib import warehouse as wh
from qa_assets.lib.artifacts import delivery, tickets, writer
from qa_assets.lib.defects.grouping import DEFECTS
from qa_assets.lib.ingest.tables import conform

REPO = "/repos/acme/shop/issues"
JIRA = "/rest/api/3/issue"


class FakeTrackers:
    """GitHub's and Jira's issue endpoints on a free loopback port. Records every request; the next
    `fail_next` requests get 503, and with `refuse_with` set every request gets that status."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_next = 0
        self.refuse_with: int | None = None
        self.github: dict[int, dict] = {}
        self.jira: dict[str, dict] = {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                fake.headers.append(dict(self.headers))
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    return self._answer(503, {"message": "maintenance"})
                if fake.refuse_with:
                    return self._answer(fake.refuse_with, {"errors": {"priority": "not on the screen"}})
                if self.command == "POST" and self.path == REPO:
                    number = len(fake.github) + 1
                    fake.github[number] = body
                    return self._answer(201, {"number": number, "id": 9000 + number,
                                              "html_url": f"https://github.com/acme/shop/issues/{number}"})
                if self.command == "POST" and self.path == JIRA:
                    key = f"QA-{len(fake.jira) + 1}"
                    fake.jira[key] = body
                    return self._answer(201, {"id": str(10000 + len(fake.jira)), "key": key,
                                              "self": f"http://jira{JIRA}/{key}"})
                found = re.fullmatch(rf"{REPO}/(\d+)", self.path)
                if self.command == "PATCH" and found and int(found[1]) in fake.github:
                    fake.github[int(found[1])] = body
                    return self._answer(200, {"number": int(found[1])})
                found = re.fullmatch(rf"{JIRA}/(QA-\d+)", self.path)
                if self.command == "PUT" and found and found[1] in fake.jira:
                    fake.jira[found[1]] = body
                    return self._answer(204)
                return self._answer(404, {"message": "Not Found"})

            do_POST = do_PATCH = do_PUT = _handle  # noqa: N815 (http.server's naming)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def methods(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests]


@pytest.fixture
def trackers():
    fake = FakeTrackers()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{REPO}"  # nothing listens there any more


def _defect(defect_id: str, severity: str = "S2", confidence: float = 0.9, title: str = "errors on /pay") -> dict:
    return {"defect_id": defect_id, "fingerprint": f"fp-{defect_id}", "service": "checkout",
            "defect_type": "error_spike", "severity": severity, "confidence": confidence, "status": "open",
            "title": title, "first_seen": datetime(2024, 3, 5, 10, 0), "last_seen": datetime(2024, 3, 5, 10, 30)}


def stage(tmp_path: Path, defects: list[dict]) -> Path:
    """defects.defects plus their ticket payload files and qa.artifacts rows, as the qa/artifacts asset leaves them."""
    warehouse = tmp_path / "wh.duckdb"
    out = tmp_path / "artifacts"
    rows = []
    for defect in defects:
        for kind, payload in (("github_issue", tickets.github_issue_payload(defect, [], {})),
                              ("jira_issue", tickets.jira_issue_payload(defect, [], {}, project_key="QA"))):
            path = writer.artifact_path(out, kind, defect["defect_id"])
            text = json.dumps(payload, indent=2) + "\n"
            writer.write_text_file(path, text)
            rows.append({"defect_id": defect["defect_id"], "kind": kind, "path": str(path.resolve()),
                         "format": writer.FORMATS[kind], "sha256": hashlib.sha256(text.encode()).hexdigest(),
                         "bytes": len(text), "detail": "create-issue request body"})
    with wh.connect(warehouse) as con:
        wh.ensure_table(con, "defects.defects", DEFECTS)
        frame = conform(pl.DataFrame(defects), DEFECTS)
        wh.replace_where(con, "defects.defects", frame, "defect_id", frame["defect_id"].to_list())
        wh.ensure_table(con, "qa.artifacts", writer.ARTIFACTS)
        index = pl.DataFrame(rows, schema=writer.ARTIFACTS)
        wh.replace_where(con, "qa.artifacts", index, "defect_id", index["defect_id"].unique().to_list())
    return warehouse


def run_delivery(tmp_path: Path, *, github: str = "", jira: str = "") -> dg.MaterializeResult:
    artifacts = ArtifactsResource(path=str(tmp_path / "artifacts"), github_issues_url=github, jira_issue_url=jira,
                                  delivery_attempts=3, delivery_backoff_seconds=0.0, delivery_timeout_seconds=2.0)
    return ticket_delivery(dg.build_asset_context(), warehouse=WarehouseResource(path=str(tmp_path / "wh.duckdb")),
                           artifacts=artifacts)


def outbox(tmp_path: Path) -> dict[str, dict]:
    with wh.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        return {row["ticket_id"]: row for row in wh.read_table(con, delivery.OUTBOX_TABLE).to_dicts()}


def decisions(tmp_path: Path) -> pl.DataFrame:
    with wh.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        return wh.read_frame(con, "SELECT * FROM governance.decision_log WHERE decision = 'ticket' "
                                  "ORDER BY decided_at, subject_id, outcome")


def add_feedback(tmp_path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps({"author": "jane", "at": "2024-03-05T12:00:00Z", **r}) + "\n" for r in records)
    parsed = governance.parse_feedback(text.encode(), "feedback/review.jsonl")
    assert parsed.quarantine.height == 0
    with wh.connect(tmp_path / "wh.duckdb") as con:
        wh.ensure_table(con, "raw.feedback", governance.FEEDBACK)
        wh.insert(con, "raw.feedback", parsed.accepted)


def test_first_run_creates_a_later_change_updates_the_same_issues_and_no_change_sends_nothing(
        tmp_path, trackers, monkeypatch):
    monkeypatch.setenv("QA_ASSETS_GITHUB_TOKEN", "ghp-secret-token")
    stage(tmp_path, [_defect("d1")])
    github, jira = trackers.base + REPO, trackers.base + JIRA

    first = run_delivery(tmp_path, github=github, jira=jira)
    assert trackers.methods() == [("POST", REPO), ("POST", JIRA)]
    assert first.metadata["created"] == 2 and first.metadata["delivered"] == 2
    rows = outbox(tmp_path)
    assert rows["github:d1"]["remote_id"] == "1" and rows["github:d1"]["remote_key"] == "acme/shop#1"
    assert rows["github:d1"]["remote_url"] == "https://github.com/acme/shop/issues/1"
    assert rows["jira:d1"]["remote_key"] == "QA-1"
    assert rows["jira:d1"]["remote_url"] == f"{trackers.base}/browse/QA-1"
    assert all(r["status"] == "delivered" and r["delivered_sha256"] == r["payload_sha256"] for r in rows.values())
    github_headers = next(h for h, (m, p, _) in zip(trackers.headers, trackers.requests, strict=True) if p == REPO)
    assert github_headers["Authorization"] == "Bearer ghp-secret-token"

    run_delivery(tmp_path, github=github, jira=jira)
    assert len(trackers.requests) == 2  # unchanged payloads are not sent again

    stage(tmp_path, [_defect("d1", title="errors on /pay and /refund")])
    third = run_delivery(tmp_path, github=github, jira=jira)
    assert trackers.methods()[2:] == [("PATCH", f"{REPO}/1"), ("PUT", f"{JIRA}/QA-1")]
    assert third.metadata["updated"] == 2 and third.metadata["created"] == 0
    assert len(trackers.github) == 1 and len(trackers.jira) == 1  # no duplicate tickets
    assert "/refund" in trackers.github[1]["title"]
    jira_update = trackers.jira["QA-1"]["fields"]
    assert "/refund" in jira_update["summary"] and "project" not in jira_update and "issuetype" not in jira_update

    log = decisions(tmp_path)
    assert sorted(log["outcome"].to_list()) == ["github:created", "github:updated", "jira:created", "jira:updated"]
    assert set(log["status"]) == {"applied"} and set(log["subject_id"]) == {"d1"}
    assert "acme/shop#1" in " ".join(log["rationale"].to_list())
    with wh.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        stored = json.dumps(wh.read_table(con, delivery.OUTBOX_TABLE).rows(), default=str)
        stored += json.dumps(wh.read_table(con, "governance.decision_log").rows(), default=str)
    assert "ghp-secret-token" not in stored  # tokens come from the environment and stay there


def test_503s_are_retried_with_exponential_backoff(tmp_path, trackers):
    stage(tmp_path, [_defect("d1")])
    with wh.connect(tmp_path / "wh.duckdb") as con:
        index = wh.read_table(con, "qa.artifacts")
        defects = wh.read_table(con, "defects.defects")
    verdicts = delivery.review_verdicts(defects, None, delivery.ReviewPolicy())
    planned, _ = delivery.plan_outbox(pl.DataFrame(schema=delivery.OUTBOX), index, verdicts, trackers={"github"})
    trackers.fail_next = 2
    slept: list[float] = []
    rows, events = delivery.deliver_outbox(
        planned, {"github": delivery.github_tracker(trackers.base + REPO)},
        retry=delivery.RetryPolicy(attempts=4, backoff_s=0.25), sleep=slept.append)
    assert slept == [0.25, 0.5]
    assert trackers.methods() == [("POST", REPO)] * 3
    row = rows.row(0, named=True)
    assert row["status"] == "delivered" and row["attempts"] == 3 and row["remote_id"] == "1"
    assert [e["action"] for e in events] == ["created"]


def test_a_refusing_tracker_marks_tickets_failed_without_retrying(tmp_path, trackers):
    stage(tmp_path, [_defect("d1"), _defect("d2")])
    trackers.refuse_with = 400
    result = run_delivery(tmp_path, jira=trackers.base + JIRA)
    assert trackers.methods() == [("POST", JIRA), ("POST", JIRA)]  # one request each: 400 will not pass
    assert result.metadata["failed"] == 2
    rows = outbox(tmp_path)
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert "HTTP 400" in rows["jira:d1"]["last_error"] and "not on the screen" in rows["jira:d1"]["last_error"]

    trackers.refuse_with = None  # the setting was fixed: the next run files them
    run_delivery(tmp_path, jira=trackers.base + JIRA)
    assert {r["status"] for r in outbox(tmp_path).values()} == {"delivered"}


def test_a_tracker_that_is_down_leaves_tickets_pending_and_the_next_run_delivers_them(tmp_path, trackers):
    stage(tmp_path, [_defect("d1"), _defect("d2")])
    result = run_delivery(tmp_path, github=closed_port_url())  # must not raise
    assert result.metadata["pending"] == 2 and result.metadata["delivered"] == 0
    rows = outbox(tmp_path)
    assert rows["github:d1"]["attempts"] == 3 and "POST" in rows["github:d1"]["last_error"]
    # after one ticket used up its retries, the others wait for the next run instead of retrying each
    assert rows["github:d2"]["attempts"] == 0 and rows["github:d2"]["last_error"].startswith("not attempted")

    trackers.fail_next = 1000  # up, but answering 503: still pending, with the answer
    run_delivery(tmp_path, github=trackers.base + REPO)
    assert "HTTP 503" in outbox(tmp_path)["github:d1"]["last_error"]
    assert outbox(tmp_path)["github:d1"]["status"] == "pending"

    trackers.fail_next = 0
    trackers.requests.clear()
    run_delivery(tmp_path, github=trackers.base + REPO)
    rows = outbox(tmp_path)
    assert {r["status"] for r in rows.values()} == {"delivered"} and trackers.methods() == [("POST", REPO)] * 2
    assert rows["github:d1"]["last_error"] is None and rows["github:d1"]["delivered_at"] is not None


def test_s1_and_low_confidence_defects_are_held_until_a_person_approves(tmp_path, trackers):
    stage(tmp_path, [_defect("d-ok"), _defect("d-s1", severity="S1"), _defect("d-unsure", confidence=0.35)])
    github = trackers.base + REPO
    first = run_delivery(tmp_path, github=github)
    assert trackers.methods() == [("POST", REPO)]  # only the confident S2 is filed
    assert first.metadata["held_for_review"] == 2 and first.metadata["newly_held"] == 2
    rows = outbox(tmp_path)
    assert rows["github:d-s1"]["status"] == "held_for_review"
    assert "severity S1" in rows["github:d-s1"]["review_reason"]
    assert "confidence 0.35 is below 0.6" in rows["github:d-unsure"]["review_reason"]
    log = decisions(tmp_path)
    held = log.filter(pl.col("status") == "needs_review")
    assert sorted(held["subject_id"]) == ["d-s1", "d-unsure"]
    assert "qa-assets feedback d-s1 --approve" in held.filter(pl.col("subject_id") == "d-s1")["rationale"][0]
    queue = governance.review_queue(log)
    assert sorted(queue["subject_id"]) == ["d-s1", "d-unsure"]

    run_delivery(tmp_path, github=github)
    assert len(trackers.requests) == 1  # still held; and the hold is not logged again
    assert decisions(tmp_path).height == log.height

    add_feedback(tmp_path, [{"defect_id": "d-s1", "decision": "approve"},
                            {"defect_id": "d-unsure", "decision": "reject", "comment": "planned load test"}])
    run_delivery(tmp_path, github=github)
    rows = outbox(tmp_path)
    assert trackers.methods() == [("POST", REPO)] * 2 and rows["github:d-s1"]["status"] == "delivered"
    assert rows["github:d-unsure"]["status"] == "rejected"
    log = decisions(tmp_path)
    filed = log.filter((pl.col("subject_id") == "d-s1") & (pl.col("outcome") == "github:created"))
    assert filed.height == 1 and "approved by jane" in filed["rationale"][0]
    assert log.filter(pl.col("subject_id") == "d-unsure")["status"].to_list()[-1] == "rejected"
    assert governance.review_queue(log).height == 0


def test_without_a_configured_tracker_nothing_is_sent(tmp_path, trackers):
    stage(tmp_path, [_defect("d1")])
    result = run_delivery(tmp_path)
    assert "no tracker configured" in result.metadata["note"]
    assert trackers.requests == [] and outbox(tmp_path) == {}
