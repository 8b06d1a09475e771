"""``qa-assets model``: the MLflow model registry from the command line.

- ``qa-assets model list`` - every registered version with its aliases, feature set and metrics.
- ``qa-assets model promote NAME [--version V]`` - make the challenger (or version V) champion.
- ``qa-assets model rollback NAME`` - move champion back to the version it replaced.

The store is ``--tracking-uri``, else $QA_ASSETS_MLFLOW_URI, else ``sqlite:///<data>/mlflow.db`` where
``<data>`` is $QA_ASSETS_DATA_DIR or ./data (the same default the Dagster resources use). Promotions and
rollbacks are also appended to ``governance.decision_log`` when the warehouse exists (``--warehouse``,
else $QA_ASSETS_WAREHOUSE, else ``<data>/warehouse.duckdb``). MLflow is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path


def _data_dir() -> Path:
    return Path(os.environ.get("QA_ASSETS_DATA_DIR", "data")).resolve()


def default_tracking_uri() -> str:
    return os.environ.get("QA_ASSETS_MLFLOW_URI") or f"sqlite:///{_data_dir() / 'mlflow.db'}"


def default_warehouse() -> Path:
    return Path(os.environ.get("QA_ASSETS_WAREHOUSE") or _data_dir() / "warehouse.duckdb")


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (env QA_ASSETS_MLFLOW_URI; default sqlite:///data/mlflow.db)")


def _log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", type=Path, default=None,
                        help="DuckDB warehouse whose governance.decision_log records the change "
                             "(env QA_ASSETS_WAREHOUSE; default data/warehouse.duckdb; skipped when absent)")
    parser.add_argument("--reason", default=None, help="why, for the decision log")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``model list | promote | rollback`` to the ``qa-assets`` parser."""
    description = "the MLflow model registry: list versions, promote a challenger, roll back a champion"
    model_parser = subparsers.add_parser("model", help=description, description=description)
    model_sub = model_parser.add_subparsers(dest="subcommand", metavar="WHAT")
    model_parser.set_defaults(handler=lambda args: _usage(model_parser))

    list_parser = model_sub.add_parser("list", help="every registered version with aliases and metrics",
                                       description="every registered version with aliases and metrics")
    _store_arguments(list_parser)
    list_parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    list_parser.set_defaults(handler=list_main)

    promote_parser = model_sub.add_parser(
        "promote", help="make the challenger (or --version) champion",
        description="Make the challenger (or --version V) champion; the replaced champion is recorded so "
                    "`qa-assets model rollback NAME` can restore it.",
    )
    promote_parser.add_argument("name", help="registered model name")
    promote_parser.add_argument("--version", default=None, help="version to promote (default: the challenger)")
    _store_arguments(promote_parser)
    _log_arguments(promote_parser)
    promote_parser.set_defaults(handler=promote_main)

    rollback_parser = model_sub.add_parser(
        "rollback", help="move champion back to the version it replaced",
        description="Move the champion alias back to the version the current champion replaced.",
    )
    rollback_parser.add_argument("name", help="registered model name")
    _store_arguments(rollback_parser)
    _log_arguments(rollback_parser)
    rollback_parser.set_defaults(handler=rollback_main)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _uri(args: argparse.Namespace) -> str:
    return args.tracking_uri or default_tracking_uri()


