"""Per-service feature windows: each feature on hand-made frames, then a simulated fault seen in the windows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from qa_assets.lib.ingest import tables
from qa_assets.lib.windows import (
    FEATURE_SET_ID,
    WINDOWS,
    WindowsInputError,
    feature_set_id,
    is_server_duration_histogram,
    metrics_time_range,
    resource_metric_family,
    service_windows,
    window_problems,
)

H = datetime(2026, 11, 2, 0)


def at(minute: float, hour: datetime = H) -> datetime:
    return hour + timedelta(minutes=minute)


def spans_frame(rows: list[dict]) -> pl.DataFrame:
    defaults = {"kind": "SERVER", "status_code": "UNSET", "http_status_code": 200, "duration_ms": 10.0}
    return tables.conform(pl.DataFrame([{**defaults, **r} for r in rows]), tables.SPANS)


def metrics_frame(rows: list[dict]) -> pl.DataFrame:
    return tables.conform(pl.DataFrame(rows, infer_schema_length=None), tables.METRICS)


def windows(**inputs) -> pl.DataFrame:
    args = {"hour_start": H, "spans": None, "logs_with_templates": None, "metrics": None, "deployments": None,
            "test_cases": None}
    return service_windows(**{**args, **inputs})


def row(frame: pl.DataFrame, service: str, minute: int) -> dict:
    found = frame.filter((pl.col("service") == service) & (pl.col("window_start") == at(minute)))
    assert found.height == 1, f"expected one row for {service} at minute {minute}, got {found.height}"
    return found.row(0, named=True)


# ------------------------------------------------------------------------------------------ contract


def test_rows_have_exactly_the_contract_columns_and_a_versioned_feature_set_id():
    out = windows(spans=spans_frame([{"service": "api", "start_time": at(3)}]))
    assert out.schema == pl.Schema(WINDOWS)
    assert out["feature_set_id"].unique().to_list() == [FEATURE_SET_ID]
    assert FEATURE_SET_ID.startswith("service_windows/v1-")
    assert feature_set_id(5) != FEATURE_SET_ID  # the window length is part of the feature definition
    five = windows(spans=spans_frame([{"service": "api", "start_time": at(3)}]), window_minutes=5)
    assert five["feature_set_id"].unique().to_list() == [feature_set_id(5)]
    assert five["window_minutes"].unique().to_list() == [5]


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(WindowsInputError, match="start_time"):
        windows(spans=pl.DataFrame({"service": ["api"], "kind": ["SERVER"]}))
    with pytest.raises(WindowsInputError, match="divisor of 60"):
        windows(window_minutes=7)
    with pytest.raises(WindowsInputError, match="start of a UTC hour"):
        windows(hour_start=at(5))


# -------------------------------------------------------------------------------------- spans


def test_server_span_percentiles_match_numpy_and_errors_count_status_and_5xx():
    durations = [3.0, 7.5, 12.0, 40.0, 41.0, 55.5, 80.0, 120.0, 300.0, 999.0]
    rows = [{"service": "api", "start_time": at(7, H) + timedelta(seconds=i), "duration_ms": d}
            for i, d in enumerate(durations)]
    rows[1]["status_code"] = "ERROR"
    rows[2]["http_status_code"] = 503
    rows[3]["http_status_code"] = 404  # a client's mistake is not the server's error
    rows.append({"service": "api", "kind": "INTERNAL", "start_time": at(7), "duration_ms": 5000.0})  # not a request
    out = windows(spans=spans_frame(rows))
    r = row(out, "api", 7)
    assert (r["requests"], r["errors"]) == (10, 2)
    assert r["error_rate"] == pytest.approx(0.2)
    for column, q in (("latency_p50_ms", 50), ("latency_p95_ms", 95), ("latency_p99_ms", 99)):
        assert r[column] == pytest.approx(np.percentile(durations, q))
    assert r["latency_source"] == "spans"


def test_every_window_is_a_row_and_quiet_windows_are_zero_with_null_latency():
    spans = spans_frame([{"service": "api", "start_time": at(0)}, {"service": "api", "start_time": at(5.5)},
                         {"service": "api", "start_time": H - timedelta(seconds=1)},  # previous hour: ignored
                         {"service": "api", "start_time": at(60)}])  # next hour: ignored
    out = windows(spans=spans, services=["billing"])
    assert out.height == 2 * 60
    assert out.filter(pl.col("service") == "api")["window_start"].to_list() == [at(m) for m in range(60)]
    quiet = row(out, "api", 1)
    assert (quiet["requests"], quiet["errors"], quiet["error_rate"], quiet["log_count"]) == (0, 0, 0.0, 0)
    assert quiet["latency_p50_ms"] is None and quiet["latency_source"] is None
    assert out.filter(pl.col("service") == "api")["requests"].sum() == 2
    listed = out.filter(pl.col("service") == "billing")  # named by the catalog, silent all hour
    assert listed.height == 60 and listed["requests"].sum() == 0
    five = windows(spans=spans, window_minutes=5)
    assert five["window_start"].to_list() == [at(m) for m in range(0, 60, 5)]
    assert row(five, "api", 5)["requests"] == 1


def test_blind_spot_callee_gets_its_callers_client_spans_without_double_counting():
    spans = spans_frame([
        # web calls an uninstrumented ledger and an instrumented stock service
        {"service": "web", "kind": "CLIENT", "peer_service": "ledger", "start_time": at(2), "duration_ms": 20.0},
        {"service": "web", "kind": "CLIENT", "peer_service": "ledger", "start_time": at(2), "duration_ms": 40.0,
         "status_code": "ERROR"},
        {"service": "web", "kind": "CLIENT", "peer_service": "stock", "start_time": at(2)},
        {"service": "stock", "kind": "SERVER", "start_time": at(2)},
        {"service": "web", "kind": "SERVER", "start_time": at(2)},
    ])
    out = windows(spans=spans)
    ledger = row(out, "ledger", 2)
    assert (ledger["requests"], ledger["errors"]) == (2, 1)
    assert ledger["latency_p50_ms"] == pytest.approx(30.0) and ledger["latency_source"] == "spans"
    assert row(out, "stock", 2)["requests"] == 1  # own server span only: the client view is not added
    web = row(out, "web", 2)
    assert (web["requests"], web["client_calls"], web["client_errors"]) == (1, 3, 1)


# ----------------------------------------------------------------------------------- histograms


def histogram_point(minute: float, counts: list[int], *, bounds=(10.0, 50.0, 100.0), unit="ms",
                    temporality="DELTA", start=None, pod="p1", status="200", name="http.server.request.duration"):
    return {"service": "api", "metric_name": name, "metric_type": "histogram", "unit": unit,
            "temporality": temporality, "timestamp": at(minute),
            "start_timestamp": start if start is not None else at(minute - 1),
            "count": sum(counts), "bucket_bounds": list(bounds), "bucket_counts": counts,
            "attributes": json.dumps({"http.route": "/pay", "http.response.status_code": status}),
            "resource_attributes": json.dumps({"k8s.pod.name": pod})}


def test_histogram_quantiles_interpolate_inside_buckets_when_there_are_no_spans():
    # buckets (0,10] (10,50] (50,100] (100,inf): 2, 6, 2, 0 observations; a point at 00:04 closes window 00:03
    out = windows(metrics=metrics_frame([histogram_point(4, [2, 6, 2, 0])]))
    r = row(out, "api", 3)
    assert r["latency_source"] == "metrics" and r["requests"] == 10
    assert r["latency_p50_ms"] == pytest.approx(10 + 40 * (5 - 2) / 6)  # rank 5 in the 2nd bucket = 30
    assert r["latency_p95_ms"] == pytest.approx(50 + 50 * (9.5 - 8) / 2)  # 87.5
    assert r["latency_p99_ms"] == pytest.approx(50 + 50 * (9.9 - 8) / 2)  # 97.5
    # Everything in the overflow bucket: the highest finite bound is all that is known.
    overflow = windows(metrics=metrics_frame([histogram_point(4, [0, 0, 0, 4])]))
    assert row(overflow, "api", 3)["latency_p50_ms"] == pytest.approx(100.0)


def test_cumulative_histograms_are_differenced_per_series_with_resets_and_seconds():
    long_ago = H - timedelta(days=2)
    restart = at(2, H) + timedelta(seconds=30)
    points = [
        # pod p1, seconds: cumulative since long ago; the point at 00:00 is only the base
        histogram_point(0, [5, 5, 0, 0], bounds=(0.01, 0.05, 0.1), unit="s", temporality="CUMULATIVE", start=long_ago),
        histogram_point(1, [5, 9, 0, 0], bounds=(0.01, 0.05, 0.1), unit="s", temporality="CUMULATIVE", start=long_ago),
        histogram_point(2, [5, 9, 0, 2], bounds=(0.01, 0.05, 0.1), unit="s", temporality="CUMULATIVE", start=long_ago),
        # p1 restarted: a new start time, counts from zero again
        histogram_point(3, [0, 4, 0, 0], bounds=(0.01, 0.05, 0.1), unit="s", temporality="CUMULATIVE", start=restart),
        # pod p2, 5xx answers, started inside the data: its first point counts in full
        histogram_point(1, [0, 0, 3, 0], bounds=(0.01, 0.05, 0.1), unit="s", temporality="CUMULATIVE",
                        start=at(0.5), pod="p2", status="500"),
    ]
    out = windows(metrics=metrics_frame(points))
    w0, w1, w2 = row(out, "api", 0), row(out, "api", 1), row(out, "api", 2)
    assert (w0["requests"], w0["errors"]) == (7, 3)  # p1: 4 in (10,50] ms; p2: 3 in (50,100] ms
    assert w0["latency_p50_ms"] == pytest.approx(10 + 40 * 3.5 / 4)  # rank 3.5 of 7 falls in (10,50] ms: 45
    assert (w1["requests"], w1["errors"]) == (2, 0) and w1["latency_p50_ms"] == pytest.approx(100.0)
    assert w2["requests"] == 4 and w2["latency_p50_ms"] == pytest.approx(10 + 40 * 2 / 4)
    assert row(out, "api", 4)["requests"] == 0  # no point closes window 00:04
    # Without the base point the first increment of a long-running series is unknown, not a burst.
    no_base = windows(metrics=metrics_frame(points[1:3]))
    assert row(no_base, "api", 0)["requests"] == 0 and row(no_base, "api", 1)["requests"] == 2


def test_server_duration_histograms_are_told_from_other_histograms():
    for name in ("http.server.request.duration", "http.server.duration", "rpc.server.duration",
                 "http_server_requests_seconds", "messaging.process.duration"):
        assert is_server_duration_histogram(name), name
    for name in ("http.client.request.duration", "db.client.operation.duration", "http.server.request.body.size",
                 "http.server.active_requests"):
        assert not is_server_duration_histogram(name), name


# ------------------------------------------------------------------------------------- resources


@pytest.mark.parametrize(("name", "family"), [
    ("container.cpu.usage", "cpu"), ("process.cpu.utilization", "cpu"), ("system.cpu.utilization", "cpu"),
    ("process.runtime.jvm.cpu.utilization", "cpu"), ("process_cpu_seconds_total", "cpu"),
    ("container.memory.working_set", "memory"), ("process.memory.rss", "memory"), ("jvm.memory.used", "memory"),
    ("process.runtime.go.mem.heap_alloc", "memory"), ("container_memory_usage_bytes", "memory"),
    ("k8s.container.restarts", "restarts"), ("app_restarts_total", "restarts"),
    ("k8s.container.memory_limit", None), ("k8s.container.cpu_limit", None), ("system.memory.available", None),
    ("jvm.memory.committed", None), ("http.server.request.duration", None),
])
def test_resource_metrics_are_found_by_their_common_names(name, family):
    found = resource_metric_family(name)
    assert (found[0] if found else None) == family


def test_cpu_counters_become_utilization_and_levels_add_up_over_instances():
    def point(minute, name, value, pod, **extra):
        return {"service": "api", "metric_name": name, "timestamp": at(minute), "value": value,
                "resource_attributes": json.dumps({"k8s.pod.name": pod}), **extra}
    counter = {"metric_type": "sum", "is_monotonic": True, "temporality": "CUMULATIVE", "unit": "s",
               "start_timestamp": H - timedelta(days=1)}
    points = [
        point(0, "process.cpu.time", 100.0, "p1", **counter),
        point(1, "process.cpu.time", 130.0, "p1", **counter),  # 30 cpu-s in 60 s: half a core
        point(2, "process.cpu.time", 190.0, "p1", **counter),  # one core
        point(1, "process.memory.usage", 100.0, "p1", metric_type="gauge", unit="MiBy"),
        point(1, "process.memory.usage", 300.0, "p2", metric_type="gauge", unit="MiBy"),
        point(1, "system.memory.usage", 9e9, "p1", metric_type="sum", is_monotonic=False, unit="By"),  # ranked lower
    ]
    out = windows(metrics=metrics_frame(points))
    assert row(out, "api", 0)["cpu_utilization"] == pytest.approx(0.5)
    assert row(out, "api", 1)["cpu_utilization"] == pytest.approx(1.0)
    assert row(out, "api", 0)["memory_bytes"] == pytest.approx(400 * 1024**2)  # both instances, in bytes
    assert row(out, "api", 5)["cpu_utilization"] is None  # no point: unknown, not zero
    assert row(out, "api", 5)["restarts"] is None  # no restart metric at all


def test_restarts_count_increments_per_container_even_when_the_process_identity_changes():
    def point(minute, value, instance, pod="api-7f-x1"):
        return {"service": "api", "metric_name": "k8s.container.restarts", "metric_type": "gauge",
                "timestamp": at(minute), "value": value, "attributes": json.dumps({"k8s.container.name": "api"}),
                "resource_attributes": json.dumps({"k8s.pod.name": pod, "service.instance.id": instance})}
    points = [point(0, 2, "a"), point(1, 2, "a"), point(2, 3, "b"), point(3, 3, "b"), point(4, 5, "c"),
              point(0, 7, "z", pod="api-7f-y2"), point(4, 7, "z", pod="api-7f-y2"),
              point(1, 4, "q", pod="api-7f-y3"),  # scraped a little late: its 4 earlier restarts are history
              point(20, 1, "n", pod="api-8c-n1")]  # a pod created mid-hour that restarted once already
    out = windows(metrics=metrics_frame(points))
    got = out.filter(pl.col("service") == "api").select("window_start", "restarts")
    assert dict(got.filter(pl.col("restarts") > 0).iter_rows()) == {at(1): 1, at(3): 2, at(19): 1}
    assert got["restarts"].null_count() == 0  # the service reports restarts: quiet windows are 0


# ------------------------------------------------------------------------------------ logs, tests


def test_logs_count_by_level_with_new_and_error_templates():
    logs = pl.DataFrame({
        "service": ["api"] * 6 + ["db"],
        "timestamp": [at(4)] * 6 + [at(9)],
        "level": ["DEBUG", "INFO", "WARN", "ERROR", "FATAL", "ERROR", "INFO"],
        "template_id": ["t1", "t1", "t2", "t3", "t4", "t3", "t9"],
        "is_new_template": [False, False, False, True, False, True, False],
    })
    out = windows(logs_with_templates=logs)
    r = row(out, "api", 4)
    assert (r["log_count"], r["log_debug"], r["log_info"], r["log_warn"], r["log_error"]) == (6, 1, 1, 1, 3)
    assert (r["new_template_count"], r["error_template_count"]) == (1, 2)
    # Templates named new for the hour count in the first window they appear in, not later.
    again = pl.concat([logs, logs.head(1).with_columns(pl.lit(at(30)).alias("timestamp"))]).drop("is_new_template")
    marked = windows(logs_with_templates=again, new_template_ids={"t1"})
    assert row(marked, "api", 4)["new_template_count"] == 1 and row(marked, "api", 30)["new_template_count"] == 0


def test_failed_and_erroring_test_cases_count_in_their_window():
    cases = pl.DataFrame({"service": ["api"] * 4, "timestamp": [at(12), at(12.9), at(12), at(13)],
                          "status": ["failed", "error", "passed", "skipped"]})
    out = windows(test_cases=cases)
    assert row(out, "api", 12)["test_failures"] == 2
    assert out["test_failures"].sum() == 2


# ---------------------------------------------------------------------------------------- changes


def test_change_timing_kind_and_version_as_of_each_window():
    def change(event_id, when, kind, version, event_type="deployed"):
        return {"event_id": event_id, "service": "api", "timestamp": when, "change_kind": kind,
                "version": version, "event_type": event_type}
    history = pl.DataFrame([change("c0", H - timedelta(minutes=30), "code", "1.0.0")])
    hour = pl.DataFrame([change("c1", at(10.5), "config", "cfg-9f2"), change("c2", at(20), "code", "1.1.0")])
    out = windows(deployments=hour, history_deployments=history)
    first = row(out, "api", 0)
    assert (first["last_change_id"], first["last_change_kind"], first["current_version"]) == ("c0", "code", "1.0.0")
    assert first["minutes_since_change"] == pytest.approx(31.0)  # to the end of the window
    config = row(out, "api", 10)  # the change inside the window counts for it
    assert (config["last_change_id"], config["last_change_kind"]) == ("c1", "config")
    assert config["minutes_since_change"] == pytest.approx(0.5)
    assert config["current_version"] == "1.0.0"  # a config change keeps the code version
    assert row(out, "api", 19)["last_change_id"] == "c1"
    deploy = row(out, "api", 20)  # a change exactly at a window's start belongs to that window
    assert (deploy["last_change_id"], deploy["current_version"]) == ("c2", "1.1.0")
    assert deploy["minutes_since_change"] == pytest.approx(1.0)
    # Without the history the first windows know no change and fall back to what the telemetry reports.
    spans = spans_frame([{"service": "api", "start_time": at(1), "service_version": "0.9.9"}])
    alone = windows(deployments=hour, spans=spans)
    assert row(alone, "api", 0)["last_change_id"] is None
    assert row(alone, "api", 0)["current_version"] == "0.9.9"
    assert row(alone, "api", 25)["current_version"] == "1.1.0"


# ---------------------------------------------------------------------------------- purity, late data


def test_pure_and_late_data_updates_only_its_window():
    base = [{"service": "api", "start_time": at(m), "duration_ms": 10.0 + m} for m in range(0, 60, 3)]
    first = windows(spans=spans_frame(base))
    assert first.equals(windows(spans=spans_frame(base)))
    late = windows(spans=spans_frame([*base, {"service": "api", "start_time": at(31), "http_status_code": 500}]))
    changed = first.join(late, on=["service", "window_start"], suffix="_late").filter(
        pl.col("requests") != pl.col("requests_late"))
    assert changed["window_start"].to_list() == [at(31)]
    assert row(late, "api", 31)["errors"] == 1


def test_metrics_time_range_covers_the_lookback_and_the_closing_point():
    lo, hi = metrics_time_range(H)
    assert lo < H and hi == H + timedelta(hours=1)


# --------------------------------------------------------------------------------- simulated fault


def _landing_frames(landing: Path) -> dict[str, pl.DataFrame]:
    """Spans, metrics, deployments and test cases of a landing dir through the project's parsers."""
    from qa_assets.lib.ingest.cdevents import parse_cdevents
    from qa_assets.lib.ingest.junit import parse_junit
    from qa_assets.lib.ingest.otlp import parse_connection, parse_otlp_lines
    from qa_assets.lib.ingest.reader import ReadState, iter_line_chunks

    con = parse_connection()
    parts: dict[str, list[pl.DataFrame]] = {"spans": [], "metrics": [], "deployments": [], "test_cases": []}
    for path in sorted((landing / "otlp").iterdir()):
        for chunk in iter_line_chunks(path, ReadState(), final=True):
            parsed = parse_otlp_lines(con, chunk.lines, str(path))
            parts["spans"].append(parsed.spans)
            parts["metrics"].append(parsed.metrics)
    for path in sorted((landing / "deployments").iterdir()):
        parts["deployments"].append(parse_cdevents(path.read_bytes(), str(path)).accepted)
    for path in sorted((landing / "tests").rglob("*.xml")):
        parts["test_cases"].append(parse_junit(path.read_bytes(), str(path)).accepted)
    schemas = {"spans": tables.SPANS, "metrics": tables.METRICS, "deployments": tables.DEPLOYMENTS,
               "test_cases": tables.TEST_CASES}
    return {name: pl.concat([tables.conform(f, schemas[name]) for f in frames]) for name, frames in parts.items()}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[dict[str, pl.DataFrame], dict]:
    from qa_assets.simulate import FaultSpec, simulate

    root = tmp_path_factory.mktemp("windows_sim")
    faults = [FaultSpec("bad_deploy", duration_min=12), FaultSpec("latency_regression", duration_min=12)]
    summary = simulate(root / "landing", topology="shop", hours=1, scale="tiny", seed=7, faults=faults)
    return _landing_frames(root / "landing"), json.loads(summary.ground_truth_path.read_text())


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


