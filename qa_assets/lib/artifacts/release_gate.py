"""Release readiness: pass / warn / block per deployed service version, with the reasons and the evidence.

For every (service, version) in the deployment events (config bundles count as versions: a config change is
a deployment whose version is the config revision):

- **block** when an open S1/S2 defect is blamed on one of the version's changes (the defect's rank-1 root
  cause names the change's event id with at least ``min_cause_confidence``), or when a CI test of the version
  fails in its latest run (a red build that was deployed anyway);
- **warn** for S3/S4 defects blamed on the version, for S1/S2 defects blamed on it that are already resolved
  (a known-bad version: ``resolved_blamed_decision``), for blame below the confidence bar, for CI tests that
  failed and passed on a re-run (flaky), and for an unexplained shift after the deployment: the error rate or
  the p95 latency of the service's windows after the deploy against the windows before it (the previous
  version), when no defect accounts for it;
- **pass** otherwise, with the numbers that were checked.

A shift is explained when a defect of the same service overlaps the post-deploy period: blamed on this
version it is already a reason; blamed elsewhere (a failing dependency) it is noted, not held against the
version. All thresholds are in ``GatePolicy``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    OPEN_STATUSES,
    TS,
    ArtifactInputError,
    iso,
    number,
    one_line,
    require_frame,
    top_causes,
)

RELEASE_READINESS: dict[str, pl.DataType] = {
    "service": pl.String,
    "version": pl.String,
    "decision": pl.String,  # pass | warn | block
    "reasons": pl.String,  # human-readable, one reason per line
    "deployed_at": TS,  # the latest deployment of this version
    "change_ids": pl.List(pl.String),  # deployment event ids of this version
    "defect_ids": pl.List(pl.String),  # defects blamed on this version's changes
    "evidence": pl.String,  # JSON
    "decided_at": TS,
}
DECISIONS = ("pass", "warn", "block")


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the release gate (defaults in parentheses say why)."""

    block_severities: tuple[str, ...] = ("S1", "S2")
    warn_severities: tuple[str, ...] = ("S3", "S4")
    open_statuses: tuple[str, ...] = OPEN_STATUSES
    # Blame this weak is a lead, not a verdict: it warns instead of blocking.
    min_cause_confidence: float = 0.3
    # A version that caused a serious defect stays suspect after the defect ended (usually by a rollback).
    resolved_blamed_decision: str = "warn"
    block_on_failing_ci: bool = True
    warn_on_flaky_ci: bool = True
    warn_without_ci: bool = False  # many services (proxies, config bundles) have no CI of their own
    # Post-deploy verification: windows up to `post_deploy_minutes` after the deployment (or until the next
    # one) against `pre_deploy_minutes` before it.
    pre_deploy_minutes: float = 60.0
    post_deploy_minutes: float = 30.0
    min_windows: int = 5  # fewer windows on either side: too little to compare
    min_post_requests: int = 50
    # Error rate: both an absolute and a relative rise, and a handful of errors (one failure in 20 requests
    # is not a shift).
    error_rate_increase: float = 0.02
    error_rate_ratio: float = 2.0
    min_post_errors: int = 5
    # Latency (median of the windows' p95): relative and absolute, so a 2 -> 4 ms change is not flagged.
    latency_ratio: float = 1.5
    latency_increase_ms: float = 25.0

    def __post_init__(self) -> None:
        if self.resolved_blamed_decision not in DECISIONS:
            raise ArtifactInputError(
                f"GatePolicy.resolved_blamed_decision {self.resolved_blamed_decision!r}: use pass, warn or block"
            )


DEPLOYMENT_COLUMNS = ("event_id", "event_type", "timestamp", "service", "version")
DEFECT_COLUMNS = ("defect_id", "service", "defect_type", "severity", "status", "first_seen", "last_seen")
CAUSE_COLUMNS = ("defect_id", "rank", "service", "cause_kind", "change_id", "confidence")
WINDOW_COLUMNS = ("service", "window_start", "requests", "errors", "latency_p95_ms")
TEST_COLUMNS = ("timestamp", "suite", "classname", "name", "status", "service", "version")


