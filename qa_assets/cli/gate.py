"""`qa-assets gate approve|override SERVICE VERSION --reason …` and `qa-assets kb search TEXT`.

A release-gate decision is a proposal until a person reviews it: `approve` accepts the gate's decision,
`override` replaces it (e.g. ship a blocked version with a known, accepted risk). Both are recorded in
`governance.decision_log` with the author and reason; `override` also updates `qa.release_readiness`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path


def _warehouse(args: argparse.Namespace) -> Path:
    from qa_assets.defs.resources import default_warehouse

    return Path(args.warehouse or default_warehouse())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (("approve", "accept the gate's decision for SERVICE VERSION"),
                              ("override", "replace the gate's decision for SERVICE VERSION")):
        p = sub.add_parser(action, help=help_text, description=help_text)
        p.add_argument("service")
        p.add_argument("version")
        p.add_argument("--reason", required=True, help="why (kept in the decision log)")
        p.add_argument("--author", default=None, help="who decides (default: the login name)")
        p.add_argument("--warehouse", default=None, help="DuckDB warehouse (env QA_ASSETS_WAREHOUSE)")
        if action == "override":
            p.add_argument("--decision", required=True, choices=["pass", "warn", "block"])


def main(args: argparse.Namespace) -> int:
    import polars as pl

    from qa_assets.lib import governance
    from qa_assets.lib import warehouse as wh

    path = _warehouse(args)
    author = args.author or os.environ.get("USER") or getpass.getuser()
    try:
        with wh.connect(path) as con:
            if not wh.table_exists(con, "qa.release_readiness"):
                print(f"qa-assets gate: {path} has no qa.release_readiness yet; run the graph first", file=sys.stderr)
                return 2
            row = con.execute("SELECT decision FROM qa.release_readiness WHERE service = ? AND version = ?",
                              [args.service, args.version]).fetchone()
            if row is None:
                print(f"qa-assets gate: no gate decision for {args.service} {args.version} in {path}; "
                      "`qa-assets gate` needs a version the gate has seen deployed", file=sys.stderr)
                return 2
            outcome = row[0] if args.action == "approve" else args.decision
            status = "approved" if args.action == "approve" else "applied"
            rows = governance.decision_rows(
                pl.DataFrame({"subject_id": [f"{args.service}@{args.version}"], "outcome": [outcome],
                              "confidence": [1.0], "rationale": [f"{args.action} by {author}: {args.reason}"]}),
                stage="qa_artifacts", decision=f"release_gate_{args.action}", subject_type="service_version",
                model_name="human", model_version=author, status=status)
            wh.ensure_table(con, "governance.decision_log", governance.DECISION_LOG)
            wh.insert(con, "governance.decision_log", rows)
            if args.action == "override":
                con.execute(
                    "UPDATE qa.release_readiness SET decision = ?, reasons = reasons || ? WHERE service = ? AND version = ?",
                    [args.decision, f"\noverridden to {args.decision} by {author}: {args.reason}", args.service,
                     args.version])
    except wh.WarehouseError as exc:
        print(f"qa-assets gate: {exc}", file=sys.stderr)
        return 2
    print(f"{args.service} {args.version}: {args.action} recorded ({outcome}) by {author}")
    return 0


def add_kb_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="words to look for in service, type, cause, resolution and title")
    parser.add_argument("--warehouse", default=None, help="DuckDB warehouse (env QA_ASSETS_WAREHOUSE)")
    parser.add_argument("--limit", type=int, default=20)


def kb_main(args: argparse.Namespace) -> int:
    from qa_assets.lib import warehouse as wh
    from qa_assets.lib.summary import text_table

    path = _warehouse(args)
    try:
        with wh.connect(path, read_only=True) as con:
            if not wh.table_exists(con, "qa.knowledge_base"):
                print(f"qa-assets kb: {path} has no qa.knowledge_base yet; run the graph first", file=sys.stderr)
                return 2
            words = [w.lower() for w in args.text.split() if w]
            found = wh.read_frame(
                con,
                "SELECT service, defect_type, severity, cause_service, cause_kind, resolution, defect_id "
                "FROM qa.knowledge_base WHERE list_bool_and([contains(lower(concat_ws(' ', service, defect_type, "
                "cause_service, cause_kind, resolution, fingerprint)), w) FOR w IN ?]) LIMIT ?",
                [words, args.limit])
    except wh.WarehouseError as exc:
        print(f"qa-assets kb: {exc}", file=sys.stderr)
        return 2
    print(text_table(found) if found.height else "no match")
    return 0