@pytest.mark.slow
def test_a_simulated_fault_shows_in_the_faulty_services_windows(simulated):
    frames, truth = simulated
    checks = [(fault, symptom) for fault in truth["faults"] for symptom in fault["symptoms"]
              if symptom["service"] == fault["root_service"] and symptom.get("baseline") is not None
              and symptom["signal"] in ("server_error_rate", "latency")]
    assert {s["signal"] for _, s in checks} == {"server_error_rate", "latency"}, "both faults should show"
    hour = min(frames["spans"]["start_time"]).replace(minute=0, second=0, microsecond=0)
    lo, hi = metrics_time_range(hour)
    out = service_windows(
        hour_start=hour, spans=frames["spans"], logs_with_templates=None,
        metrics=frames["metrics"].filter(pl.col("timestamp").is_between(lo, hi)),
        deployments=frames["deployments"], test_cases=frames["test_cases"])
    assert out.height == out.select("service").n_unique() * 60
    for fault, symptom in checks:
        start, end = _utc(fault["start"]), _utc(fault["end"])
        service = out.filter(pl.col("service") == fault["root_service"])
        during = service.filter(pl.col("window_start").is_between(start, end, closed="left"))
        before = service.filter(pl.col("window_start") < start)
        assert during.height and before.height, "the fault should start inside the simulated hour"
        if symptom["signal"] == "server_error_rate":
            rate_during = during["errors"].sum() / during["requests"].sum()
            rate_before = before["errors"].sum() / max(before["requests"].sum(), 1)
            assert rate_during > rate_before + 0.1
            assert rate_during == pytest.approx(symptom["during"], abs=0.01)  # the simulator's own count
        else:
            assert during["latency_p50_ms"].median() > 1.3 * before["latency_p50_ms"].median()
        if fault.get("change_id"):  # the triggering deployment is the last change in the fault's first window
            first = during.sort("window_start").row(0, named=True)
            assert first["last_change_id"] == fault["change_id"]


def test_window_problems_name_services_without_windows_and_hours_with_gaps():
    spans = spans_frame([{"service": "api", "start_time": at(0)}])
    out = windows(spans=spans, services=["billing"])
    assert window_problems(out, ["api", "billing"]) == []
    gappy = out.filter(~((pl.col("service") == "billing") & (pl.col("window_start") == at(7))))
    assert window_problems(gappy, ["api", "cart"]) == [
        "cart has spans but no windows", "billing has 59 rows over 59 windows, not 60"]
    assert window_problems(windows(spans=spans, window_minutes=5), ["api"], window_minutes=5) == []
