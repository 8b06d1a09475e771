"""`qa-assets run` and `qa-assets demo`: the whole asset graph in one command, with progress."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def _paths(parser: argparse.ArgumentParser, *, landing_required: bool) -> None:
    parser.add_argument("--landing", type=Path, required=landing_required,
                        default=None if landing_required else None,
                        help="landing directory (env QA_ASSETS_LANDING)")
    parser.add_argument("--warehouse", type=Path, default=None,
                        help="DuckDB warehouse file (env QA_ASSETS_WAREHOUSE; default data/warehouse.duckdb)")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="artifacts folder (env QA_ASSETS_ARTIFACTS; default data/artifacts)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _paths(parser, landing_required=False)
    parser.add_argument("--settle-seconds", type=float, default=0.0,
                        help="read whole-file formats only once unmodified this long (default 0: the landing "
                             "directory is complete; use e.g. 30 when producers are still writing)")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("data/demo"),
                        help="demo folder: landing/, ground_truth.json, warehouse.duckdb, artifacts/ "
                             "(default data/demo; replaced on each run)")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours (default 6)")
    parser.add_argument("--scale", default="tiny", help="simulator scale (default tiny)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")


def _resolve(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from qa_assets.defs import resources as res

    landing = args.landing or (Path(os.environ["QA_ASSETS_LANDING"]) if "QA_ASSETS_LANDING" in os.environ else None)
    if landing is None:
        raise SystemExit("qa-assets run: give --landing DIR (or set QA_ASSETS_LANDING)")
    warehouse_path = args.warehouse or Path(res.default_warehouse())
    artifacts = args.artifacts or Path(res.default_artifacts())
    return landing.resolve(), warehouse_path.resolve(), artifacts.resolve()


def run_main(args: argparse.Namespace) -> int:
    landing, warehouse_path, artifacts = _resolve(args)
    if not landing.is_dir():
        print(f"qa-assets run: landing directory {landing} does not exist", file=sys.stderr)
        return 2
    return _run(landing, warehouse_path, artifacts, settle_seconds=args.settle_seconds)


def _run(landing: Path, warehouse_path: Path, artifacts: Path, *, settle_seconds: float) -> int:
    from qa_assets import runner
    from qa_assets.lib.ingest.landing import LandingError
    from qa_assets.lib.warehouse import WarehouseError

    resources = runner.configure(landing, warehouse_path, artifacts, settle_seconds=settle_seconds)
    try:
        outcome = runner.run_graph(resources, say=lambda text: print(text, flush=True))
    except (runner.RunFailed, LandingError, WarehouseError) as exc:
        print(f"qa-assets run: {exc}", file=sys.stderr)
        return 1
    from qa_assets.lib.summary import print_warehouse_summary

    print()
    print(f"ran {outcome.runs} Dagster runs over {len(outcome.hours)} hours in {outcome.seconds:.1f} s")
    print_warehouse_summary(warehouse_path)
    print(f"\nwarehouse: {warehouse_path}\nartifacts: {artifacts}")
    mlflow_uri = os.environ.get("QA_ASSETS_MLFLOW_URI") or f"sqlite:///{warehouse_path.parent / 'mlflow.db'}"
    print(f"models: {mlflow_uri}  (qa-assets model list --tracking-uri {mlflow_uri})")
    print("UI over this warehouse (then open http://127.0.0.1:3000):\n"
          f"  QA_ASSETS_WAREHOUSE={warehouse_path} QA_ASSETS_LANDING={landing} QA_ASSETS_ARTIFACTS={artifacts} "
          f"QA_ASSETS_MLFLOW_URI={mlflow_uri} make ui")
    return 0


def demo_main(args: argparse.Namespace) -> int:
    from qa_assets.simulate import simulate

    folder = args.dir.resolve()
    if folder.exists():
        shutil.rmtree(folder)
    landing = folder / "landing"
    print(f"simulating {args.hours:g} hours of a microservice shop ({args.scale}, seed {args.seed}) ...", flush=True)
    summary = simulate(landing, topology="shop", hours=args.hours, scale=args.scale, seed=args.seed,
                       faults="default", ground_truth=folder / "ground_truth.json")
    print(f"  {summary.files} files; faults: {', '.join(summary.faults) or 'none'}; "
          f"decoys: {', '.join(summary.decoys) or 'none'}", flush=True)
    return _run(landing, folder / "warehouse.duckdb", folder / "artifacts", settle_seconds=0.0)


# `qa-assets run` / `qa-assets demo` pick these by name.
add_arguments = add_run_arguments
main = run_main