def _missing_store(uri: str, command: str) -> bool:
    """A SQLite store that does not exist yet: say so instead of creating an empty one."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        print(f"qa-assets model {command}: no MLflow store at {uri} (nothing trained yet?); "
              "give --tracking-uri or set QA_ASSETS_MLFLOW_URI", file=sys.stderr)
        return True
    return False


def list_main(args: argparse.Namespace) -> int:
    from qa_assets.lib import model_registry as registry

    uri = _uri(args)
    if _missing_store(uri, "list"):
        return 2
    try:
        models = registry.list_models(uri)
    except registry.ModelRegistryError as exc:
        print(f"qa-assets model list: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in models.to_dicts():
            print(json.dumps({**row, "created": row["created"].isoformat() + "Z",
                              "metrics": json.loads(row["metrics"])}))
        return 0
    if models.height == 0:
        print(f"no models registered in {uri}")
        return 0
    print(f"models in {uri}")
    header = ("name", "version", "aliases", "created (UTC)", "feature set", "metrics")
    rows = [
        (r["name"], r["version"], ",".join(r["aliases"]) or "-", f"{r['created']:%Y-%m-%d %H:%M}",
         r["feature_set_id"] or "-", _metrics_text(r["metrics"]))
        for r in models.to_dicts()
    ]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _metrics_text(metrics_json: str, limit: int = 4) -> str:
    metrics = json.loads(metrics_json)
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:limit]]
    more = len(metrics) - limit
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "") if shown else "-"


def promote_main(args: argparse.Namespace) -> int:
    from qa_assets.lib import model_registry as registry

    uri = _uri(args)
    if _missing_store(uri, "promote"):
        return 2
    try:
        before = registry.get_version(args.name, tracking_uri=uri)
        promoted = registry.promote(args.name, tracking_uri=uri, version=args.version)
    except registry.ModelRegistryError as exc:
        print(f"qa-assets model promote: {exc}", file=sys.stderr)
        return 2
    if before is not None and before.version == promoted.version:
        print(f"{args.name}: version {promoted.version} is already champion; nothing changed")
        return 0
    previous = before.version if before else None
    print(f"{args.name}: champion is now version {promoted.version} (was {previous or 'none'})")
    _print_metrics(registry, args.name, uri, promoted.version, previous)
    return 0 if _log_decision(args, "promote_model", promoted, previous, "qa-assets model promote") else 1


def rollback_main(args: argparse.Namespace) -> int:
    from qa_assets.lib import model_registry as registry

    uri = _uri(args)
    if _missing_store(uri, "rollback"):
        return 2
    try:
        before = registry.get_version(args.name, tracking_uri=uri)
        restored = registry.rollback(args.name, tracking_uri=uri)
    except registry.ModelRegistryError as exc:
        print(f"qa-assets model rollback: {exc}", file=sys.stderr)
        return 2
    previous = before.version if before else None
    print(f"{args.name}: rolled back; champion is now version {restored.version} (was {previous})")
    return 0 if _log_decision(args, "rollback_model", restored, previous, "qa-assets model rollback") else 1


def _print_metrics(registry, name: str, uri: str, new: str, old: str | None) -> None:
    new_metrics = registry.run_metrics(name, new, tracking_uri=uri)
    old_metrics = registry.run_metrics(name, old, tracking_uri=uri) if old else {}
    for metric in sorted(set(new_metrics) | set(old_metrics)):
        was = old_metrics.get(metric)
        print(f"  {metric}: {new_metrics.get(metric, float('nan')):.4g}"
              + (f" (champion had {was:.4g})" if was is not None else ""))


def _log_decision(args: argparse.Namespace, decision: str, champion, previous: str | None, command: str) -> bool:
    """Append the change to governance.decision_log when the warehouse exists; the registry change
    stands either way (the log is the record, not the switch)."""
    target = args.warehouse or default_warehouse()
    if not str(target).startswith(("md:", "motherduck:")) and not Path(target).exists():
        print(f"  (no warehouse at {target}: the change is not in governance.decision_log)")
        return True
    import polars as pl

    from qa_assets.lib import governance, warehouse

    tags = dict(champion.tags or {})
    stamp = tags.get("qa_assets.promoted_at") if decision == "promote_model" else None
    reason = args.reason or f"{command} by {_user()}"
    rows = governance.decision_rows(
        pl.DataFrame({
            "subject_id": [args.name],
            "outcome": [f"champion={champion.version}"],
            "confidence": [1.0],
            "rationale": [f"{reason}; champion {previous or 'none'} -> {champion.version}"],
        }),
        stage="governance",
        decision=decision,
        subject_type="model",
        model_name=args.name,
        model_version=champion.version,
        feature_set_id=champion.feature_set_id,
        # The registry state the change was made from: promoting the same version again after a
        # rollback is a new decision, not a repeat of the first one.
        input_partitions=[f"registry:{args.name}@{previous or 'none'}->{champion.version}@{stamp or _now()}"],
        status="applied",
    )
    try:
        with warehouse.connect(target, lock_timeout_s=30.0) as con:
            warehouse.ensure_table(con, "governance.decision_log", governance.DECISION_LOG)
            warehouse.replace_where(con, "governance.decision_log", rows, "decision_id", rows["decision_id"].to_list())
    except Exception as exc:  # the registry has changed already: say that the record is missing
        print(f"qa-assets model: the registry change was made but not written to governance.decision_log "
              f"in {target}: {exc}", file=sys.stderr)
        return False
    print(f"  logged in governance.decision_log ({target})")
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
