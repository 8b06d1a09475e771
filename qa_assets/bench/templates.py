"""`qa-assets bench templates`: template-mining throughput against Drain3, same run, same lines.

Two workloads:

- Loghub 2k: the messages of every system in the data folder, concatenated and repeated `--loghub-repeat`
  times (a 2,000-line file measures start-up, not throughput);
- a simulated log of `--lines` lines from the project's simulator (`write_sample_log`), or `--log FILE
  --log-format FMT` to measure a log of your own.

Each workload's messages (the `Content` after the log_format split) go to qa-assets' miner, once assigning
templates only (what Drain3's `add_log_message` does) and once with parameters too, and to Drain3 with
its default settings (a fresh miner), one message at a time. For the log file, the end-to-end time (read
the file, split the header by the log_format, mine with parameters) is shown as well. Every measurement
runs `--repeat` times, Drain3's too; the table shows the median and lists every time (on this machine the
first run of a large job is often the slowest: fresh memory). Drain3 is benchmark-only: without it the
comparison is skipped and said so.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

DRAIN3_HINT = "pip install --no-deps drain3==0.9.11 jsonpickle==4.1.1 (what `make bench` does)"


@dataclass(frozen=True)
class Measurement:
    workload: str
    method: str
    lines: int
    runs: tuple[float, ...]  # seconds, every run
    templates: int | None

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else float("inf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="lines of the simulated log (default: 1,000,000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated log (default: 0)")
    parser.add_argument(
        "--log", type=Path, default=None, help="measure this log file instead of a simulated one"
    )
    parser.add_argument("--log-format", default=None, help="log_format of --log (required with --log)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Loghub 2k folder (default: as for `qa-assets evaluate templates`)",
    )
    parser.add_argument(
        "--loghub-repeat",
        type=int,
        default=60,
        help="repeat the 16,000 Loghub messages this often (default: 60)",
    )
    parser.add_argument(
        "--drain3-max-lines",
        type=int,
        default=None,
        help="feed Drain3 at most this many lines of each workload (default: all; Drain3 takes about 10-20 s "
        "per million lines)",
    )
    parser.add_argument("--no-drain3", action="store_true", help="skip Drain3")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of every measurement; the median is shown (default: 3)"
    )


def main(args: argparse.Namespace) -> int:
    if args.log is not None and not args.log_format:
        print(
            "qa-assets bench templates: --log needs --log-format (the log_format of that file)",
            file=sys.stderr,
        )
        return 2
    if args.repeat < 1:
        print("qa-assets bench templates: --repeat must be at least 1", file=sys.stderr)
        return 2
    drain3 = None if args.no_drain3 else _drain3_factory()
    if drain3 is None and not args.no_drain3:
        print(f"Drain3 is not installed, so the comparison is skipped: {DRAIN3_HINT}\n")

    print(f"polars {pl.__version__}, {pl.thread_pool_size()} threads, {os.cpu_count()} CPUs")
    _warm_up()
    results: list[Measurement] = []

    loghub = _loghub_messages(args.data, args.loghub_repeat)
    if loghub is None:
        print("Loghub 2k data not found: the Loghub workload is skipped (pass --data).")
    else:
        name = f"Loghub 2k x{args.loghub_repeat}"
        results += _measure_messages(name, loghub, drain3, args.drain3_max_lines, args.repeat)

    with tempfile.TemporaryDirectory(prefix="qa-assets-bench-") as scratch:
        log_path, log_format, label = _log_under_test(args, Path(scratch))
        if log_path is not None:
            end_to_end, messages = _end_to_end(log_path, log_format, label, args.repeat)
            results.append(end_to_end)
            results += _measure_messages(label, messages, drain3, args.drain3_max_lines, args.repeat)

    print()
    print(_format(results))
    return 0


def _warm_up() -> None:
    """First calls pay for imports and regex compilation; keep them out of the measurements."""
    from qa_assets.lib.templates import mine_templates

    mine_templates(pl.Series(["warm up 1", "warm up 2 user alice", "warm up 3 user bob"]))


def _timed(run: Callable[[], object], repeat: int) -> tuple[tuple[float, ...], object]:
    """Every run's seconds and the last run's result."""
    runs, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        runs.append(time.perf_counter() - start)
    return tuple(runs), result


def _measure_messages(
    workload: str, messages: pl.Series, drain3, drain3_max_lines: int | None, repeat: int
) -> list[Measurement]:
    from qa_assets.lib.templates import mine_templates

    results = []
    for with_params, method in ((False, "qa-assets templates"), (True, "qa-assets templates + params")):
        runs, mined = _timed(lambda: mine_templates(messages, with_params=with_params), repeat)
        results.append(Measurement(workload, method, len(messages), runs, mined["template_id"].n_unique()))
    if drain3 is not None:
        subset = messages if drain3_max_lines is None else messages.head(drain3_max_lines)
        as_list = subset.fill_null("").to_list()

        def feed_drain3():
            miner = drain3()
            for message in as_list:
                miner.add_log_message(message)
            return miner

        runs, miner = _timed(feed_drain3, repeat)
        results.append(
            Measurement(workload, "Drain3 (default settings)", len(as_list), runs, len(miner.drain.clusters))
        )
    return results


def _loghub_messages(data: Path | None, repeat: int) -> pl.Series | None:
    from qa_assets.evaluation.templates import EvaluationDataError, default_data_dir, discover_systems
    from qa_assets.lib.log_format import split_log_lines
    from qa_assets.lib.templates import read_log_lines

    try:
        systems = discover_systems(data or default_data_dir())
    except EvaluationDataError:
        return None
    parts = []
    for system in systems:
        lines = read_log_lines(system.log)
        parts.append(split_log_lines(lines, system.log_format)["Content"].fill_null(lines))
    messages = pl.concat(parts)
    return pl.concat([messages] * max(repeat, 1)).rechunk()


def _log_under_test(args: argparse.Namespace, scratch: Path) -> tuple[Path | None, str | None, str]:
    if args.log is not None:
        if not args.log.is_file():
            print(f"log file {args.log} not found: the log workload is skipped")
            return None, None, ""
        return args.log, args.log_format, f"{args.log.name}"
    try:
        from qa_assets.simulate.logs import write_sample_log
    except ImportError as error:
        print(f"The simulator is not available ({error}); pass --log FILE --log-format FMT to measure a log.")
        return None, None, ""
    path = scratch / "sample.log"
    start = time.perf_counter()
    log_format = write_sample_log(path, args.lines, args.seed)
    print(f"simulated {args.lines:,} lines in {time.perf_counter() - start:.1f} s, log_format {log_format!r}")
    return path, log_format, f"simulated {args.lines:,} lines"


def _end_to_end(path: Path, log_format: str, label: str, repeat: int) -> tuple[Measurement, pl.Series]:
    from qa_assets.lib.templates import mine_log, read_log_lines

    runs, mined = _timed(lambda: mine_log(read_log_lines(path), log_format), repeat)
    method = "qa-assets end to end (read, split, mine + params)"
    return Measurement(label, method, mined.height, runs, mined["template_id"].n_unique()), mined["Content"]


def _drain3_factory():
    try:
        from drain3 import TemplateMiner
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        return None
    logging.getLogger("drain3").setLevel(logging.ERROR)
    return lambda: TemplateMiner(config=TemplateMinerConfig())


def _format(results: list[Measurement]) -> str:
    header = f"{'workload':<26} {'method':<50} {'lines':>10} {'median s':>8} {'lines/s':>11} {'templates':>9}"
    out = [header, "-" * len(header)]
    for r in results:
        templates = "-" if r.templates is None else str(r.templates)
        out.append(
            f"{r.workload:<26} {r.method:<50} {r.lines:>10,} {r.seconds:>8.2f} "
            f"{r.lines_per_second:>11,.0f} {templates:>9}"
        )
    ratios = []
    for workload in dict.fromkeys(r.workload for r in results):
        drain = next((r for r in results if r.workload == workload and r.method.startswith("Drain3")), None)
        if drain is None:
            continue
        for r in results:
            if r.workload == workload and r.method.startswith("qa-assets templates"):
                ratios.append(
                    f"{workload}: {r.method} / Drain3 = {r.lines_per_second / drain.lines_per_second:.1f}x"
                )
    if ratios:
        out += ["", "throughput ratio (same lines, medians):", *[f"  {line}" for line in ratios]]
    out += ["", "every run (seconds, in order):"]
    out += [f"  {r.workload}: {r.method}: {', '.join(f'{s:.2f}' for s in r.runs)}" for r in results]
    return "\n".join(out)
