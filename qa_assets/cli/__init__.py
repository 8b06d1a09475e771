"""`qa-assets`: one entry point for the demo, batch runs, the simulator, template mining, evaluation,
benchmarks and the model registry. Each subcommand lives in its own module with `add_arguments(parser)`
and `main(args) -> exit code`; heavy libraries are imported only when a subcommand runs."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help). Groups (evaluate, bench, model) have their own subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("qa_assets.cli.run", "simulate demo telemetry with injected faults, run the whole graph, print what was found"),
    "run": ("qa_assets.cli.run", "run the whole asset graph over a landing directory (DESIGN.md §2 formats)"),
    "simulate": ("qa_assets.cli.simulate", "write simulated telemetry with injected faults and a ground-truth file"),
    "templates": ("qa_assets.cli.templates", "mine the log templates of one plain-text log (LineId,EventId,EventTemplate CSV)"),
}
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "evaluate": ("measure accuracy on evaluation data (skips what is absent)", {
        "templates": ("qa_assets.evaluation.templates", "grouping accuracy and FGA on Loghub 2k"),
        "sessions": ("qa_assets.evaluation.sessions", "precision/recall/F1 of log-session anomaly detection on HDFS"),
    }),
    "bench": ("benchmarks: throughput and memory against a baseline measured in the same run", {
        "templates": ("qa_assets.bench.templates", "template mining lines/s against drain3"),
        "ingest": ("qa_assets.bench.ingest", "ingestion of a simulated hour against DuckDB read_json"),
    }),
}


def _optional_groups() -> None:
    """Subcommands whose modules are present in this version (added as stages land)."""
    optional = {
        ("evaluate", "defects"): ("qa_assets.evaluation.defects", "detection, grouping and type accuracy on simulated incidents"),
        ("evaluate", "rca"): ("qa_assets.evaluation.rca", "root-cause top-1/top-3 accuracy on simulated incidents"),
    }
    for (group, name), (module, help_text) in optional.items():
        if importlib.util.find_spec(module) is None:
            continue
        loaded = importlib.import_module(module)
        if hasattr(loaded, "add_arguments") and hasattr(loaded, "main"):
            GROUPS[group][1][name] = (module, help_text)


def _add(subparsers, name: str, module_name: str, help_text: str) -> None:
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    adder(parser)
    handler = getattr(module, f"{name}_main", None) or module.main
    parser.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:

    _optional_groups()
    parser = argparse.ArgumentParser(
        prog="qa-assets",
        description="Turn production telemetry into QA outcomes: defects, root causes, regression tests, release gates.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        _add(subparsers, name, module, help_text)
    for group, (help_text, members) in GROUPS.items():
        group_parser = subparsers.add_parser(group, help=help_text, description=help_text)
        group_sub = group_parser.add_subparsers(dest="subcommand", metavar="WHAT")
        for name, (module, member_help) in members.items():
            _add(group_sub, name, module, member_help)
        if group == "evaluate":
            all_parser = group_sub.add_parser("all", help="every evaluation in turn")
            all_parser.set_defaults(handler=lambda args, members=members: _run_all(group, members))
        if group == "bench":
            all_parser = group_sub.add_parser("all", help="every benchmark in turn")
            all_parser.set_defaults(handler=lambda args, members=members: _run_all(group, members))
    if importlib.util.find_spec("qa_assets.cli.model") is not None:
        model = importlib.import_module("qa_assets.cli.model")
        model.register(subparsers)
    return parser


def _run_all(group: str, members: dict[str, tuple[str, str]]) -> int:
    worst = 0
    for name in members:
        print(f"\n=== qa-assets {group} {name} ===", flush=True)
        parser = build_parser()
        args = parser.parse_args([group, name])
        worst = max(worst, args.handler(args))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        if getattr(args, "command", None) in GROUPS:
            parser.parse_args([args.command, "--help"])
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
