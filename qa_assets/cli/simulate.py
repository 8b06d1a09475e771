"""``qa-assets simulate``: write a landing directory of simulated telemetry and its ground truth.

``qa-assets simulate serve``: serve the simulated system over HTTP in the faulty or the fixed version of one
injected fault (``qa_assets.simulate.http_target``), for running generated regression tests against it.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", default=None,
                        help="landing directory to create (must be new or empty); required without ACTION")
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
    actions = parser.add_subparsers(dest="simulate_action", metavar="ACTION")
    serve_help = "serve the simulated system over HTTP, faulty or fixed for one injected fault"
    serve = actions.add_parser("serve", help=serve_help, description=serve_help)
    serve.add_argument("--ground-truth", required=True, help="the ground_truth.json a simulation wrote")
    serve.add_argument("--fault", required=True, help="the injected fault to serve, e.g. F01")
    serve.add_argument("--version", choices=("faulty", "fixed"), default="faulty",
                       help="faulty: the fault's effect in force; fixed: the healthy baseline "
                            "(default: faulty)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, any free port)")
    serve.add_argument("--topology", default=None,
                       help="the topology simulated, when the ground truth's cannot be rebuilt (a YAML file)")
    serve.add_argument("--seed", type=int, default=0, help="seed of the per-request draws (default: 0)")
    serve.add_argument("--log-requests", action="store_true", help="log every request to standard error")
    serve.set_defaults(handler=serve_main)


def serve_main(args: argparse.Namespace) -> int:
    import shlex
    import signal
    import threading

    from qa_assets.evaluation.artifacts import target_environment
    from qa_assets.simulate.http_target import TargetError, load_ground_truth, start_target, stop_target

    try:
        truth = load_ground_truth(args.ground_truth)
        target = start_target(truth, args.fault, args.version, host=args.host, port=args.port, seed=args.seed,
                              topology=args.topology, verbose=args.log_requests)
    except (TargetError, OSError) as exc:
        print(f"qa-assets simulate serve: {exc}", file=sys.stderr)
        return 2
    fault = target.model.fault
    print(f"serving {args.version} {fault['fault_id']} ({fault['kind']} on {fault['root_service']}) at "
          f"{target.base_url}", flush=True)
    print("regression tests read these settings (paste into the environment):", flush=True)
    for name, value in target_environment(target).items():
        print(f"  export {name}={shlex.quote(value)}", flush=True)
    print("stop with Ctrl-C (or SIGTERM)", flush=True)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(number, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stop_target(target)
    return 0


def main(args: argparse.Namespace) -> int:
    if not args.landing:
        print("qa-assets simulate: --landing is required (or an ACTION such as serve)", file=sys.stderr)
        return 2
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
    parsed = cli.parse_args()
    sys.exit(getattr(parsed, "handler", main)(parsed))
