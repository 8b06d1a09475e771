"""Defects stage: scored windows (anomalies), then defects with stable fingerprints, types and severities."""

from datetime import timedelta

import dagster as dg
import polars as pl

from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.resources import ModelStoreResource, WarehouseResource
from qa_assets.defs.signals.assets import (
    GRAPH_EDGES, GRAPH_NODES, LOG_EVENTS, SERVICE_WINDOWS, hour_of, replace_hour,
)
from qa_assets.defs.telemetry.assets import RAW_KEYS
from qa_assets.lib import governance
from qa_assets.lib import warehouse as wh
from qa_assets.lib.defects import anomalies as anomaly_lib
from qa_assets.lib.defects import classify, grouping
from qa_assets.lib.summary import markdown_table

GROUP = "defects"
OWNERS = ["team:qa-platform"]
ANOMALIES = dg.AssetKey(["defects", "anomalies"])
DEFECTS = dg.AssetKey(["defects", "defects"])
DETECTOR_MODEL = "qa_assets_window_detector"
CLASSIFIER_MODEL = "qa_assets_defect_type_classifier"
HISTORY = timedelta(hours=24)  # trailing windows a bootstrap detector learns from
PREVIOUS_DEFECTS = timedelta(days=14)  # how far back a returning fingerprint is recognized


def detector_for(con, model_store: ModelStoreResource, hour, context) -> tuple[object, str]:
    """The champion detector; on the very first run, bootstrap one from the trailing history and register it."""
    found = model_store.champion(DETECTOR_MODEL)
    if found is not None:
        model, info = found
        return model, str(info.version)
    # Learn from the minutes the system served requests: an hour holding only CI reports (or logs) is all
    # zero-traffic rows, and a champion learnt there would make every real minute look anomalous. Within those
    # minutes every service's row counts, its quiet ones too (they are scored as well).
    live = ("SELECT * FROM signals.service_windows WHERE window_start >= ? AND window_start < ? AND window_start IN "
            "(SELECT window_start FROM signals.service_windows GROUP BY window_start HAVING sum(requests) > 0)")
    history = wh.read_frame(con, live, [hour - HISTORY, hour])
    if history.select("window_start").n_unique() < 30:
        history = wh.read_frame(con, live, [hour - HISTORY, hour + timedelta(hours=1)])
    if history.select("window_start").n_unique() < 30:
        # No traffic yet: this hour is baselined on itself and no champion is registered from it.
        own = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE hour = ?", [hour])
        context.log.info(f"no champion detector yet and no traffic to learn one from before {hour + timedelta(hours=1)}: "
                         "this hour is baselined on itself")
        feature_set = own["feature_set_id"].drop_nulls().first() if own.height else None
        return anomaly_lib.fit_detector(own, feature_set or "unknown"), "self-baselined"
    feature_set = history["feature_set_id"].drop_nulls().first() if history.height else None
    detector = anomaly_lib.fit_detector(history, feature_set or "unknown")
    start, end = history["window_start"].min(), history["window_start"].max()
    info = model_store.register(DETECTOR_MODEL, detector, params=detector.params,
                                metrics={"training_windows": float(history.height)}, feature_set_id=feature_set,
                                training_window=(start, end))
    context.log.info(f"no champion detector yet: bootstrapped version {info.version} on {history.height} windows "
                     f"({start} – {end})")
    rows = governance.decision_rows(
        pl.DataFrame({"subject_id": [f"{DETECTOR_MODEL}/{info.version}"], "outcome": ["champion"],
                      "confidence": [None], "rationale": ["first version of the detector: bootstrap champion"]},
                     schema_overrides={"confidence": pl.Float64}),
        stage="governance", decision="register_model", subject_type="model", model_name=DETECTOR_MODEL,
        model_version=str(info.version), feature_set_id=feature_set,
        input_partitions=[hour.strftime("%Y-%m-%d-%H:%M")], input_row_counts={"signals.service_windows": history.height})
    append_decisions(con, rows)
    return detector, str(info.version)


def with_feedback(con, found: pl.DataFrame) -> pl.DataFrame:
    """`found` defects with the latest human verdict per defect applied (`governance.apply_feedback`)."""
    if found.height == 0 or not wh.table_exists(con, "raw.feedback"):
        return found
    feedback = wh.read_frame(con, "SELECT * FROM raw.feedback WHERE defect_id IN (SELECT unnest(?))",
                             [found["defect_id"].to_list()])
    return governance.apply_feedback(found, feedback) if feedback.height else found


