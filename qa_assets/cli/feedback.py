"""`qa-assets feedback DEFECT_ID --approve|--reject|--type/--severity/... --author NAME` and `qa-assets feedback --list`.

A verdict becomes one feedback record (docs/feedback.md) in its own file under `<landing>/feedback/`, written
atomically (a hidden temporary file renamed into place), so the landing sensor or `qa-assets run` ingests it
like any feedback a reviewer drops there by hand. The record is validated by the same parser that ingests it.
`--list` shows the review queue: decisions with status `needs_review` (unsure classifications and root causes,
blocked releases, tickets held for review) that no person has answered yet.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from qa_assets.lib.governance import DEFECT_TYPES, SEVERITIES

EFFECTS = {
    "approve": "the detected type and severity are confirmed (confidence 1), and tickets held for review are "
               "released: qa/ticket_delivery files them",
    "reject": "the defect's status becomes rejected (confidence 0) and its tickets are not filed",
    "correct": "the given values replace the detected ones (confidence 1; root-cause fields become labels for "
               "evaluation and retraining), and tickets held for review are released with the next payloads",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("defect_id", nargs="?", metavar="DEFECT_ID",
                        help="the defects.defects id (ticket payloads, the QA report and --list show it)")
    verdict = parser.add_mutually_exclusive_group()
    verdict.add_argument("--approve", action="store_true",
                         help="the automated result is right (releases tickets held for review)")
    verdict.add_argument("--reject", action="store_true",
                         help="not a defect, a false positive (its tickets are never filed)")
    parser.add_argument("--type", dest="defect_type", type=str.lower, choices=DEFECT_TYPES, metavar="TYPE",
                        help=f"corrected defect type: {', '.join(DEFECT_TYPES)}")
    parser.add_argument("--severity", type=str.upper, choices=SEVERITIES, help="corrected severity (S1 worst)")
    parser.add_argument("--root-cause-service", metavar="SERVICE", help="the service that really caused it")
    parser.add_argument("--root-cause-change", metavar="CHANGE_ID",
                        help="the deployment that triggered it (CDEvents context.id)")
    parser.add_argument("--author", default=None, help="who reviews (default: the login name)")
    parser.add_argument("--note", default=None, help="why (kept as the record's comment)")
    parser.add_argument("--at", default=None, help="when the verdict was given, ISO 8601 (default: now, UTC)")
    parser.add_argument("--landing", default=None, help="landing directory (env QA_ASSETS_LANDING)")
    parser.add_argument("--warehouse", default=None, help="DuckDB warehouse (env QA_ASSETS_WAREHOUSE)")
    parser.add_argument("--no-check", action="store_true",
                        help="do not look the defect up in the warehouse before writing the record")
    parser.add_argument("--list", action="store_true", help="show the review queue instead of recording a verdict")
    parser.add_argument("--limit", type=int, default=50, help="rows of --list (default 50)")


def _fail(message: str) -> int:
    print(f"qa-assets feedback: {message}", file=sys.stderr)
    return 2


def _warehouse(args: argparse.Namespace) -> Path:
    from qa_assets.defs.resources import default_warehouse

    return Path(args.warehouse or default_warehouse())


def main(args: argparse.Namespace) -> int:
    corrections = {"defect_type": args.defect_type, "severity": args.severity,
                   "root_cause_service": args.root_cause_service, "root_cause_change_id": args.root_cause_change}
    given = {field: value for field, value in corrections.items() if value}
    if args.list:
        if args.defect_id or args.approve or args.reject or given:
            return _fail("--list shows the review queue; give a verdict in a separate command")
        return list_queue(args)
    if not args.defect_id:
        return _fail("name the defect: qa-assets feedback DEFECT_ID --approve|--reject|--type ... --author NAME "
                     "(qa-assets feedback --list shows what waits for review)")
    if args.reject and given:
        return _fail("--reject cannot carry corrections (a rejected defect is no defect); "
                     "to fix the type, severity or root cause, drop --reject")
    if not (args.approve or args.reject or given):
        return _fail("say what you decided: --approve, --reject, or corrections "
                     "(--type, --severity, --root-cause-service, --root-cause-change)")
    decision = "reject" if args.reject else ("correct" if given else "approve")
    return record_verdict(args, decision, given)


def record_verdict(args: argparse.Namespace, decision: str, corrections: dict[str, str]) -> int:
    from qa_assets.defs.resources import default_landing
    from qa_assets.lib import governance
    from qa_assets.lib.artifacts._common import slug
    from qa_assets.lib.artifacts.writer import write_text_file

    author = args.author or os.environ.get("USER") or getpass.getuser()
    at = args.at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"defect_id": args.defect_id, "decision": decision, **corrections, "author": author}
    if args.note:
        record["comment"] = args.note
    record["at"] = at
    line = json.dumps(record, ensure_ascii=False) + "\n"
    # the parser that ingests the file decides whether the record is valid: one set of rules
    parsed = governance.parse_feedback(line.encode("utf-8"), "<qa-assets feedback>")
    if parsed.quarantine.height:
        return _fail(f"the record would be quarantined: {parsed.quarantine['reason'][0]}")
    accepted = parsed.accepted.row(0, named=True)
    landing = Path(args.landing or default_landing())
    if not landing.is_dir():
        return _fail(f"landing directory {landing} does not exist; pass --landing DIR or set QA_ASSETS_LANDING")
    if not args.no_check:
        problem = _check_defect(_warehouse(args), args.defect_id)
        if problem:
            return _fail(problem)
    stamp = accepted["at"].strftime("%Y%m%dT%H%M%SZ")
    path = landing / "feedback" / f"{stamp}-{slug(args.defect_id, 40)}-{accepted['feedback_id'][:8]}.jsonl"
    written = write_text_file(path, line)
    print(f"{decision} {args.defect_id} by {author}: {'written to' if written else 'already in'} {path}")
    print(f"The next ingestion of {landing} (the landed_telemetry_sensor, or `qa-assets run --landing {landing}`)\n"
          f"stores it in raw.feedback; then {EFFECTS[decision]}.")
    return 0


def _check_defect(warehouse_path: Path, defect_id: str) -> str | None:
    """Why the record should not be written (an unknown defect), or None; an unreadable warehouse is no reason."""
    from qa_assets.lib import warehouse as wh

    if not warehouse_path.exists():
        print(f"note: warehouse {warehouse_path} not found; {defect_id} was not checked", file=sys.stderr)
        return None
    try:
        with wh.connect(warehouse_path, read_only=True, lock_timeout_s=5.0) as con:
            if not wh.table_exists(con, "defects.defects"):
                return None
            row = con.execute("SELECT service, defect_type, severity, confidence, status FROM defects.defects "
                              "WHERE defect_id = ?", [defect_id]).fetchone()
    except wh.WarehouseError as exc:
        print(f"note: {defect_id} was not checked: {exc}", file=sys.stderr)
        return None
    if row is None:
        return (f"no defect {defect_id!r} in {warehouse_path}; check the id (qa-assets feedback --list shows the "
                "review queue) or pass --no-check to record it anyway")
    service, defect_type, severity, confidence, status = row
    confidence_text = "?" if confidence is None else f"{confidence:.2f}"
    print(f"{defect_id}: {severity} {defect_type} in {service}, confidence {confidence_text}, status {status}")
    return None


def list_queue(args: argparse.Namespace) -> int:
    import polars as pl

    from qa_assets.lib import governance
    from qa_assets.lib import warehouse as wh
    from qa_assets.lib.artifacts.delivery import OUTBOX_TABLE
    from qa_assets.lib.summary import text_table

    path = _warehouse(args)
    try:
        with wh.connect(path, read_only=True) as con:
            if not wh.table_exists(con, "governance.decision_log"):
                print(f"nothing to review: {path} has no decisions yet")
                return 0
            queue = governance.review_queue(wh.read_table(con, "governance.decision_log"))
            held = wh.read_frame(con, wh.statement(
                "SELECT defect_id AS subject_id, string_agg(tracker, ', ' ORDER BY tracker) AS held_tickets "
                "FROM {t} WHERE status = 'held_for_review' GROUP BY defect_id", t=OUTBOX_TABLE)) \
                if wh.table_exists(con, OUTBOX_TABLE) else None
    except wh.WarehouseError as exc:
        return _fail(str(exc))
    if queue.height == 0:
        print("nothing waits for review")
        return 0
    shown = queue.select(
        pl.col("decided_at").dt.strftime("%Y-%m-%d %H:%M").alias("decided_at"), "decision", "subject_id", "outcome",
        pl.col("confidence").round(2), pl.col("rationale").str.slice(0, 90).alias("rationale"))
    if held is not None and held.height:
        shown = shown.join(held, on="subject_id", how="left", maintain_order="left")
    print(f"{queue.height} decision(s) wait for review in {path}"
          + (f" (the first {args.limit})" if queue.height > args.limit else "") + ":")
    print(text_table(shown.head(args.limit)))
    print("\nanswer with: qa-assets feedback DEFECT_ID --approve | --reject | --type T --severity S "
          "--author NAME [--note TEXT];  release gates: qa-assets gate approve|override SERVICE VERSION")
    return 0
