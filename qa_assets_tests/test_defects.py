"""The defects stage's domain logic: anomaly detectors, grouping into defects, type and severity."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from qa_assets.lib.defects import anomalies, classify, grouping

T0 = datetime(2026, 3, 2, 0, 0)
WINDOWS_COLUMNS = {
    "hour": pl.Datetime("us"),
    "service": pl.String,
    "window_start": pl.Datetime("us"),
    "window_minutes": pl.Int32,
    "feature_set_id": pl.String,
    "requests": pl.Int64,
    "errors": pl.Int64,
    "error_rate": pl.Float64,
    "latency_p50_ms": pl.Float64,
    "latency_p95_ms": pl.Float64,
    "latency_source": pl.String,
    "client_calls": pl.Int64,
    "client_errors": pl.Int64,
    "log_count": pl.Int64,
    "log_error": pl.Int64,
    "new_template_count": pl.Int64,
    "cpu_utilization": pl.Float64,
    "memory_bytes": pl.Float64,
    "restarts": pl.Int64,
}


def make_windows(
    service: str,
    start: datetime,
    minutes: int,
    *,
    seed: int,
    requests=50.0,
    error_rate=0.01,
    p95_ms=100.0,
    memory=2e8,
) -> pl.DataFrame:
    """Noisy one-minute windows; `requests`, `error_rate` and `p95_ms` may be per-minute arrays."""
    rng = np.random.default_rng(seed)
    level = np.broadcast_to(np.asarray(requests, dtype=float), (minutes,))
    n = rng.poisson(level)
    rate = np.broadcast_to(np.asarray(error_rate, dtype=float), (minutes,))
    errors = rng.binomial(n, rate)
    p95 = np.broadcast_to(np.asarray(p95_ms, dtype=float), (minutes,)) * rng.lognormal(0, 0.05, minutes)
    starts = [start + timedelta(minutes=i) for i in range(minutes)]
    calls = rng.poisson(level * 2)
    return pl.DataFrame(
        {
            "hour": [s.replace(minute=0) for s in starts],
            "service": service,
            "window_start": starts,
            "window_minutes": 1,
            "feature_set_id": "test-features",
            "requests": n,
            "errors": errors,
            "error_rate": np.where(n > 0, errors / np.maximum(n, 1), 0.0),
            "latency_p50_ms": p95 / 3,
            "latency_p95_ms": p95,
            "latency_source": "spans",
            "client_calls": calls,
            "client_errors": rng.binomial(calls, 0.002),
            "log_count": rng.poisson(level * 3),
            "log_error": rng.binomial(rng.poisson(level * 3), 0.005),
            "new_template_count": 0,
            "cpu_utilization": 0.2 * rng.lognormal(0, 0.05, minutes),
            "memory_bytes": memory * rng.lognormal(0, 0.01, minutes),
            "restarts": 0,
        },
        schema_overrides=WINDOWS_COLUMNS,
    )


def history(services=("checkout", "payment"), hours=3, seed=0) -> pl.DataFrame:
    return pl.concat([make_windows(s, T0, 60 * hours, seed=seed + i) for i, s in enumerate(services)])


def flagged(frame: pl.DataFrame, detector: str | None = None) -> pl.DataFrame:
    out = frame.filter(pl.col("is_anomaly"))
    return out.filter(pl.col("detector") == detector) if detector else out


# ------------------------------------------------------------------------------------------ detectors


@pytest.fixture(scope="module")
def detector() -> anomalies.WindowDetector:
    return anomalies.fit_detector(history(), "test-features")


def test_error_spike_over_a_flat_baseline_is_found_and_nothing_else(detector):
    start = T0 + timedelta(hours=3)
    rate = np.full(60, 0.01)
    rate[20:30] = 0.3
    current = pl.concat(
        [
            make_windows("checkout", start, 60, seed=11, error_rate=rate),
            make_windows("payment", start, 60, seed=12),
        ]
    )
    scored = anomalies.detect(current, detector, model_version="7")
    assert scored.columns == list(anomalies.ANOMALIES)
    errors = flagged(scored, "baseline").filter(pl.col("signal") == "error_rate")
    minutes = sorted({(w - start).seconds // 60 for w in errors["window_start"].to_list()})
    assert set(range(20, 30)) <= set(minutes)  # every spike window
    assert set(minutes) <= set(range(20, 30))  # and only those
    assert set(errors["service"].to_list()) == {"checkout"}
    assert (errors["value"] > 0.15).all() and (errors["expected"] < 0.05).all()
    assert flagged(scored).filter(pl.col("service") == "payment").height == 0
    assert set(scored["model_version"].to_list()) == {"7"} and (scored["score"] >= 0).all()


def test_noise_is_not_flagged(detector):
    current = pl.concat(
        [
            make_windows("checkout", T0 + timedelta(hours=3), 60, seed=21),
            make_windows("payment", T0 + timedelta(hours=3), 60, seed=22),
        ]
    )
    scored = anomalies.detect(current, detector, model_version="1")
    assert flagged(scored).filter(pl.col("detector") != "isolation_forest").height == 0
    forest = scored.filter(pl.col("detector") == "isolation_forest")
    assert forest.height == 120  # every window is scored by the forest
    assert forest["is_anomaly"].sum() <= 2


def test_traffic_noise_of_a_quiet_service_is_not_a_surge_but_a_real_surge_is():
    quiet = anomalies.fit_detector(make_windows("cron", T0, 180, seed=5, requests=0.5), "test-features")
    level = np.full(60, 0.5)
    level[30:40] = 30.0  # a surge: sixty times the usual traffic for ten minutes
    current = make_windows("cron", T0 + timedelta(hours=3), 60, seed=6, requests=level)
    traffic = flagged(anomalies.detect(current, quiet, model_version="1"), "baseline").filter(
        pl.col("signal") == "requests")
    minutes = {(w - T0 - timedelta(hours=3)).seconds // 60 for w in traffic["window_start"].to_list()}
    # 0, 1 or 2 requests a minute around a mean of 0.5 move x2 and /2 all the time; only the surge is noted
    assert minutes and minutes <= set(range(30, 40))


def test_seasonal_baseline_expects_the_daily_peak():
    # two days: 20 requests a minute, 200 between 12:00 and 18:00
    minutes = 2 * 24 * 60
    hours_of_day = np.array([(T0 + timedelta(minutes=i)).hour for i in range(minutes)])
    level = np.where((hours_of_day >= 12) & (hours_of_day < 18), 200.0, 20.0)
    past = make_windows("catalog", T0, minutes, seed=3, requests=level)
    seasonal = anomalies.fit_detector(past, "f")
    peak = T0 + timedelta(days=2, hours=13)
    rate = np.full(60, 0.01)
    rate[30:40] = 0.25
    current = make_windows("catalog", peak, 60, seed=4, requests=200.0, error_rate=rate)
    scored = anomalies.detect(current, seasonal, model_version="1")
    assert flagged(scored).filter(pl.col("signal") == "requests").height == 0  # the peak is the usual peak
    spike = flagged(scored, "baseline").filter(pl.col("signal") == "error_rate")
    assert spike.height >= 8 and spike["window_start"].min() >= peak + timedelta(minutes=29)
    # without two days of history the same hour's traffic is far above the service's median
    flat = anomalies.fit_detector(past.filter(pl.col("window_start") < T0 + timedelta(days=1)), "f")
    unseasoned = anomalies.detect(current, flat, model_version="1")
    assert flagged(unseasoned).filter(pl.col("signal") == "requests").height > 30


def test_step_right_after_a_deploy_carries_the_change(detector):
    start = T0 + timedelta(hours=3)
    p95 = np.full(60, 100.0)
    p95[30:] = 220.0
    current = make_windows("checkout", start, 60, seed=31, p95_ms=p95)
    deploys = pl.DataFrame(
        {
            "service": ["checkout", "payment"],
            "timestamp": [start + timedelta(minutes=29, seconds=40), start + timedelta(minutes=5)],
            "event_id": ["chg-checkout-42", "chg-payment-1"],
            "change_kind": ["code", "config"],
        }
    )
    scored = anomalies.detect(current, detector, deployments=deploys, model_version="1")
    latency = flagged(scored, "baseline").filter(pl.col("signal") == "latency_p95_ms")
    assert latency.height >= 25
    assert latency["window_start"].min() >= start + timedelta(minutes=29)
    soon = latency.filter(pl.col("window_start") < start + timedelta(minutes=59))
    assert set(soon["after_change_id"].to_list()) == {"chg-checkout-42"}  # the service's own change only


def test_new_error_templates_and_failing_tests(detector):
    start = T0 + timedelta(hours=3)
    current = make_windows("checkout", start, 60, seed=41)
    events = pl.DataFrame(
        {
            "service": "checkout",
            "timestamp": [start + timedelta(minutes=10, seconds=i) for i in range(5)]
            + [start + timedelta(minutes=12)],
            "level": "ERROR",
            "template_id": ["t-new"] * 5 + ["t-once"],
            "template": ["division by zero"] * 5 + ["x <*>"],
            "is_new_template": [True, True, False, False, False, True],
            "exception_type": ["ZeroDivisionError"] * 5 + [None],
        }
    )
    tests = pl.DataFrame(
        {
            "service": "payment",
            "timestamp": [start + timedelta(minutes=3), start + timedelta(minutes=9)],
            "status": ["failed", "passed"],
            "name": ["charges twice"] * 2,
            "classname": ["PaymentTest"] * 2,
            "version": ["1.2.0"] * 2,
        }
    )
    scored = anomalies.detect(current, detector, log_events=events, failed_tests=tests, model_version="1")
    novel = flagged(scored, "new_error_template")
    assert novel["template_id"].to_list() == ["t-new"]  # t-once does not recur
    assert json.loads(novel["details"][0])["exception_type"] == "ZeroDivisionError"
    failing = flagged(scored, "test_failure")
    assert failing["service"].to_list() == ["payment"] and json.loads(failing["details"][0])["flaky"] is True
    # the first hour of a history has no past: nothing in it is new
    fresh = anomalies.fit_detector(current, "f")
    assert (
        flagged(
            anomalies.detect(current, fresh, log_events=events, model_version="1"), "new_error_template"
        ).height
        == 0
    )


def test_detector_pickles_and_reports_drift(detector):
    clone = pickle.loads(pickle.dumps(detector))
    assert clone.feature_columns == list(anomalies.FEATURES)
    assert set(clone.training_summary["features"]) == set(clone.feature_columns)
    assert clone.params["feature_set_id"] == "test-features"
    # drift compares a partition's population (every service) with the training population
    start = T0 + timedelta(hours=3)
    same = anomalies.drift(
        clone,
        pl.concat(
            [make_windows("checkout", start, 60, seed=51), make_windows("payment", start, 60, seed=52)]
        ),
    )
    assert (
        not same["drifted"]
        and same["max"] < same["threshold"]
        and set(same["features"]) == set(clone.feature_columns)
    )
    slower = anomalies.drift(
        clone,
        pl.concat(
            [
                make_windows("checkout", start, 60, seed=53, p95_ms=400.0),
                make_windows("payment", start, 60, seed=54, p95_ms=400.0),
            ]
        ),
    )
    assert slower["drifted"] and slower["max_feature"] in ("z_latency_p95", "z_latency_p50")


def test_detector_names_bad_input():
    with pytest.raises(anomalies.DetectorInputError, match="window_start"):
        anomalies.fit_detector(pl.DataFrame({"service": ["a"]}), "f")
    with pytest.raises(anomalies.DetectorInputError, match="empty"):
        anomalies.fit_detector(pl.DataFrame(schema=WINDOWS_COLUMNS), "f")


# ------------------------------------------------------------------------------------------- grouping


def anomaly_rows(
    service: str,
    start: datetime,
    minutes: int,
    signal="error_rate",
    value=0.3,
    expected=0.01,
    detector="baseline",
    change=None,
) -> pl.DataFrame:
    starts = [start + timedelta(minutes=i) for i in range(minutes)]
    return pl.DataFrame(
        {
            "hour": [s.replace(minute=0) for s in starts],
            "service": service,
            "window_start": starts,
            "detector": detector,
            "signal": signal,
            "value": value,
            "expected": expected,
            "score": 12.0,
            "is_anomaly": True,
            "after_change_id": change,
            "model_name": "m",
            "model_version": "1",
            "feature_set_id": "f",
            "template_id": None,
            "details": "{}",
        },
        schema=anomalies.ANOMALIES,
    )


def error_spans(
    service: str,
    start: datetime,
    minutes: int,
    exception="ZeroDivisionError",
    route="/orders",
    kind="SERVER",
    peer=None,
    status=500,
    per_minute=3,
) -> pl.DataFrame:
    times = [start + timedelta(minutes=i, seconds=10 * j) for i in range(minutes) for j in range(per_minute)]
    return pl.DataFrame(
        {
            "service": service,
            "kind": kind,
            "start_time": times,
            "exception_type": exception,
            "exception_message": "boom",
            "status_message": "boom",
            "http_status_code": status,
            "http_route": route,
            "name": f"POST {route}",
            "peer_service": peer,
        },
        schema_overrides={
            "http_status_code": pl.Int32,
            "start_time": pl.Datetime("us"),
            "peer_service": pl.String,
            "exception_type": pl.String,
        },
    )


EDGES = pl.DataFrame(
    {
        "source": ["service:frontend", "service:checkout"],
        "target": ["service:checkout", "datastore:orders-db"],
        "edge_type": ["calls", "calls"],
        "evidence": ["spans", "spans"],
    }
)


def group(anoms, spans=None, previous=None, hour_end=T0 + timedelta(hours=1), **kw) -> pl.DataFrame:
    return grouping.group_defects(
        anoms,
        log_events=None,
        spans_errors=spans,
        failed_tests=kw.pop("tests", None),
        graph_edges=kw.pop("edges", EDGES),
        previous_defects=previous,
        hour_end=hour_end,
        **kw,
    )


def test_a_defect_continuing_into_the_next_hour_keeps_its_id():
    first = group(
        anomaly_rows("checkout", T0 + timedelta(minutes=45), 15),
        error_spans("checkout", T0 + timedelta(minutes=45), 15),
    )
    assert first.columns == list(grouping.DEFECTS) and first.height == 1
    assert (
        first["status"][0] == "open" and first["fingerprint"][0] == "checkout|ZeroDivisionError: boom|/orders"
    )
    second_start = T0 + timedelta(hours=1)
    second = group(
        anomaly_rows("checkout", second_start, 10),
        error_spans("checkout", second_start, 10),
        previous=first,
        hour_end=T0 + timedelta(hours=2),
    )
    assert second["defect_id"].to_list() == first["defect_id"].to_list()
    assert second["first_seen"][0] == T0 + timedelta(minutes=45)
    assert second["last_seen"][0] == second_start + timedelta(minutes=10)
    assert second["status"][0] == "resolved"  # quiet for the last 50 minutes of the hour
    # re-running the partition gives the same rows
    again = group(
        anomaly_rows("checkout", second_start, 10),
        error_spans("checkout", second_start, 10),
        previous=first,
        hour_end=T0 + timedelta(hours=2),
    )
    assert again.equals(second)


def test_a_fingerprint_returning_after_resolution_is_a_regression():
    first = group(
        anomaly_rows("checkout", T0 + timedelta(minutes=5), 10),
        error_spans("checkout", T0 + timedelta(minutes=5), 10),
    )
    assert first["status"][0] == "resolved"
    later = T0 + timedelta(hours=2, minutes=50)
    back = group(
        anomaly_rows("checkout", later, 10),
        error_spans("checkout", later, 10),
        previous=first,
        hour_end=T0 + timedelta(hours=3),
    )
    assert back.height == 1
    assert back["status"][0] == "regression" and back["defect_id"][0] != first["defect_id"][0]
    assert back["fingerprint"][0] == first["fingerprint"][0]
    assert json.loads(back["evidence"][0])["regression_of"] == first["defect_id"][0]
    # the regression continues into the next hour under its own id, still a regression until it stops
    onward = group(
        anomaly_rows("checkout", T0 + timedelta(hours=3), 50),
        error_spans("checkout", T0 + timedelta(hours=3), 50),
        previous=pl.concat([first, back]),
        hour_end=T0 + timedelta(hours=4),
    )
    assert (
        onward["defect_id"].to_list() == back["defect_id"].to_list() and onward["status"][0] == "regression"
    )


def test_symptoms_of_one_incident_are_linked_and_unrelated_ones_are_not():
    start = T0 + timedelta(minutes=20)
    anoms = pl.concat(
        [
            anomaly_rows("checkout", start, 15),
            anomaly_rows("frontend", start + timedelta(minutes=1), 14, signal="client_error_rate", value=0.2),
            anomaly_rows("ads", start + timedelta(minutes=2), 12),  # overlaps in time, no edge to the others
        ]
    )
    spans = pl.concat(
        [
            error_spans("checkout", start, 15, exception="*pgconn.ConnectError"),
            error_spans("frontend", start, 15, exception=None, kind="CLIENT", peer="checkout", route=None),
            error_spans("ads", start, 15, exception="java.lang.NullPointerException", route="/ads"),
        ]
    )
    defects = group(anoms, spans)
    incident = dict(zip(defects["service"].to_list(), defects["incident_id"].to_list(), strict=True))
    assert incident["checkout"] == incident["frontend"] != incident["ads"]
    frontend = defects.filter(pl.col("service") == "frontend")
    assert frontend["fingerprint"][0].startswith("frontend|calls checkout: HTTP 500")
    assert frontend["defect_type"][0] == "dependency_failure"


def test_short_latency_blips_and_load_do_not_open_defects():
    start = T0 + timedelta(minutes=10)
    blip = anomaly_rows("cart", start, 4, signal="latency_p95_ms", value=300.0, expected=100.0)
    surge = anomaly_rows(
        "catalog", start, 20, signal="latency_p95_ms", value=300.0, expected=100.0
    ).with_columns(pl.lit('{"load_ratio": 2.4}').alias("details"))
    traffic = anomaly_rows("catalog", start, 20, signal="requests", value=120.0, expected=50.0)
    regression = anomaly_rows("currency", start, 20, signal="latency_p95_ms", value=500.0, expected=100.0)
    after_change = anomaly_rows(
        "email", start, 6, signal="latency_p95_ms", value=300.0, expected=100.0, change="chg-9"
    )
    defects = group(pl.concat([blip, surge, traffic, regression, after_change]))
    assert sorted(defects["service"].to_list()) == ["currency", "email"]
    assert set(defects["defect_type"].to_list()) == {"latency_regression"}


def test_flaky_and_broken_ci_tests():
    start = T0 + timedelta(minutes=5)
    tests = pl.DataFrame(
        {
            "service": ["frontend"] * 3 + ["payment"] * 2,
            "timestamp": [start + timedelta(minutes=m) for m in (0, 5, 9, 1, 3)],
            "status": ["failed", "passed", "failed", "failed", "failed"],
            "name": ["renders cart"] * 3 + ["response matches consumer contract"] * 2,
            "classname": ["CartTest"] * 3 + [None] * 2,
            "version": ["2.0.0"] * 3 + ["3.1.0"] * 2,
            "message": [None] * 3 + ["expected field 'amount' to be a number but got an object"] * 2,
        }
    )
    defects = group(pl.DataFrame(schema=anomalies.ANOMALIES), tests=tests)
    types = dict(zip(defects["service"].to_list(), defects["defect_type"].to_list(), strict=True))
    assert types == {"frontend": "flaky_test", "payment": "data_validation"}
    flaky = defects.filter(pl.col("service") == "frontend")
    assert flaky["severity"][0] == "S4" and flaky["operation"][0] == "CartTest::renders cart"


def test_a_failing_test_joins_its_releases_first_incident_and_not_a_later_one():
    tests = pl.DataFrame(
        {
            "service": "checkout",
            "timestamp": [T0 + timedelta(minutes=m) for m in (10, 12)],
            "status": "failed",
            "name": "response matches consumer contract",
            "classname": None,
            "version": "3.1.0",
            "message": "expected field 'amount' to be a number but got an object",
        },
        schema_overrides={"classname": pl.String},
    )
    deployments = pl.DataFrame(
        {"service": ["checkout"], "version": ["3.1.0"], "timestamp": [T0 + timedelta(minutes=20)]}
    )
    onset = T0 + timedelta(minutes=25)
    first = group(
        anomaly_rows("frontend", onset, 15, signal="client_error_rate", value=0.2),
        error_spans("frontend", onset, 15, exception=None, kind="CLIENT", peer="checkout", route=None),
        tests=tests,
        deployments=deployments,
    )
    incident = dict(zip(first["service"].to_list(), first["incident_id"].to_list(), strict=True))
    assert incident["checkout"] == incident["frontend"]  # the consumer broken by the release
    # Within the hour after the release, but in the next partition: another incident on the same caller.
    later = T0 + timedelta(hours=1, minutes=10)
    second = group(
        anomaly_rows("frontend", later, 15, value=0.3),
        error_spans("frontend", later, 15, exception="java.lang.NullPointerException", route="/cart"),
        tests=tests,
        deployments=deployments,
        previous=first,
        hour_end=T0 + timedelta(hours=2),
    )
    test_row = second.filter(pl.col("fingerprint").str.contains("|test:", literal=True))
    new_row = second.filter(pl.col("first_seen") == later)
    assert test_row["incident_id"][0] == incident["checkout"]
    assert new_row.height == 1 and new_row["incident_id"][0] != incident["checkout"]


def test_grouping_names_bad_input():
    with pytest.raises(grouping.GroupingInputError, match="defects.anomalies"):
        group(pl.DataFrame({"service": ["a"]}))


# ------------------------------------------------------------------------------------- classification


def features(**values: float) -> dict[str, float]:
    row = {name: 0.0 for name in classify.FEATURE_COLUMNS}
    row.update(values)
    return row


RULE_CASES = {
    "error_spike": features(error_windows=6, error_rate_peak=0.35, error_rate_rise=0.33),
    "new_exception": features(error_windows=2, error_rate_peak=0.03, error_rate_rise=0.02, new_signature=1),
    "latency_regression": features(latency_windows=20, latency_ratio_log2=2.2, latency_only=1),
    "availability": features(error_windows=8, restarts=4, cpu_ratio_log2=-1.5, error_rate_peak=0.5),
    "resource_exhaustion": features(error_windows=3, memory_ratio_log2=0.8, restarts=2, kw_resource=0.6),
    "dependency_failure": features(
        error_windows=9, client_failure_share=0.95, kw_dependency=0.9, error_rate_peak=0.4
    ),
    "config_error": features(
        error_windows=10, error_rate_peak=0.8, kw_config=0.9, after_change=1, after_config_change=1
    ),
    "data_validation": features(error_windows=5, error_rate_peak=0.5, kw_validation=0.8),
    "flaky_test": features(test_evidence=1, test_flaky=1),
}


def test_rules_give_each_type():
    frame = pl.DataFrame(list(RULE_CASES.values()))
    kinds, confidence = classify.rule_type(frame)
    assert kinds.to_list() == list(RULE_CASES)
    assert ((confidence > 0.5) & (confidence <= 1)).all()
    # a blind datastore seen failing through its callers is a dependency failure; a blind service is an
    # availability defect
    blind = pl.DataFrame(
        [features(error_windows=5, blind_service=1, datastore=1), features(error_windows=5, blind_service=1)]
    )
    assert classify.rule_type(blind)[0].to_list() == ["dependency_failure", "availability"]
    # errors explained by failing calls right after a config change stay a dependency failure
    caller = pl.DataFrame(
        [features(error_windows=5, client_failure_share=0.9, after_change=1, after_config_change=1)]
    )
    assert classify.rule_type(caller)[0].to_list() == ["dependency_failure"]


def test_features_round_trip_through_the_evidence():
    evidence = [json.dumps({"features": row}) for row in RULE_CASES.values()]
    frame = classify.defect_features(pl.DataFrame({"evidence": evidence}))
    assert frame.columns == list(classify.FEATURE_COLUMNS) and frame.height == len(RULE_CASES)
    assert classify.rule_type(frame)[0].to_list() == list(RULE_CASES)
    with pytest.raises(classify.ClassifierInputError, match="evidence"):
        classify.defect_features(pl.DataFrame({"x": [1]}))


def test_severity_orders_by_impact_tier_and_duration():
    rows = pl.DataFrame(
        {
            "service": ["checkout", "checkout", "email", "email"],
            "tier": ["tier-1", "1", "3", None],
            "defect_type": ["availability", "error_spike", "error_spike", "flaky_test"],
            "peak_error_rate": [0.9, 0.25, 0.04, None],
            "evidence": [
                json.dumps({"features": f})
                for f in (
                    features(duration_log=float(np.log1p(60)), restarts=3),
                    features(duration_log=float(np.log1p(20))),
                    features(duration_log=float(np.log1p(3))),
                    features(test_evidence=1, test_flaky=1),
                )
            ],
        }
    )
    levels, confidence = classify.severity(rows)
    assert levels.to_list() == ["S1", "S2", "S4", "S4"]
    assert ((confidence >= 0.5) & (confidence <= 1)).all()
    assert classify.tier_rank(pl.lit("Tier-2")).meta.is_column() is False  # an expression, usable anywhere
    assert pl.select(classify.tier_rank(pl.Series(["critical", "tier-3", "x"]))).to_series().to_list() == [
        1,
        3,
        None,
    ]


def labelled(n_per_type: int, seed: int) -> tuple[pl.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for kind, proto in RULE_CASES.items():
        for _ in range(n_per_type):
            noisy = {
                k: (v * rng.uniform(0.6, 1.4) if v else float(rng.random() < 0.05)) for k, v in proto.items()
            }
            rows.append(noisy)
            labels.append(kind)
    return pl.DataFrame(rows), labels


def test_classifier_trains_and_predicts_on_labelled_frames():
    train_x, train_y = labelled(12, seed=1)
    model = classify.DefectTypeClassifier(n_estimators=25).fit(train_x, train_y)
    assert set(model.classes_) == set(RULE_CASES) and model.metrics["cv_accuracy"] > 0.8
    test_x, test_y = labelled(4, seed=2)
    kinds, confidence = model.predict(test_x)
    accuracy = float(np.mean(np.array(kinds.to_list()) == np.array(test_y)))
    assert accuracy > 0.85 and confidence.min() > 0
    proba = model.predict_proba(test_x)
    assert proba.shape == (test_x.height, len(model.classes_)) and np.allclose(proba.sum(axis=1), 1)
    kinds, _, source = classify.classify_types(test_x, model)
    assert set(source.to_list()) <= {"rules", "classifier"} and kinds.len() == test_x.height
    clone = pickle.loads(pickle.dumps(model))
    assert clone.predict(test_x)[0].to_list() == model.predict(test_x)[0].to_list()


def test_classifier_refuses_too_few_or_unknown_labels():
    x, y = labelled(1, seed=3)
    with pytest.raises(classify.ClassifierInputError, match="at least"):
        classify.DefectTypeClassifier(min_labels=20).fit(x, y)
    with pytest.raises(classify.ClassifierInputError, match="not defect types"):
        classify.DefectTypeClassifier().fit(x, ["meltdown"] * x.height)


def test_feedback_labels_override_simulator_labels():
    defects = pl.DataFrame(
        {
            "defect_id": ["d1", "d2", "d3"],
            "evidence": [
                json.dumps({"features": RULE_CASES[k]})
                for k in ("error_spike", "config_error", "latency_regression")
            ],
        }
    )
    labels = pl.DataFrame(
        {
            "defect_id": ["d1", "d2", "d2", "d9"],
            "defect_type": ["error_spike", "error_spike", "config_error", "availability"],
            "source": ["simulator", "feedback", "simulator", "feedback"],
        }
    )
    x, y, weights = classify.training_set(defects, labels)
    assert y.to_list() == ["error_spike", "error_spike"]  # d2: the person's correction wins
    assert x.height == 2 and weights.tolist() == [1.0, classify.FEEDBACK_WEIGHT]


# ------------------------------------------------------------------------------------------ evaluation


@pytest.mark.slow
def test_evaluation_on_a_small_simulated_run(tmp_path):
    from qa_assets.evaluation import defects as evaluation
    from qa_assets.simulate import DecoySpec, FaultSpec, simulate

    scenario = [
        FaultSpec("bad_deploy"),
        DecoySpec("traffic_surge"),
        FaultSpec("dependency_outage", blips=1),
        FaultSpec("latency_regression"),
    ]
    summary = simulate(
        tmp_path / "landing", topology="shop", hours=4, scale="small", seed=11, faults=scenario
    )
    metrics = evaluation.evaluate_on_simulation(summary.landing_dir, summary.ground_truth_path)
    assert metrics["faults"] == 3
    assert metrics["detection_recall"] >= 0.66
    assert metrics["detection_precision"] >= 0.8
    assert metrics["grouping_pairwise_precision"] >= 0.8 and metrics["grouping_pairwise_recall"] >= 0.8
    assert metrics["type_accuracy_root"] >= 0.5
    report = evaluation.format_report(metrics)
    assert "detection_recall" in report and "F01" in report


def test_figures_over_several_runs_pool_faults_pairs_and_types():
    from qa_assets.evaluation import defects as evaluation

    def fault(kind, truth, predicted, detected=True):
        return {"kind": kind, "truth_type": truth, "root_defect_type": predicted, "detected": detected}

    run_a = {"faults": 3, "faults_detected": 3, "defects": 6, "defects_matched": 6,
             "grouping_pairs_predicted": 4, "grouping_pairs_true": 5, "grouping_pairs_both": 4,
             "per_fault": [fault("bad_deploy", "error_spike", "new_exception"),
                           fault("memory_leak", "resource_exhaustion", "resource_exhaustion"),
                           fault("latency_regression", "latency_regression", "error_spike")]}
    run_b = {"faults": 2, "faults_detected": 1, "defects": 4, "defects_matched": 3,
             "grouping_pairs_predicted": 6, "grouping_pairs_true": 3, "grouping_pairs_both": 3,
             "per_fault": [fault("bad_deploy", "error_spike", "error_spike"),
                           fault("crash_loop", "availability", None, detected=False)]}
    clean = [{"defects": 1, "hours": 6.0, "false_positives": []}, {"defects": 0, "hours": 6.0, "false_positives": []}]
    pooled = evaluation.pooled_figures([run_a, run_b], clean)
    assert pooled["detection_recall"] == 0.8 and pooled["detection_precision"] == 0.9
    assert pooled["grouping_pairwise_precision"] == 0.7 and pooled["grouping_pairwise_recall"] == 0.875
    # error_spike: 2 right (new_exception is its family), 1 latency fault typed error_spike -> F1 0.8;
    # resource 1.0; latency 0 (typed wrong); availability 0 (missed)
    assert pooled["type_f1"] == {"availability": 0.0, "error_spike": 0.8, "latency_regression": 0.0,
                                 "resource_exhaustion": 1.0}
    assert pooled["type_macro_f1"] == 0.45
    assert pooled["recall_per_kind"]["bad_deploy"] == [2, 2] and pooled["recall_per_kind"]["crash_loop"] == [0, 1]
    assert pooled["false_defects_per_clean_day"] == 2.0
    report = evaluation.format_pooled(pooled)
    assert "detection_recall" in report and "NOT met" in report


def test_a_fault_whose_root_shows_no_defect_is_typed_by_its_first_defect():
    from qa_assets.evaluation import defects as evaluation

    def row(defect_id, service, minute, defect_type, errors=10):
        return {"defect_id": defect_id, "fingerprint": f"{service}|boom|*", "service": service,
                "first_seen": T0 + timedelta(minutes=minute), "last_seen": T0 + timedelta(minutes=minute + 10),
                "incident_id": "inc-1", "error_count": errors, "defect_type": defect_type, "severity": "S3",
                "operation": None}

    truth = {
        "topology": {"edges": [{"caller": "web", "callee": "api"}, {"caller": "api", "callee": "catalog"}]},
        "faults": [{"fault_id": "F1", "kind": "contract_break", "root_service": "catalog",
                    "affected_services": ["api", "web"], "defect_type": "data_validation",
                    "start": (T0 + timedelta(minutes=1)).isoformat(), "end": (T0 + timedelta(minutes=20)).isoformat()}],
        "decoys": [],
    }
    # the changed contract fails the callers only: api first (validation), web a minute later (more errors)
    defects = pl.DataFrame([row("d1", "api", 2, "data_validation"), row("d2", "web", 3, "dependency_failure", 40)])
    fault = evaluation.evaluate_run(defects, truth)["per_fault"][0]
    assert fault["detected"] and fault["root_defect_type"] == "data_validation" and fault["type_ok"]


def test_evaluate_defects_refuses_seeds_with_a_landing(capsys):
    from qa_assets.evaluation import defects as evaluation

    assert evaluation.main(["--seeds", "0,1", "--landing", "somewhere"]) == 2
    assert "--seeds" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ low traffic


def test_a_slowdown_of_a_service_with_a_request_or_two_a_minute_is_found_from_pooled_windows():
    quiet = anomalies.fit_detector(make_windows("mailer", T0, 180, seed=7, requests=1.2, p95_ms=60.0),
                                   "test-features")
    p95 = np.full(60, 60.0)
    p95[20:34] = 300.0  # five times slower for 14 minutes
    start = T0 + timedelta(hours=3)
    current = make_windows("mailer", start, 60, seed=8, requests=1.2, p95_ms=p95)
    assert (current["requests"] < 3).mean() > 0.8  # too few requests for a percentile of their own
    slow = flagged(anomalies.detect(current, quiet, model_version="1"), "baseline").filter(
        pl.col("signal").str.starts_with("latency"))
    minutes = {(w - start).seconds // 60 for w in slow["window_start"].to_list()}
    assert len(minutes & set(range(20, 34))) >= 6  # the slowdown is seen ...
    assert minutes <= set(range(18, 36))  # ... and only around it (pools reach two windows out)
    healthy = make_windows("mailer", start, 60, seed=9, requests=1.2, p95_ms=60.0)
    one_slow = healthy.with_columns(  # one slow request among a handful is no slowdown
        pl.when(pl.col("window_start") == start + timedelta(minutes=30)).then(pl.col(c) * 10).otherwise(pl.col(c))
        .alias(c) for c in ("latency_p50_ms", "latency_p95_ms"))
    scored = anomalies.detect(one_slow, quiet, model_version="1")
    assert flagged(scored, "baseline").filter(pl.col("signal").str.starts_with("latency")).height == 0


def test_two_requests_where_one_is_usual_is_no_load_that_explains_a_slowdown():
    quiet = anomalies.fit_detector(make_windows("mailer", T0, 180, seed=7, requests=1.2, p95_ms=60.0),
                                   "test-features")
    start = T0 + timedelta(hours=3)
    current = make_windows("mailer", start, 60, seed=8, requests=1.2, p95_ms=np.r_[np.full(20, 60.0),
                                                                               np.full(40, 400.0)])
    slow = flagged(anomalies.detect(current, quiet, model_version="1"), "baseline").filter(
        pl.col("signal").str.starts_with("latency"))
    ratios = {json.loads(d)["load_ratio"] for d in slow["details"].to_list()}
    assert ratios == {1.0}


def test_an_error_template_a_release_brings_is_new_even_early_in_the_history():
    start = T0
    current = make_windows("payment", start, 60, seed=31, requests=2.0)
    events = pl.DataFrame({
        "service": "payment",
        "timestamp": [start + timedelta(minutes=m) for m in (36, 40, 44)],
        "level": "ERROR", "template_id": "t-type", "template": "Cannot read properties of undefined",
        "is_new_template": [True, False, False], "exception_type": "TypeError",
    })
    deployments = pl.DataFrame({
        "timestamp": [start + timedelta(minutes=33)], "service": ["payment"], "event_id": ["chg-1"],
        "change_kind": ["code"], "version": ["1.8.0"], "previous_version": ["1.7.1"],
    })
    fresh = anomalies.fit_detector(current, "f")  # the first hour of a history: baselined on itself
    without_release = anomalies.detect(current, fresh, log_events=events, model_version="1")
    assert flagged(without_release, "new_error_template").height == 0
    with_release = anomalies.detect(current, fresh, log_events=events, deployments=deployments, model_version="1")
    novel = flagged(with_release, "new_error_template")
    assert novel["template_id"].unique().to_list() == ["t-type"]
    assert novel["after_change_id"].unique().to_list() == ["chg-1"]
    assert all(json.loads(d)["new_in_release"] for d in novel["details"].to_list())
    # a release in the first minutes of the history: its predecessor was not known long enough
    early = deployments.with_columns(pl.lit(start + timedelta(minutes=5)).alias("timestamp"))
    shifted = events.with_columns(pl.col("timestamp") - timedelta(minutes=30))
    assert flagged(anomalies.detect(current, fresh, log_events=shifted, deployments=early, model_version="1"),
                   "new_error_template").height == 0


def test_a_slowdown_across_the_hour_is_one_episode_not_two_short_ones():
    hour = T0 + timedelta(hours=1)
    before = anomaly_rows("email", hour - timedelta(minutes=4), 4, signal="latency_p95_ms", value=300.0,
                          expected=60.0, change="chg-2")
    after = anomaly_rows("email", hour, 4, signal="latency_p95_ms", value=300.0, expected=60.0, change="chg-2")
    end = hour + timedelta(hours=1)
    assert group(after, hour_end=end).height == 0  # four slow windows after the change: too short alone
    defects = group(after, hour_end=end, previous_anomalies=before)
    assert defects["service"].to_list() == ["email"]
    assert defects["first_seen"][0] == hour - timedelta(minutes=4)
    # an episode that ended before the hour was judged with its own partition
    older = anomaly_rows("email", hour - timedelta(minutes=20), 10, signal="latency_p95_ms", value=300.0,
                         expected=60.0)
    assert group(after.clear(), hour_end=end, previous_anomalies=older).height == 0


def test_a_new_error_template_needs_a_release_or_a_rise_in_errors_to_open_a_defect():
    start = T0 + timedelta(minutes=10)
    novel = anomaly_rows("frontend", start, 3, signal="new_template_count", value=1.0, expected=0.0,
                         detector="new_error_template")
    assert group(novel).height == 0  # the first appearance of a rare error of a healthy service
    rise = anomaly_rows("frontend", start + timedelta(minutes=1), 1)
    assert group(pl.concat([novel, rise]))["service"].to_list() == ["frontend"]
    released = novel.with_columns(pl.lit("chg-7").alias("after_change_id"),
                                  pl.lit('{"minutes_after_change": 2.0}').alias("details"))
    assert group(released)["service"].to_list() == ["frontend"]