def empty_release_readiness() -> pl.DataFrame:
    return pl.DataFrame(schema=RELEASE_READINESS)


def _versions(deployments: pl.DataFrame) -> pl.DataFrame:
    deployed = deployments.filter(
        pl.col("service").is_not_null() & pl.col("version").is_not_null() & pl.col("timestamp").is_not_null()
        & (pl.col("event_type").is_null() | (pl.col("event_type") != "removed"))
    )
    extra = [c for c in ("environment", "change_kind", "previous_version") if c in deployed.columns]
    return (
        deployed.sort("timestamp")
        .group_by(["service", "version"], maintain_order=True)
        .agg(
            deployed_at=pl.col("timestamp").max(),
            first_deployed_at=pl.col("timestamp").min(),
            change_ids=pl.col("event_id").drop_nulls().unique(maintain_order=True),
            events=pl.struct(["event_id", "event_type", "timestamp", *extra]),
        )
        .sort(["service", "deployed_at"])
    )


def _next_deploy(deployments: pl.DataFrame) -> pl.DataFrame:
    """Per service, the time of the next deployment after each deployment time (ends a post-deploy period)."""
    times = (
        deployments.filter(pl.col("service").is_not_null() & pl.col("timestamp").is_not_null())
        .select("service", "timestamp").unique().sort(["service", "timestamp"])
        .with_columns(next_deploy_at=pl.col("timestamp").shift(-1).over("service"))
    )
    return times.rename({"timestamp": "deployed_at"})


def _blame(versions: pl.DataFrame, deployments: pl.DataFrame, defects: pl.DataFrame,
           root_causes: pl.DataFrame) -> pl.DataFrame:
    """Defects whose rank-1 cause names a change of a (service, version): one row per pair."""
    top = top_causes(root_causes).filter(pl.col("change_id").is_not_null())
    if top.height == 0:
        return pl.DataFrame(schema={"service": pl.String, "version": pl.String, "defect_id": pl.String})
    changes = deployments.select(
        pl.col("event_id").alias("change_id"), "service", "version"
    ).filter(pl.col("version").is_not_null()).unique()
    defect_cols = [c for c in ("defect_id", "defect_type", "severity", "status", "first_seen", "last_seen",
                               "title", "service") if c in defects.columns]
    return (
        top.select("defect_id", "change_id", pl.col("cause_kind"), pl.col("confidence").alias("cause_confidence"),
                   pl.col("service").alias("cause_service"))
        .join(changes, on="change_id", how="inner")
        .join(defects.select(defect_cols).rename({"service": "defect_service"}), on="defect_id", how="inner")
        .join(versions.select("service", "version"), on=["service", "version"], how="semi")
    )


def _ci(test_cases: pl.DataFrame) -> pl.DataFrame:
    """Per (service, version, test): runs, failures and the status of the latest run."""
    rows = test_cases.filter(
        pl.col("service").is_not_null() & pl.col("version").is_not_null()
        & pl.col("status").is_in(["passed", "failed", "error"])
    )
    order = ["timestamp"] + [c for c in ("source_file", "source_line") if c in rows.columns]
    return (
        rows.sort(order, nulls_last=False)
        .group_by(["service", "version", "suite", "classname", "name"])
        .agg(
            runs=pl.len(),
            failures=pl.col("status").is_in(["failed", "error"]).sum(),
            last_status=pl.col("status").last(),
            message=pl.col("message").filter(pl.col("status").is_in(["failed", "error"])).drop_nulls().last()
            if "message" in rows.columns else pl.lit(None, pl.String),
        )
    )


