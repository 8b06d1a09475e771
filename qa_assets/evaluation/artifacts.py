"""`qa-assets evaluate artifacts`: do generated regression tests tell a faulty deployment from a fixed one?

A regression test is worth keeping when it fails while the defect is there and passes once it is fixed.
On a simulated run both deployments exist: ``qa_assets.simulate.http_target`` serves the simulated system
in the faulty or the fixed version of each injected fault. So, per fault with an HTTP symptom:

1. the telemetry goes through the project's stages (``evaluation.rca.pipeline_inputs``: ingest, signals,
   defects; ``rank_root_causes``) and ``write_artifacts`` renders the regression tests, as the assets do;
2. the fault's regression tests are the HTTP-replay tests of the defects matched to it
   (``evaluation.defects.match_defects``: a defect on the root, on a service with a measured symptom, or
   upstream of the root, overlapping the fault);
3. they run with pytest in a subprocess, every base-URL variable pointing at the target: once against the
   faulty version, where the suite must fail (some test fails), once against the fixed version, where it
   must pass (no test fails, at least one passes).

The figure: the share of faults whose suite does both. ``validated_share`` gives it over every fault with
an HTTP symptom (a fault without a generated HTTP test counts as not validated: end to end) and over the
faults that got one (the generator's own quality).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

VALIDATION: dict[str, pl.DataType] = {
    "fault_id": pl.String,
    "kind": pl.String,
    "root_service": pl.String,
    "defects": pl.Int64,  # defects matched to the fault
    "tests": pl.List(pl.String),  # file names of its HTTP-replay regression tests
    "failed_on_faulty": pl.Boolean,  # null: no test to run
    "passed_on_fixed": pl.Boolean,
    "validated": pl.Boolean,
    "detail": pl.String,  # failing test cases on faulty / fixed, or why nothing ran
}
RUN_TIMEOUT_S = 600


# ----------------------------------------------------------------------------------------- running


def target_environment(target: Any) -> dict[str, str]:
    """The variables a generated regression test reads, all pointing at a running ``http_target``:
    ``QA_TARGET_BASE_URL`` and ``QA_TARGET_BASE_URL_<SERVICE>`` for every service, and a valid request body
    for every route that takes one (``QA_REQUEST_BODY_<METHOD>_<ROUTE>``, from the topology's examples: what
    a QA engineer hands the tests from the API's documentation)."""
    from qa_assets.lib.artifacts._common import env_suffix
    from qa_assets.lib.artifacts.regression_tests import request_body_env

    env = {"QA_TARGET_BASE_URL": target.base_url}
    for name in target.model.service_names():
        env[f"QA_TARGET_BASE_URL_{env_suffix(name)}"] = target.service_url(name)
    for method, route, body in target.model.example_bodies():
        env[request_body_env(method, route)] = json.dumps(body)
    return env


def run_regression_tests(paths: Sequence[Path], env: dict[str, str], report: Path,
                         timeout_s: float = RUN_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Run generated test modules with pytest in one subprocess (only ``env``'s QA_ variables set); per
    module (file name): ``outcome`` failed | passed | skipped and the ``failures`` (test id: message)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    clean["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the generated modules need pytest alone
    # no configuration file of any project around the tests; the module name is the test's class name
    rootdir = os.path.commonpath([str(Path(p).resolve().parent) for p in paths])
    command = [sys.executable, "-m", "pytest", *map(str, paths), "-q", "-p", "no:cacheprovider",
               "-c", os.devnull, f"--rootdir={rootdir}", f"--junitxml={report}"]
    result = subprocess.run(command, cwd=rootdir, env={**clean, **env}, capture_output=True, text=True,
                            timeout=timeout_s)
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report for {', '.join(p.name for p in paths)}: "
                           f"{(result.stdout + result.stderr)[-2000:]}")
    cases: dict[str, list[tuple[str, str, str]]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = (case.get("classname") or "").split(".")[-1]
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        message = next((c.get("message", "") for c in case if c.tag in ("failure", "error", "skipped")), "")
        cases.setdefault(module, []).append((case.get("name") or "", kind, message))
    outcomes = {}
    for path in paths:
        items = cases.get(Path(path).stem, [])
        failures = {name: message for name, kind, message in items if kind in ("failure", "error")}
        passed = any(kind == "passed" for _, kind, _ in items)
        outcome = "failed" if failures or not items else ("passed" if passed else "skipped")
        if not items:
            failures = {"collection": (result.stdout + result.stderr)[-500:]}
        outcomes[Path(path).name] = {"outcome": outcome, "failures": failures}
    return outcomes


# ----------------------------------------------------------------------------------------- matching


def regression_tests_by_fault(artifacts: pl.DataFrame, defects: pl.DataFrame,
                              truth: dict[str, Any]) -> dict[str, list[tuple[str, Path]]]:
    """Fault id -> [(defect id, HTTP-replay test path)] of the defects matched to it."""
    from qa_assets.evaluation.defects import match_defects

    if defects.height == 0:
        return {}
    matched = match_defects(defects, truth).filter(pl.col("fault_id").is_not_null())
    tests = artifacts.filter((pl.col("kind") == "regression_test") & (pl.col("detail") == "http_replay")
                             & pl.col("path").is_not_null())
    joined = matched.join(tests.select("defect_id", "path"), on="defect_id", how="left")
    out: dict[str, list[tuple[str, Path]]] = {}
    for row in joined.sort("fault_id", "defect_id").iter_rows(named=True):
        out.setdefault(row["fault_id"], [])
        if row["path"]:
            out[row["fault_id"]].append((row["defect_id"], Path(row["path"])))
    return out


def _defect_counts(defects: pl.DataFrame, truth: dict[str, Any]) -> dict[str, int]:
    from qa_assets.evaluation.defects import match_defects

    if defects.height == 0:
        return {}
    matched = match_defects(defects, truth).filter(pl.col("fault_id").is_not_null())
    return {k: int(v) for k, v in matched.group_by("fault_id").len().iter_rows()}


# ----------------------------------------------------------------------------------------- validating


def validate_regression_tests(
    truth: dict[str, Any],
    tests_by_fault: dict[str, list[tuple[str, Path]]],
    *,
    workdir: Path,
    defect_counts: dict[str, int] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Run each fault's regression tests against the faulty and the fixed target (``VALIDATION`` rows, one
    per fault with an HTTP symptom)."""
    from qa_assets.simulate.http_target import http_faults, serve_target

    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for fault in http_faults(truth):
        fault_id = str(fault["fault_id"])
        tests = tests_by_fault.get(fault_id, [])
        row: dict[str, Any] = {
            "fault_id": fault_id, "kind": fault.get("kind"), "root_service": fault.get("root_service"),
            "defects": (defect_counts or {}).get(fault_id, len(tests)),
            "tests": [p.name for _, p in tests], "failed_on_faulty": None, "passed_on_fixed": None,
            "validated": False,
        }
        if not tests:
            row["detail"] = ("no defect matched the fault" if not row["defects"]
                             else "its defects got no HTTP-replay regression test")
            rows.append(row)
            continue
        paths = [p for _, p in tests]
        results = {}
        for version in ("faulty", "fixed"):
            began = time.perf_counter()
            with serve_target(truth, fault_id, version, seed=seed) as target:
                results[version] = run_regression_tests(
                    paths, target_environment(target), workdir / f"{fault_id}-{version}.xml")
            if progress:
                outcome = ", ".join(sorted(o["outcome"] for o in results[version].values()))
                progress(f"{fault_id} {fault.get('kind')}: {version} target -> {outcome} "
                         f"({time.perf_counter() - began:.1f} s)")
        faulty, fixed = results["faulty"], results["fixed"]
        row["failed_on_faulty"] = any(o["outcome"] == "failed" for o in faulty.values())
        row["passed_on_fixed"] = (all(o["outcome"] != "failed" for o in fixed.values())
                                  and any(o["outcome"] == "passed" for o in fixed.values()))
        row["validated"] = row["failed_on_faulty"] and row["passed_on_fixed"]
        row["detail"] = json.dumps({
            "faulty_failures": sorted(f"{name}::{case}" for name, o in faulty.items()
                                      for case in o["failures"]),
            "fixed_failures": {f"{name}::{case}": message[:300] for name, o in fixed.items()
                               for case, message in o["failures"].items()},
        })
        rows.append(row)
    return pl.DataFrame(rows, schema=VALIDATION)


def validated_share(validation: pl.DataFrame, *, tested_only: bool = False) -> float | None:
    """Share of faults whose regression tests failed on the faulty and passed on the fixed target; over every
    fault with an HTTP symptom, or (``tested_only``) over those that got a test. None when there are none."""
    frame = validation.filter(pl.col("failed_on_faulty").is_not_null()) if tested_only else validation
    if frame.height == 0:
        return None
    return round(float(frame["validated"].sum()) / frame.height, 4)


def share_by_kind(validation: pl.DataFrame) -> pl.DataFrame:
    return (
        validation.group_by("kind")
        .agg(faults=pl.len(), tested=pl.col("failed_on_faulty").is_not_null().sum(),
             failed_on_faulty=pl.col("failed_on_faulty").sum(),
             passed_on_fixed=pl.col("passed_on_fixed").sum(), validated=pl.col("validated").sum())
        .sort("kind")
    )


# ----------------------------------------------------------------------------------------- end to end


def evaluate_on_simulation(landing: Path | str, ground_truth: Path | str, *, workdir: Path | str,
                           defects_source: str = "pipeline", seed: int = 0,
                           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Defects, root causes and regression tests from a simulated landing directory, then each fault's tests
    against its faulty and fixed target. Returns the figures and the ``validation`` frame."""
    from qa_assets.evaluation.rca import load_truth, pipeline_inputs
    from qa_assets.lib import rca
    from qa_assets.lib.artifacts.writer import write_artifacts

    workdir = Path(workdir)
    truth = load_truth(Path(ground_truth))
    began = time.perf_counter()
    inputs = pipeline_inputs(Path(landing), truth, defects_source=defects_source)
    frames = inputs.frames or {}
    causes = rca.rank_root_causes(inputs.defects, windows=inputs.windows, anomalies=inputs.anomalies,
                                  graph=inputs.graph, deployments=inputs.deployments,
                                  log_events=inputs.log_events)
    defects = inputs.defects
    if "severity" not in defects.columns:  # defects built from the ground truth carry no severity
        defects = defects.with_columns(severity=pl.lit(None, pl.String))
    artifacts = write_artifacts(workdir / "artifacts", defects, causes, frames["spans"], frames["test_cases"])
    pipeline_seconds = time.perf_counter() - began
    if progress:
        progress(f"{defects.height} defects, {artifacts.filter(pl.col('detail') == 'http_replay').height} "
                 f"HTTP-replay regression tests ({pipeline_seconds:.1f} s)")
    began = time.perf_counter()
    validation = validate_regression_tests(
        truth, regression_tests_by_fault(artifacts, defects, truth), workdir=workdir / "runs",
        defect_counts=_defect_counts(defects, truth), seed=seed, progress=progress)
    return {
        "faults_with_http_symptom": validation.height,
        "faults_tested": int(validation["failed_on_faulty"].is_not_null().sum()),
        "validated_share": validated_share(validation),
        "validated_share_tested": validated_share(validation, tested_only=True),
        "defects_source": inputs.defects_source,
        "seconds": {"pipeline": round(pipeline_seconds, 1),
                    "validation": round(time.perf_counter() - began, 1)},
        "artifacts_dir": str(workdir / "artifacts"),
        "validation": validation,
    }


def format_report(metrics: dict[str, Any]) -> str:
    validation: pl.DataFrame = metrics["validation"]

    def yes(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "NO")

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{'fault':<6} {'kind':<22} {'root':<18} {'defects':>7} {'tests':>5}  {'failed on faulty':>16} "
             f"{'passed on fixed':>15}  generated tests"]
    for row in validation.iter_rows(named=True):
        tests = ", ".join(row["tests"]) or row["detail"]
        lines.append(f"{row['fault_id']:<6} {row['kind']:<22} {row['root_service']:<18} {row['defects']:>7} "
                     f"{len(row['tests']):>5}  {yes(row['failed_on_faulty']):>16} "
                     f"{yes(row['passed_on_fixed']):>15}  {tests}")
    lines += ["", f"{'fault kind':<22} {'faults':>6} {'tested':>6} {'failed on faulty':>16} "
                  f"{'passed on fixed':>15} {'validated':>9}"]
    for row in share_by_kind(validation).iter_rows(named=True):
        lines.append(f"{row['kind']:<22} {row['faults']:>6} {row['tested']:>6} {row['failed_on_faulty']:>16} "
                     f"{row['passed_on_fixed']:>15} {row['validated']:>9}")
    lines += [
        "",
        f"faults validated (failed on faulty and passed on fixed): {share(metrics['validated_share'])} of "
        f"{metrics['faults_with_http_symptom']} faults with an HTTP symptom; "
        f"{share(metrics['validated_share_tested'])} of the {metrics['faults_tested']} that got a regression "
        f"test (defects from: {metrics['defects_source']})",
        f"artifacts: {metrics['artifacts_dir']}",
    ]
    if metrics.get("seconds"):
        lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in metrics["seconds"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", type=Path, help="a simulated landing directory")
    parser.add_argument("--ground-truth", type=Path,
                        help="its ground_truth.json (default: beside the landing directory)")
    parser.add_argument("--simulate", type=Path,
                        help="simulate into this new folder first (landing/ + ground truth)")
    parser.add_argument("--topology", default="shop", help="simulator topology (default: %(default)s)")
    parser.add_argument("--hours", type=float, default=4.0, help="simulated hours (default: %(default)s)")
    parser.add_argument("--scale", default="small", help="simulator scale (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default: %(default)s)")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="several simulator seeds, comma-separated (e.g. 0,1,2): each is simulated and "
                             "validated, then the share over all their faults is printed")
    parser.add_argument("--faults", default="all",
                        help="simulator scenario (default: %(default)s: every fault kind)")
    parser.add_argument("--defects", choices=("pipeline", "ground-truth"), default="pipeline",
                        help="the pipeline's defects (default), or defects built from the ground truth's "
                             "fault windows, to measure the generated tests apart from detection")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the artifacts and test reports go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed, e.g. 0,1,2")
    return seeds


def pooled_figures(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The validated share over the faults of several runs (each ``evaluate_on_simulation``'s result)."""
    validation = pl.concat([r["validation"] for r in runs]) if runs else pl.DataFrame(schema=VALIDATION)
    return {"runs": len(runs), "faults_with_http_symptom": validation.height,
            "faults_tested": int(validation["failed_on_faulty"].is_not_null().sum()),
            "faults_validated": int(validation["validated"].sum()),
            "validated_share": validated_share(validation),
            "validated_share_tested": validated_share(validation, tested_only=True)}


def main(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    seeds = getattr(args, "seeds", None)
    if seeds and args.landing:
        print("qa-assets evaluate artifacts: --seeds simulates its runs; drop --landing or --seeds",
              file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qa-assets-eval-artifacts-") as scratch:
        for seed in seeds or [args.seed]:
            workdir = (args.workdir or Path(scratch)) / (f"seed{seed}" if seeds else "")
            landing, truth = args.landing, args.ground_truth
            if args.simulate or not landing:
                from qa_assets.simulate import SimulationError, simulate

                folder = workdir / "simulated" if not args.simulate else (
                    args.simulate / f"seed{seed}" if seeds else args.simulate)
                try:
                    summary = simulate(folder / "landing", topology=args.topology, hours=args.hours,
                                       scale=args.scale, seed=seed, faults=args.faults,
                                       ground_truth=folder / "ground_truth.json")
                except (SimulationError, ValueError) as error:
                    print(f"qa-assets evaluate artifacts: {error}", file=sys.stderr)
                    return 2
                progress(f"simulated {summary.topology} ({args.hours:g} h, {summary.scale}, seed {seed}): "
                         f"faults {', '.join(summary.faults)}")
                landing, truth = summary.landing_dir, summary.ground_truth_path
            truth = truth or Path(landing).parent / "ground_truth.json"
            try:
                metrics = evaluate_on_simulation(landing, truth, workdir=workdir, defects_source=args.defects,
                                                 progress=progress)
            except (FileNotFoundError, ValueError, RuntimeError) as error:
                print(f"qa-assets evaluate artifacts: {error}", file=sys.stderr)
                return 2
            runs.append({**metrics, "seed": seed})
            if not args.json:
                print((f"== seed {seed}\n" if seeds else "") + format_report(metrics), flush=True)
        pooled = pooled_figures(runs)
        if args.json:
            out: dict[str, Any] = {"runs": [
                {**{k: v for k, v in m.items() if k != "validation"}, "per_fault": m["validation"].to_dicts()}
                for m in runs]}
            if not seeds:
                out = out["runs"][0]
            else:
                out["pooled"] = pooled
            print(json.dumps(out, indent=2, default=str))
        elif seeds:
            share = "-" if pooled["validated_share"] is None else f"{pooled['validated_share']:.3f}"
            print(f"\nover seeds {','.join(map(str, seeds))}: {pooled['faults_validated']} of "
                  f"{pooled['faults_with_http_symptom']} faults with an HTTP symptom validated ({share}); "
                  f"per seed: " + ", ".join(f"{m['seed']}: {m['validated_share']}" for m in runs))
    return 0


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="qa-assets evaluate artifacts", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
