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
    "gate": ("qa_assets.cli.gate", "record a human release-gate decision: approve | override SERVICE VERSION --reason"),
    "kb": ("qa_assets.cli.gate", "search the knowledge base (defect -> cause -> resolution -> artifacts)"),
    "feedback": ("qa_assets.cli.feedback", "record a verdict on a defect (approve | reject | correct) as a landing "
                 "feedback file; --list shows the review queue"),
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


GROUPS["evaluate"][1].update({
    "defects": ("qa_assets.evaluation.defects", "detection, grouping and type accuracy on simulated incidents"),
    "rca": ("qa_assets.evaluation.rca", "root-cause top-1/top-3 accuracy on simulated incidents"),
    "artifacts": ("qa_assets.evaluation.artifacts", "generated regression tests against the simulated target: "
                  "share failing on the faulty and passing on the fixed version"),
})
MODEL = ("qa_assets.cli.model", "model registry: list, promote, rollback (MLflow aliases champion/challenger)")


def _add(subparsers, name: str, module_name: str, help_text: str, *, load: bool) -> None:
    """Add a subcommand; its module (and heavy imports) is loaded only when it is the one being run."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if not load:
        return
    module = importlib.import_module(module_name)
    adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    adder(parser)
    handler = getattr(module, f"{name}_main", None) or module.main
    parser.set_defaults(handler=handler)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    words = [a for a in (argv or []) if not a.startswith("-")]
    chosen = words[:2]
    parser = argparse.ArgumentParser(
        prog="qa-assets",
        description="Turn production telemetry into QA outcomes: defects, root causes, regression tests, release gates.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        _add(subparsers, name, module, help_text, load=chosen[:1] == [name])
    for group, (help_text, members) in GROUPS.items():
        group_parser = subparsers.add_parser(group, help=help_text, description=help_text)
        group_sub = group_parser.add_subparsers(dest="subcommand", metavar="WHAT")
        for name, (module, member_help) in members.items():
            _add(group_sub, name, module, member_help, load=chosen == [group, name])
        all_parser = group_sub.add_parser("all", help=f"every {group} command in turn")
        all_parser.set_defaults(handler=lambda args, group=group, members=members: _run_all(group, members))
    if chosen[:1] == ["model"]:
        importlib.import_module(MODEL[0]).register(subparsers)
    else:
        subparsers.add_parser("model", help=MODEL[1], description=MODEL[1])
    return parser


def _run_all(group: str, members: dict[str, tuple[str, str]]) -> int:
    worst = 0
    for name in members:
        print(f"\n=== qa-assets {group} {name} ===", flush=True)
        parser = build_parser([group, name])
        args = parser.parse_args([group, name])
        worst = max(worst, args.handler(args))
    return worst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        if getattr(args, "command", None):
            parser.parse_args([*(w for w in (args.command, getattr(args, "subcommand", None)) if w), "--help"])
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