def _shifts(versions: pl.DataFrame, deployments: pl.DataFrame, windows: pl.DataFrame,
            policy: GatePolicy) -> pl.DataFrame:
    """Per (service, version): windows before and after its latest deployment, compared."""
    schema = {"service": pl.String, "version": pl.String}
    if windows.height == 0 or versions.height == 0:
        return pl.DataFrame(schema=schema)
    periods = versions.select("service", "version", "deployed_at").join(
        _next_deploy(deployments), on=["service", "deployed_at"], how="left"
    )
    full_post = pl.col("deployed_at") + timedelta(minutes=policy.post_deploy_minutes)
    periods = periods.with_columns(
        pre_start=pl.col("deployed_at") - timedelta(minutes=policy.pre_deploy_minutes),
        # the next deployment ends the period: after it, another version runs
        post_end=pl.min_horizontal(full_post, pl.col("next_deploy_at").fill_null(full_post)),
    )
    joined = (
        windows.select("service", "window_start", "requests", "errors", "latency_p95_ms")
        .join(periods, on="service", how="inner")
        .filter((pl.col("window_start") >= pl.col("pre_start")) & (pl.col("window_start") < pl.col("post_end")))
        .with_columns(phase=pl.when(pl.col("window_start") < pl.col("deployed_at")).then(pl.lit("pre"))
                      .otherwise(pl.lit("post")))
    )
    if joined.height == 0:
        return pl.DataFrame(schema=schema)
    stats = joined.group_by(["service", "version", "phase"]).agg(
        windows=pl.len(),
        requests=pl.col("requests").fill_null(0).sum(),
        errors=pl.col("errors").fill_null(0).sum(),
        p95_ms=pl.col("latency_p95_ms").filter(pl.col("requests").fill_null(0) > 0).median(),
        post_end=pl.col("post_end").first(),
    ).with_columns(
        error_rate=pl.when(pl.col("requests") > 0).then(pl.col("errors") / pl.col("requests")).otherwise(None)
    )
    pre = stats.filter(pl.col("phase") == "pre").drop("phase", "post_end")
    post = stats.filter(pl.col("phase") == "post").drop("phase")
    both = pre.join(post, on=["service", "version"], how="full", suffix="_post", coalesce=True).rename(
        {"windows": "windows_pre", "requests": "requests_pre", "errors": "errors_pre", "p95_ms": "p95_ms_pre",
         "error_rate": "error_rate_pre"}
    )
    enough = (
        (pl.col("windows_pre").fill_null(0) >= policy.min_windows)
        & (pl.col("windows_post").fill_null(0) >= policy.min_windows)
        & (pl.col("requests_post").fill_null(0) >= policy.min_post_requests)
    )
    error_shift = (
        enough
        & (pl.col("error_rate_post") >= pl.col("error_rate_pre") + policy.error_rate_increase)
        & (pl.col("error_rate_post") >= pl.col("error_rate_pre") * policy.error_rate_ratio)
        & (pl.col("errors_post") >= policy.min_post_errors)
    )
    latency_shift = (
        enough
        & (pl.col("p95_ms_post") >= pl.col("p95_ms_pre") * policy.latency_ratio)
        & (pl.col("p95_ms_post") - pl.col("p95_ms_pre") >= policy.latency_increase_ms)
    )
    return both.with_columns(
        comparable=enough, error_shift=error_shift.fill_null(False), latency_shift=latency_shift.fill_null(False)
    )


