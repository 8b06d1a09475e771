"""`qa-assets bench ingest`: ingesting a simulated hour against DuckDB's own `read_json` of the same files.

Both sides run in fresh subprocesses, one after the other in the same benchmark run, so the ratio compares
like with like on a noisy machine; each reports wall time and its peak RSS (ru_maxrss). The baseline reads
every JSON file with `read_json` (newline-delimited) into a table and every plain-text log with
`read_csv` as one column: parsing only, no flattening, validation, masking or accounting. Running two
sizes shows whether peak memory grows with the hour.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="large", help="simulator scale of the hour (default large: ~1.9M records)")
    parser.add_argument("--sizes", default="1,2", help="hours per run, comma-separated (default 1,2: memory growth)")
    parser.add_argument("--landing", type=Path, default=None, help="measure this landing directory instead")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the simulated landing directories here and reuse them on the next run")


def _child(code: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


BASELINE = r"""
import json, resource, sys, time
from pathlib import Path
import duckdb
landing = Path(sys.argv[1]) if len(sys.argv) > 1 else Path({landing!r})
con = duckdb.connect()
started = time.perf_counter()
rows = 0
for i, path in enumerate(sorted(p for p in landing.rglob('*') if p.is_file())):
    name = path.name.removesuffix('.gz')
    if name.endswith(('.jsonl', '.json')):
        layout = 'auto' if 'deployments' in path.parts else 'newline_delimited'
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_json(?, format=?, maximum_object_size=268435456)", [str(path), layout])
    elif name.endswith('.log'):
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_csv(?, columns={{'line': 'VARCHAR'}}, delim=chr(1), quote='', escape='', header=false)", [str(path)])
    else:
        continue
    rows += con.execute('SELECT count(*) FROM t').fetchone()[0]
seconds = time.perf_counter() - started
print(json.dumps({{'seconds': seconds, 'rows': rows, 'maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

OURS = r"""
import json, resource, time
from pathlib import Path
from qa_assets.lib import warehouse
from qa_assets.lib.ingest.landing import ingest_landing
started = time.perf_counter()
with warehouse.connect({warehouse!r}) as con:
    summary = ingest_landing(con, Path({landing!r}), key=b'bench-key', settle_seconds=0)
seconds = time.perf_counter() - started
print(json.dumps({{'seconds': seconds, 'records': summary.records_read, 'accepted': summary.accepted,
                  'quarantined': summary.quarantined, 'maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(landing: Path, scratch: Path) -> dict:
    baseline = _child(BASELINE.format(landing=str(landing)))
    ours = _child(OURS.format(landing=str(landing), warehouse=str(scratch / f"bench-{time.time_ns()}.duckdb")))
    return {"baseline": baseline, "ours": ours, "ratio": ours["seconds"] / baseline["seconds"]}


def main(args: argparse.Namespace) -> int:
    import os

    from qa_assets.simulate import simulate

    print(f"{os.cpu_count()} CPUs; each side in a fresh subprocess, same run")
    with tempfile.TemporaryDirectory(prefix="qa-assets-bench-ingest-") as tmp:
        scratch = Path(tmp)
        kept = args.keep.resolve() if args.keep else scratch
        runs: list[tuple[str, Path]] = []
        if args.landing:
            runs.append((str(args.landing), args.landing))
        else:
            for hours in [float(h) for h in args.sizes.split(",")]:
                landing = kept / f"landing-{args.scale}-{hours:g}h-seed{args.seed}"
                if not landing.exists():
                    started = time.perf_counter()
                    simulate(landing, topology="shop", hours=hours, scale=args.scale, seed=args.seed, faults="default",
                             ground_truth=kept / f"truth-{args.scale}-{hours:g}h-seed{args.seed}.json")
                    print(f"simulated {hours:g} h at scale {args.scale} in {time.perf_counter() - started:.1f} s",
                          flush=True)
                runs.append((f"{hours:g} h {args.scale}", landing))
        print(f"\n{'input':<16}{'records':>12}{'ours s':>9}{'rec/s':>12}{'read_json s':>13}{'ratio':>7}"
              f"{'RSS ours MB':>13}{'RSS duckdb MB':>15}")
        for label, landing in runs:
            m = measure(landing, scratch)
            ours, base = m["ours"], m["baseline"]
            print(f"{label:<16}{ours['records']:>12,}{ours['seconds']:>9.1f}{ours['records'] / ours['seconds']:>12,.0f}"
                  f"{base['seconds']:>13.1f}{m['ratio']:>7.2f}{ours['maxrss_mb']:>13.0f}{base['maxrss_mb']:>15.0f}",
                  flush=True)
    print("\nratio = our ingestion (parse, validate, mask, account, write DuckDB) / DuckDB read_json of the same files")
    return 0
