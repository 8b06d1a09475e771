"""``qa-assets simulate``: write a landing directory of simulated telemetry and its ground truth."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", required=True, help="landing directory to create (must be new or empty)")
    parser.add_argument(
        "--ground-truth",
        default=None,
        help="where to write the ground truth (default: <landing>/../ground_truth.json)",
    )
    parser.add_argument(
        "--topology",
        default="shop",
        help="shop | bank | random | random:N | a topology YAML file (default: shop)",
    )
    parser.add_argument("--services", type=int, default=None, help="number of services of a random topology")
    parser.add_argument(
        "--hours", type=float, default=24.0, help="length of the simulated window (default: 24)"
    )
    parser.add_argument("--start", default=None, help="UTC start, e.g. 2026-11-02T00:00:00Z (the default)")
    parser.add_argument(
        "--scale",
        default="small",
        help="tiny | small | medium | large, or mean requests per minute (default: small)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives identical files"
    )
    parser.add_argument(
        "--faults",
        default="default",
        help="default | none | all | random | rca | decoys | one fault kind (default: default)",
    )
    parser.add_argument("--scenario", default=None, help="a named scenario; overrides --faults")
    parser.add_argument("--gzip", action="store_true", help="gzip the OTLP files")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    from qa_assets.simulate import SimulationError, simulate
    from qa_assets.simulate.faults import ScenarioError
    from qa_assets.simulate.topology import TopologyError

    scale: str | float = args.scale
    try:
        scale = float(args.scale)
    except ValueError:
        pass
    try:
        summary = simulate(
            args.landing,
            topology=args.topology,
            hours=args.hours,
            start=args.start,
            scale=scale,
            seed=args.seed,
            faults=args.faults,
            scenario=args.scenario,
            ground_truth=args.ground_truth,
            gzip=args.gzip,
            n_services=args.services,
        )
    except (SimulationError, ScenarioError, TopologyError) as exc:
        print(f"qa-assets simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    counts = summary.counts
    print(
        f"simulated {summary.topology} from {summary.start:%Y-%m-%d %H:%M} "
        f"to {summary.end:%Y-%m-%d %H:%M} UTC "
        f"({summary.scale}, seed {summary.seed}) in {summary.seconds:.1f} s"
    )
    print(
        f"  {counts['spans']:,} spans, {counts['log_records']:,} log records, "
        f"{counts['metric_points']:,} metric "
        f"points, {counts['deployment_events']} deployment events, {counts['test_cases']:,} test cases "
        f"in {summary.files} files"
    )
    print(f"  faults: {', '.join(summary.faults) or 'none'}; decoys: {', '.join(summary.decoys) or 'none'}")
    print(f"  landing: {summary.landing_dir}")
    print(f"  ground truth: {summary.ground_truth_path}")
    return 0


if __name__ == "__main__":  # python -m qa_assets.cli.simulate ...
    cli = argparse.ArgumentParser(prog="qa-assets simulate", description=__doc__)
    add_arguments(cli)
    sys.exit(main(cli.parse_args()))