def release_readiness(
    deployments: pl.DataFrame,
    defects: pl.DataFrame,
    root_causes: pl.DataFrame,
    windows: pl.DataFrame,
    test_cases: pl.DataFrame,
    *,
    policy: GatePolicy | None = None,
    decided_at: datetime | None = None,
) -> pl.DataFrame:
    """One row per deployed (service, version): decision, reasons, evidence (``RELEASE_READINESS``)."""
    policy = policy or GatePolicy()
    deployments = require_frame(deployments, "deployments", DEPLOYMENT_COLUMNS, "raw.deployments")
    defects = require_frame(defects, "defects", DEFECT_COLUMNS, "defects.defects")
    root_causes = require_frame(root_causes, "root_causes", CAUSE_COLUMNS, "rca.root_causes")
    windows = require_frame(windows, "windows", WINDOW_COLUMNS, "signals.service_windows")
    test_cases = require_frame(test_cases, "test_cases", TEST_COLUMNS, "raw.test_cases")
    decided_at = decided_at or datetime.now(UTC).replace(tzinfo=None)

    versions = _versions(deployments)
    if versions.height == 0:
        return empty_release_readiness()
    blamed = _blame(versions, deployments, defects, root_causes)
    ci = _ci(test_cases)
    shifts = _shifts(versions, deployments, windows, policy)
    blamed_by = _group_rows(blamed)
    ci_by = _group_rows(ci)
    shift_by = {(r["service"], r["version"]): r for r in shifts.to_dicts()} if shifts.height else {}
    service_defects = defects.filter(pl.col("service").is_not_null())

    rows = []
    # a loop per deployed version: versions are few (tens per day), each needs its own wording
    for version in versions.to_dicts():
        key = (version["service"], version["version"])
        block: list[str] = []
        warn: list[str] = []
        notes: list[str] = []
        blamed_rows = blamed_by.get(key, [])
        for d in sorted(blamed_rows, key=lambda r: (str(r.get("severity")), str(r["defect_id"]))):
            _judge_blamed(d, policy, block, warn)
        tests = ci_by.get(key, [])
        _judge_ci(tests, policy, block, warn, notes)
        shift = shift_by.get(key)
        _judge_shift(shift, version, blamed_rows, service_defects, root_causes, policy, warn, notes)
        decision = "block" if block else "warn" if warn else "pass"
        reasons = block + warn if (block or warn) else ["no defect blamed on this version", *notes]
        if block or warn:
            reasons += notes
        rows.append({
            "service": version["service"],
            "version": version["version"],
            "decision": decision,
            "reasons": "\n".join(reasons),
            "deployed_at": version["deployed_at"],
            "change_ids": list(version["change_ids"] or []),
            "defect_ids": sorted({str(d["defect_id"]) for d in blamed_rows}),
            "evidence": json.dumps(_evidence(version, blamed_rows, tests, shift, policy), default=str,
                                   sort_keys=True),
            "decided_at": decided_at,
        })
    return pl.DataFrame(rows, schema=RELEASE_READINESS)


def _group_rows(frame: pl.DataFrame) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in frame.to_dicts():
        out.setdefault((row["service"], row["version"]), []).append(row)
    return out


def _defect_words(d: dict[str, Any]) -> str:
    return (f"{d.get('severity')} {d.get('defect_type')} defect {one_line(d['defect_id'], 80)} "
            f"({d.get('status')}) in {one_line(d.get('defect_service'), 80)}")


def _judge_blamed(d: dict[str, Any], policy: GatePolicy, block: list[str], warn: list[str]) -> None:
    confidence = d.get("cause_confidence")
    why = (f"{_defect_words(d)} is blamed on change {one_line(d['change_id'], 80)} "
           f"({d.get('cause_kind')}, confidence {number(confidence, 2)})")
    severe = d.get("severity") in policy.block_severities
    is_open = d.get("status") in policy.open_statuses
    if d.get("status") == "rejected":  # a person said it is no defect
        return
    if confidence is not None and confidence < policy.min_cause_confidence:
        warn.append(f"{why}; below the blame confidence bar of {policy.min_cause_confidence}")
    elif severe and is_open:
        block.append(why)
    elif severe:
        target = {"block": block, "warn": warn}.get(policy.resolved_blamed_decision)
        if target is not None:
            target.append(f"{why}; resolved at {iso(d.get('last_seen'))}, the version is known to cause it")
    elif d.get("severity") in policy.warn_severities or is_open:
        warn.append(why)


def _test_name(t: dict[str, Any]) -> str:
    classname, name = t.get("classname") or "", t.get("name") or ""
    # some dialects (jest-junit) repeat the test name in the class name
    if not classname or name.startswith(classname):
        text = name
    elif classname.endswith(name):
        text = classname
    else:
        text = f"{classname}.{name}"
    return one_line(text or t.get("suite"), 160)


def _judge_ci(tests: list[dict[str, Any]], policy: GatePolicy, block: list[str], warn: list[str],
              notes: list[str]) -> None:
    if not tests:
        (warn if policy.warn_without_ci else notes).append("no CI test results for this version")
        return
    failing = [t for t in tests if t["last_status"] in ("failed", "error")]
    flaky = [t for t in tests if t["last_status"] == "passed" and t["failures"] > 0]
    if failing:
        names = ", ".join(_test_name(t) for t in failing[:5]) + (" …" if len(failing) > 5 else "")
        (block if policy.block_on_failing_ci else warn).append(
            f"{len(failing)} CI test(s) fail in the latest run of this version: {names}")
    if flaky and policy.warn_on_flaky_ci:
        names = ", ".join(_test_name(t) for t in flaky[:5]) + (" …" if len(flaky) > 5 else "")
        warn.append(f"{len(flaky)} CI test(s) failed and then passed on a re-run (flaky): {names}")
    if not failing:
        notes.append(f"CI green: {len(tests)} test(s) pass in the latest run")


