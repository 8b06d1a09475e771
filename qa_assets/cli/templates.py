"""`qa-assets templates`: mine the templates of one plain-text log file.

Writes `LineId,EventId,EventTemplate` CSV (the Loghub ground-truth layout, LineId counting from 1) to
standard output or to `--output`. `--log-format` splits header fields from the message in logparser's
notation, e.g. `'<Date> <Time> <Level> <Component>: <Content>'`; lines that do not follow it are mined
whole.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="plain-text log file, one record per line")
    parser.add_argument(
        "--log-format",
        default=None,
        help="logparser-style format with a <Content> field, e.g. '<Date> <Time> <Level> <Component>: "
        "<Content>' (default: the whole line is the message)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="CSV file to write (default: standard output)"
    )


def main(args: argparse.Namespace) -> int:
    import polars as pl

    from qa_assets.lib.log_format import LogFormatError
    from qa_assets.lib.templates import LogFileError, mine_log, read_log_lines

    try:
        lines = read_log_lines(args.file)
        mined = mine_log(lines, args.log_format, with_params=False)
    except (LogFileError, LogFormatError) as error:
        print(f"qa-assets templates: {error}", file=sys.stderr)
        return 2
    table = mined.select(
        pl.col("LineId"), pl.col("template_id").alias("EventId"), pl.col("template").alias("EventTemplate")
    )
    if args.output is None:
        sys.stdout.write(table.write_csv())
        sys.stdout.flush()
    else:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            table.write_csv(args.output)
        except OSError as error:
            print(f"qa-assets templates: cannot write {args.output}: {error.strerror}", file=sys.stderr)
            return 2
        unmatched = int((~mined["matched"]).sum()) if args.log_format else 0
        note = (
            f"; {unmatched} line(s) did not follow the log format and were mined whole" if unmatched else ""
        )
        print(
            f"{table.height} lines, {mined['template_id'].n_unique()} templates -> {args.output}{note}",
            file=sys.stderr,
        )
    return 0