def append_decisions(con, rows: pl.DataFrame) -> None:
    """The decision log is append-only; a re-run replaces only rows with the same decision ids."""
    if rows.height == 0:
        return
    wh.ensure_table(con, "governance.decision_log", governance.DECISION_LOG)
    wh.replace_where(con, "governance.decision_log", rows, "decision_id", rows["decision_id"].to_list())


# The drift check is evaluated in the anomalies step itself, on the hour just scored and with the detector
# that scored it: a separate check step cost every hourly run another process and a second model load
# (~3 s of a ~25 s multiprocess run) to recompute the same numbers, and it looked at the latest hour in
# the warehouse rather than the partition (wrong in a backfill).
DRIFT_CHECK = dg.AssetCheckSpec(
    "anomaly_feature_drift", asset=ANOMALIES,
    description="Drift of the hour's feature distribution against the detector's training window (asks for retraining).")


@dg.asset(key=ANOMALIES, group_name=GROUP, kinds={"duckdb", "scikit-learn", "mlflow"}, owners=OWNERS, tags=HOURLY_TAG,
          deps=[SERVICE_WINDOWS, LOG_EVENTS, RAW_KEYS["test_cases"], RAW_KEYS["deployments"]],
          partitions_def=hourly_partitions, pool="duckdb", check_specs=[DRIFT_CHECK])
def anomalies(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
              model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Score the hour's windows: per-service robust baselines, IsolationForest, new error templates, bursts."""
    hour = hour_of(context)
    with warehouse.connect() as con:
        windows = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE hour = ?", [hour])
        detector, version = detector_for(con, model_store, hour, context)
        events = wh.read_frame(con, "SELECT * FROM signals.log_events WHERE hour = ?", [hour])
        tests = wh.read_frame(con, "SELECT * FROM raw.test_cases WHERE hour = ?", [hour])
        deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp >= ? AND timestamp < ?",
                                    [hour - timedelta(hours=2), hour + timedelta(hours=1)])
        templates = wh.read_table(con, "signals.log_templates")  # novelty across hours, not just this one
        scored = anomaly_lib.detect(windows, detector, log_events=events, failed_tests=tests, deployments=deployments,
                                    model_version=version, templates=templates)
        replace_hour(con, "defects.anomalies", scored.with_columns(pl.lit(hour).cast(pl.Datetime("us")).alias("hour")),
                     hour)
        drift = anomaly_lib.drift(detector, windows)
    flagged = scored.filter(pl.col("is_anomaly"))
    by_detector = flagged.group_by("detector").agg(pl.len().alias("anomalies")).sort("anomalies", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": scored.height, "anomalies": flagged.height,
        "detector_version": version, "drift_max": float(drift.get("max") or 0.0),
        "drifted": bool(drift.get("drifted")),
        "by_detector": dg.MetadataValue.md(markdown_table(by_detector) if by_detector.height else "none"),
        "top": dg.MetadataValue.md(markdown_table(flagged.sort("score", descending=True).select(
            "service", "window_start", "detector", "signal", "value", "expected", "score").head(15))
            if flagged.height else "none"),
    }, check_results=[dg.AssetCheckResult(
        check_name=DRIFT_CHECK.name, passed=not drift["drifted"], severity=dg.AssetCheckSeverity.WARN,
        description="features drifted from the training window: retrain the detector" if drift["drifted"] else None,
        metadata={"max_distance": float(drift.get("max") or 0.0), "feature": str(drift.get("max_feature")),
                  "threshold": float(drift.get("threshold") or 0.0), "detector_version": version,
                  "hour": str(hour)})])


@dg.asset(key=DEFECTS, group_name=GROUP, kinds={"duckdb", "scikit-learn"}, owners=OWNERS, tags=HOURLY_TAG,
          deps=[ANOMALIES, LOG_EVENTS, RAW_KEYS["spans"], RAW_KEYS["test_cases"], GRAPH_NODES, GRAPH_EDGES],
          partitions_def=hourly_partitions, pool="duckdb")