def _judge_shift(shift: dict[str, Any] | None, version: dict[str, Any], blamed_rows: list[dict[str, Any]],
                 service_defects: pl.DataFrame, root_causes: pl.DataFrame, policy: GatePolicy, warn: list[str],
                 notes: list[str]) -> None:
    if shift is None or not shift.get("comparable"):
        notes.append("too little traffic around the deployment to compare error rate and latency")
        return
    moved = []
    if shift["error_shift"]:
        moved.append(f"error rate rose from {_pct(shift['error_rate_pre'])} to {_pct(shift['error_rate_post'])}")
    if shift["latency_shift"]:
        moved.append(f"p95 latency rose from {number(shift['p95_ms_pre'], 1)} ms to "
                     f"{number(shift['p95_ms_post'], 1)} ms")
    summary = (f"error rate {_pct(shift['error_rate_pre'])} -> {_pct(shift['error_rate_post'])}, p95 "
               f"{number(shift['p95_ms_pre'], 1)} -> {number(shift['p95_ms_post'], 1)} ms after the deployment")
    if not moved:
        notes.append(f"no post-deploy shift ({summary})")
        return
    what = "; ".join(moved) + " after the deployment"
    if blamed_rows:
        notes.append(f"{what}, accounted for by the blamed defect(s)")
        return
    start, end = version["deployed_at"], shift.get("post_end") or version["deployed_at"]
    overlapping = service_defects.filter(
        (pl.col("service") == version["service"]) & (pl.col("first_seen") <= end)
        & (pl.col("last_seen").fill_null(pl.col("first_seen")) >= start)
    )
    if overlapping.height:
        ids = overlapping["defect_id"].to_list()
        causes = top_causes(root_causes.filter(pl.col("defect_id").is_in(ids)))
        elsewhere = [f"{one_line(c['defect_id'], 60)} (cause: {c.get('cause_kind')} in "
                     f"{one_line(c.get('service'), 60)})" for c in causes.to_dicts()]
        if elsewhere:
            notes.append(f"{what}, explained by defect(s) caused elsewhere: {', '.join(elsewhere)}")
            return
    warn.append(f"unexplained post-deploy shift: {what} (no defect accounts for it)")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.2f}%"


def _evidence(version: dict[str, Any], blamed: list[dict[str, Any]], tests: list[dict[str, Any]],
              shift: dict[str, Any] | None, policy: GatePolicy) -> dict[str, Any]:
    failing = [t for t in tests if t["last_status"] in ("failed", "error")]
    flaky = [t for t in tests if t["last_status"] == "passed" and t["failures"] > 0]
    return {
        "deployments": [{k: (iso(v) if isinstance(v, datetime) else v) for k, v in e.items()}
                        for e in version["events"]],
        "blamed_defects": [
            {"defect_id": d["defect_id"], "severity": d.get("severity"), "status": d.get("status"),
             "defect_type": d.get("defect_type"), "change_id": d["change_id"], "cause_kind": d.get("cause_kind"),
             "cause_confidence": number(d.get("cause_confidence"), 3)}
            for d in blamed
        ],
        "ci": {
            "tests": len(tests),
            "runs": max((t["runs"] for t in tests), default=0),
            "failing": [{"test": _test_name(t), "message": t.get("message")} for t in failing[:20]],
            "flaky": [{"test": _test_name(t), "failures": t["failures"], "runs": t["runs"]} for t in flaky[:20]],
        },
        "post_deploy": None if shift is None else {
            k: (number(v, 6) if isinstance(v, float) else iso(v) if isinstance(v, datetime) else v)
            for k, v in shift.items() if k not in ("service", "version")
        },
        "policy": asdict(policy),
    }
