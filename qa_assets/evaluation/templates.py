"""`qa-assets evaluate templates`: template mining measured on Loghub 2k.

For every system in the data folder (default: the eight Loghub 2k systems in ../shared/data/loghub_2k),
the raw `<X>_2k.log` is mined with nothing but the system's `log_format` (from `log_formats.json`), and
the mined groups are compared with the ground truth:

- grouping accuracy (GA), as logparser's evaluator computes it: a line is correct when the set of lines
  in its mined group equals the set of lines in its true group; GA = correct lines / lines (lines without
  a true EventId are left out);
- template-level F1 (FGA): precision and recall of mined groups that equal a true group.

The first table uses `<X>_2k.log_structured.csv`, the second the ICSE'22 corrected labels in
`corrected/` where present. Published GA of Drain and Brain are shown beside; when the `drain3` package
is installed, Drain3 (default settings, fed the same messages) is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_SUBDIR = "loghub_2k"

# Published grouping accuracy on Loghub 2k (the data folder's README): Drain (ICSE'19 benchmark) and Brain.
PUBLISHED_GA = {
    "Drain": {
        "HDFS": 0.9975, "Hadoop": 0.9475, "Spark": 0.92, "Zookeeper": 0.9665,
        "BGL": 0.9625, "HPC": 0.887, "Thunderbird": 0.955, "Windows": 0.997,
    },
    "Brain": {
        "HDFS": 0.998, "Hadoop": 0.949, "Spark": 0.998, "Zookeeper": 0.988,
        "BGL": 0.986, "HPC": 0.945, "Thunderbird": 0.971, "Windows": 0.997,
    },
}  # fmt: skip


class EvaluationDataError(FileNotFoundError):
    """The evaluation data is missing or incomplete; the message says where it was looked for."""


def default_data_dir() -> Path:
    """$QA_ASSETS_SHARED_DATA/loghub_2k, else ../shared/data/loghub_2k beside the repository."""
    shared = os.environ.get("QA_ASSETS_SHARED_DATA")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared" / "data"
    return base / DATA_SUBDIR


def grouping_accuracy(truth: pl.Series, mined: pl.Series) -> tuple[float, float]:
    """(GA, FGA) of mined group labels against true group labels, line by line in the same order.

    Lines whose true label is null or empty are left out, as logparser's evaluator does.
    """
    if len(truth) != len(mined):
        raise ValueError(
            f"{len(truth)} true labels but {len(mined)} mined labels; they must align line by line"
        )
    frame = pl.DataFrame({"truth": truth.cast(pl.String), "mined": mined.cast(pl.String)}).filter(
        pl.col("truth").is_not_null() & (pl.col("truth") != "")
    )
    if frame.height == 0:
        return 0.0, 0.0
    true_sizes = frame.group_by("truth").agg(pl.len().alias("true_size"))
    mined_groups = frame.group_by("mined").agg(
        pl.col("truth").n_unique().alias("labels"), pl.col("truth").first(), pl.len().alias("size")
    )
    exact = mined_groups.join(true_sizes, on="truth").filter(
        (pl.col("labels") == 1) & (pl.col("size") == pl.col("true_size"))
    )
    ga = exact["size"].sum() / frame.height
    precision = exact.height / mined_groups.height
    recall = exact.height / true_sizes.height
    fga = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(ga), float(fga)


@dataclass(frozen=True)
class SystemData:
    name: str
    log_format: str
    log: Path
    labels: Path
    corrected_labels: Path | None


def discover_systems(data_dir: Path, only: list[str] | None = None) -> list[SystemData]:
    """The systems of a Loghub 2k folder that have a log, labels and a log_format."""
    formats_file = data_dir / "log_formats.json"
    if not data_dir.is_dir():
        raise EvaluationDataError(
            f"Loghub 2k data not found at {data_dir}; pass --data DIR or set QA_ASSETS_SHARED_DATA "
            "to the folder that holds loghub_2k/"
        )
    if not formats_file.is_file():
        raise EvaluationDataError(f"{formats_file} is missing: it gives each system's log_format")
    formats = json.loads(formats_file.read_text())
    systems: list[SystemData] = []
    for name, settings in formats.items():
        if only and name not in only:
            continue
        folder = data_dir / name
        log, labels = folder / f"{name}_2k.log", folder / f"{name}_2k.log_structured.csv"
        if not (log.is_file() and labels.is_file()):
            continue
        corrected = folder / "corrected" / f"{name}_2k.log_structured_corrected.csv"
        systems.append(
            SystemData(name, settings["log_format"], log, labels, corrected if corrected.is_file() else None)
        )
    if not systems:
        raise EvaluationDataError(f"no system with <X>_2k.log and <X>_2k.log_structured.csv under {data_dir}")
    return systems


def evaluate(
    systems: list[SystemData], *, with_drain3: bool = True, registry_partitions: int = 4
) -> dict[str, pl.DataFrame]:
    """Mine every system and score it. Returns one table per label set (`original`, and `corrected`
    where every system has corrected labels) with a row per system.

    With `registry_partitions` > 1 the log is also cut into that many partitions that are mined one after
    the other through the template registry, their ids resolved through the lineage at the end
    (`registry_GA`): the ids a warehouse would hold, as opposed to one mining of the whole file.
    """
    from qa_assets.lib.templates import mine_log, read_log_lines

    drain3 = _drain3_parser() if with_drain3 else None
    tables: dict[str, list[dict]] = {"original": [], "corrected": []}
    for system in systems:
        lines = read_log_lines(system.log)
        mined = mine_log(lines, system.log_format, with_params=False)
        drained = drain3(mined["Content"].to_list()) if drain3 else None
        through_registry = (
            _mine_through_registry(lines, system.log_format, registry_partitions)
            if registry_partitions > 1
            else None
        )
        for label_set, path in (("original", system.labels), ("corrected", system.corrected_labels)):
            if path is None:
                continue
            truth = pl.read_csv(path, infer_schema=False).select(
                pl.col("LineId").cast(pl.UInt32), pl.col("EventId")
            )
            scored = mined.select("LineId", "template_id").join(truth, on="LineId", how="inner")
            if scored.height != truth.height:
                raise EvaluationDataError(
                    f"{path}: its LineIds do not match the {mined.height} lines of {system.log}"
                )
            ga, fga = grouping_accuracy(scored["EventId"], scored["template_id"])
            row = {
                "system": system.name,
                "lines": scored.height,
                "true_templates": scored["EventId"].n_unique(),
                "mined_templates": scored["template_id"].n_unique(),
                "GA": ga,
                "FGA": fga,
            }
            if through_registry is not None:
                labels = through_registry.gather(scored["LineId"].cast(pl.Int64) - 1)
                row["registry_GA"], row["registry_FGA"] = grouping_accuracy(scored["EventId"], labels)
            if drained is not None:
                labels = pl.Series(drained).gather(scored["LineId"].cast(pl.Int64) - 1)
                row["drain3_GA"], row["drain3_FGA"] = grouping_accuracy(scored["EventId"], labels)
            for method, figures in PUBLISHED_GA.items():
                row[f"{method.lower()}_published_GA"] = figures.get(system.name)
            tables[label_set].append(row)
    result = {"original": pl.DataFrame(tables["original"])}
    if tables["corrected"]:
        result["corrected"] = pl.DataFrame(tables["corrected"])
    return result


def _mine_through_registry(lines: pl.Series, log_format: str, partitions: int) -> pl.Series:
    """Template ids of the lines when the log arrives in `partitions` consecutive partitions, each mined
    on its own and matched against the registry, and the ids finally resolved through the lineage."""
    from datetime import datetime, timedelta, timezone

    from qa_assets.lib.templates import (
        empty_lineage,
        empty_registry,
        mine_log,
        relabel_events,
        resolve_template_ids,
        summarize_partition,
        update_registry,
    )

    registry, lineage = empty_registry(), empty_lineage()
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    size = -(-len(lines) // partitions)
    ids = []
    for number in range(partitions):
        at = start + timedelta(hours=number)
        events = mine_log(lines.slice(number * size, size), log_format, with_params=False)
        summary = summarize_partition(events, seen_at=at)
        update = update_registry(registry, summary, generalized_at=at, lineage=lineage)
        registry, lineage = update.registry, pl.concat([lineage, update.lineage_added])
        ids.append(relabel_events(events, update.assignments)["template_id"])
    return resolve_template_ids(pl.concat(ids), lineage)


def _drain3_parser():
    """Drain3 with its default settings, or None when the package is not installed."""
    try:
        from drain3 import TemplateMiner
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        return None
    logging.getLogger("drain3").setLevel(logging.ERROR)

    def parse(messages: list[str]) -> list[str]:
        miner = TemplateMiner(config=TemplateMinerConfig())
        return [str(miner.add_log_message(message)["cluster_id"]) for message in messages]

    return parse


def format_table(table: pl.DataFrame, title: str) -> str:
    """A fixed-width table with the mean of each figure as the last row."""
    figure_columns = [c for c in table.columns if c.endswith("GA") and not c.endswith("published_GA")]
    figure_columns += [c for c in table.columns if c.endswith("published_GA")]
    headers = {
        "GA": "GA", "FGA": "FGA", "drain3_GA": "Drain3 GA", "drain3_FGA": "Drain3 FGA",
        "drain_published_GA": "Drain GA*", "brain_published_GA": "Brain GA*",
        "registry_GA": "reg. GA", "registry_FGA": "reg. FGA",
    }  # fmt: skip
    columns = ["system", "lines", "true_templates", "mined_templates", *figure_columns]
    names = {
        "system": "system",
        "lines": "lines",
        "true_templates": "true tpl",
        "mined_templates": "mined tpl",
    }
    names |= {c: headers.get(c, c) for c in figure_columns}
    rows = [[_cell(row[c]) for c in columns] for row in table.iter_rows(named=True)]
    mean_row = ["mean", _cell(int(table["lines"].sum())), "", ""]
    mean_row += [
        _cell(table[c].drop_nulls().mean()) if table[c].drop_nulls().len() else "-" for c in figure_columns
    ]
    widths = [max(len(names[c]), *(len(r[i]) for r in rows), len(mean_row[i])) for i, c in enumerate(columns)]
    lines = [
        title,
        "  ".join(
            names[c].rjust(w) if i else names[c].ljust(w)
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        ),
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in [*rows, mean_row]:
        lines.append(
            "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Loghub 2k folder with log_formats.json and one folder per system "
        "(default: $QA_ASSETS_SHARED_DATA/loghub_2k or ../shared/data/loghub_2k)",
    )
    parser.add_argument("--systems", nargs="*", default=None, help="only these systems (default: all found)")
    parser.add_argument(
        "--no-drain3", action="store_true", help="do not run Drain3 even when it is installed"
    )
    parser.add_argument(
        "--registry-partitions",
        type=int,
        default=4,
        help="also mine each log as this many consecutive partitions through the template registry and "
        "score the resolved ids (reg. GA); 1 turns it off (default: 4)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the tables as JSON to this file")


def main(args: argparse.Namespace) -> int:
    data_dir = args.data or default_data_dir()
    try:
        systems = discover_systems(data_dir, args.systems)
        tables = evaluate(
            systems, with_drain3=not args.no_drain3, registry_partitions=args.registry_partitions
        )
    except EvaluationDataError as error:
        print(f"qa-assets evaluate templates: {error}", file=sys.stderr)
        return 2
    print(
        format_table(
            tables["original"],
            f"Template mining on Loghub 2k ({data_dir}), labels: <X>_2k.log_structured.csv",
        )
    )
    if "corrected" in tables:
        print()
        print(
            format_table(
                tables["corrected"],
                "Same mining, labels: corrected/<X>_2k.log_structured_corrected.csv (ICSE'22)",
            )
        )
    print()
    print("GA: grouping accuracy as logparser computes it; FGA: F1 of mined groups that equal a true group.")
    print("Only each system's log_format is given to the miner. * published figures, not measured here.")
    if args.registry_partitions > 1:
        print(
            f"reg.: the log mined as {args.registry_partitions} consecutive partitions through the template "
            "registry, ids resolved through the lineage."
        )
    if "drain3_GA" not in tables["original"].columns and not args.no_drain3:
        print(
            "Drain3 not installed: its columns are left out "
            "(pip install --no-deps drain3==0.9.11 jsonpickle==4.1.1)."
        )
    if args.json:
        args.json.write_text(json.dumps({name: t.to_dicts() for name, t in tables.items()}, indent=2))
    return 0