def defects(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
            model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Group anomalies, error logs, failed spans and failing tests into defects; classify type and severity."""
    hour = hour_of(context)
    end = hour + timedelta(hours=1)
    partition = hour.strftime("%Y-%m-%d-%H:%M")
    found = model_store.champion(CLASSIFIER_MODEL)
    classifier, classifier_version = (found[0], str(found[1].version)) if found else (None, None)
    with warehouse.connect() as con:
        wh.ensure_table(con, "defects.defects", grouping.DEFECTS)
        scored = wh.read_frame(con, "SELECT * FROM defects.anomalies WHERE hour = ?", [hour])
        events = wh.read_frame(con, "SELECT * FROM signals.log_events WHERE hour = ?", [hour])
        span_errors = wh.read_frame(
            con, "SELECT * FROM raw.spans WHERE hour = ? AND (status_code = 'ERROR' OR http_status_code >= 500)", [hour])
        tests = wh.read_frame(con, "SELECT * FROM raw.test_cases WHERE hour = ?", [hour])
        edges = wh.read_frame(con, "SELECT * FROM signals.service_graph_edges WHERE hour = ?", [hour]).drop("hour")
        nodes = wh.read_frame(con, "SELECT * FROM signals.service_graph_nodes WHERE hour = ?", [hour]).drop("hour")
        windows = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE hour = ?", [hour])
        deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp < ?", [end])
        # Earlier partitions' defects (not this hour's own output, so a re-run starts from the same state).
        previous = wh.read_frame(con, "SELECT * FROM defects.defects WHERE first_seen < ? AND last_seen >= ?",
                                 [hour, hour - PREVIOUS_DEFECTS])
        # ... and the previous hour's last flagged windows: an episode running on into this hour is one episode
        carried = wh.read_frame(
            con, "SELECT * FROM defects.anomalies WHERE hour = ? AND is_anomaly AND window_start >= ?",
            [hour - timedelta(hours=1), hour - timedelta(minutes=grouping.GroupingSettings().carry_over_min)])
        found_defects = grouping.group_defects(
            scored, log_events=events, spans_errors=span_errors, failed_tests=tests, graph_edges=edges,
            previous_defects=previous, hour_end=end, windows=windows, graph_nodes=nodes, deployments=deployments,
            classifier=classifier, type_model_version=classifier_version, previous_anomalies=carried)
        # People's verdicts stay applied when an hour is re-run; the decision log keeps the model's own call.
        wh.replace_where(con, "defects.defects", with_feedback(con, found_defects), "defect_id",
                         found_defects["defect_id"].to_list())
        touched = found_defects.filter(pl.col("last_seen") >= hour)
        decisions = touched.select(
            pl.col("defect_id").alias("subject_id"),
            pl.concat_str([pl.col("defect_type"), pl.col("severity")], separator="/").alias("outcome"),
            "confidence",
            pl.format("{} defect of {} ({}), severity {}", "defect_type", "service", "title", "severity").alias("rationale"),
            pl.when(pl.col("confidence") < 0.6).then(pl.lit("needs_review")).otherwise(pl.lit("applied")).alias("status"),
        )
        append_decisions(con, governance.decision_rows(
            decisions, stage="defects", decision="classify_defect", subject_type="defect",
            model_name=CLASSIFIER_MODEL if classifier is not None else "rules", model_version=classifier_version,
            feature_set_id=windows["feature_set_id"].drop_nulls().first() if windows.height else None,
            input_partitions=[partition] + ([(hour - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")]
                                            if carried.height else []),
            input_row_counts={"defects.anomalies": scored.height, "signals.log_events": events.height,
                              "raw.spans(errors)": span_errors.height, "raw.test_cases": tests.height,
                              "defects.anomalies(previous hour, flagged)": carried.height}))
    table = touched.sort("severity", "first_seen").select(
        "defect_id", "service", "defect_type", "severity", "status", "confidence", "title", "first_seen", "last_seen")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": touched.height,
        "new": int(touched.filter(pl.col("first_seen") >= hour).height),
        "regressions": int((touched["status"] == "regression").sum()),
        "incidents": touched["incident_id"].n_unique() if touched.height else 0,
        "classifier": f"{CLASSIFIER_MODEL} v{classifier_version}" if classifier is not None else "rules (no labels yet)",
        "defects": dg.MetadataValue.md(markdown_table(table) if table.height else "no defects this hour"),
    })
