"""Governance: people's verdicts applied to the defects, retraining the models (new versions enter as
challenger) and the gates that promote them."""

from datetime import timedelta

import dagster as dg
import polars as pl

from qa_assets.defs.automation.conditions import AFTER_ANY_HOUR
from qa_assets.defs.defects.assets import CLASSIFIER_MODEL, DEFECTS, DETECTOR_MODEL, append_decisions, with_feedback
from qa_assets.defs.resources import ModelStoreResource, WarehouseResource
from qa_assets.defs.signals.assets import SERVICE_WINDOWS
from qa_assets.defs.telemetry.assets import LANDED_KEYS
from qa_assets.lib import governance, model_registry
from qa_assets.lib import warehouse as wh
from qa_assets.lib.defects import anomalies as anomaly_lib
from qa_assets.lib.defects import classify

GROUP = "governance"
OWNERS = ["team:qa-platform"]
DETECTOR = dg.AssetKey(["governance", "window_detector"])
CLASSIFIER = dg.AssetKey(["governance", "defect_type_classifier"])
REVIEWS = dg.AssetKey(["governance", "reviews"])
TRAINING = timedelta(hours=24)
HOLDOUT_SHARE = 0.2  # the newest fifth of the training window is held out to compare versions
FALSE_ALARM_TOLERANCE = 0.01


def _holdout_false_alarm_rate(con, detector, version: str, holdout: pl.DataFrame) -> float:
    """Share of held-out windows outside every known defect that the detector flags (lower is better)."""
    if holdout.height == 0:
        return 0.0
    scored = anomaly_lib.detect(holdout, detector, model_version=version)
    flagged = scored.filter(pl.col("is_anomaly")).select("service", "window_start").unique()
    defects = wh.read_frame(con, "SELECT service, first_seen, last_seen FROM defects.defects") \
        if wh.table_exists(con, "defects.defects") else pl.DataFrame(schema={"service": pl.String})
    quiet = holdout.select("service", "window_start")
    if defects.height:
        inside = quiet.join(defects, on="service").filter(
            (pl.col("window_start") >= pl.col("first_seen") - timedelta(minutes=5))
            & (pl.col("window_start") <= pl.col("last_seen"))).select("service", "window_start").unique()
        quiet = quiet.join(inside, on=["service", "window_start"], how="anti")
    if quiet.height == 0:
        return 0.0
    return quiet.join(flagged, on=["service", "window_start"], how="semi").height / quiet.height


def _split(con) -> tuple[pl.DataFrame, pl.DataFrame]:
    newest = con.execute("SELECT max(window_start) FROM signals.service_windows").fetchone()[0]
    if newest is None:
        return pl.DataFrame(), pl.DataFrame()
    frame = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE window_start > ? ORDER BY window_start",
                          [newest - TRAINING])
    cut = frame["window_start"].min() + (newest - frame["window_start"].min()) * (1 - HOLDOUT_SHARE)
    return frame.filter(pl.col("window_start") < cut), frame.filter(pl.col("window_start") >= cut)


@dg.asset(key=DETECTOR, group_name=GROUP, kinds={"scikit-learn", "mlflow"}, owners=OWNERS, deps=[SERVICE_WINDOWS, DEFECTS],
          pool="duckdb")
def window_detector(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                    model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Retrain the window detector on the trailing day; the new version is registered as challenger."""
    with warehouse.connect(read_only=True) as con:
        train, holdout = _split(con)
        if train.height == 0:
            return dg.MaterializeResult(metadata={"note": "no service windows yet: nothing to train on"})
        feature_set = train["feature_set_id"].drop_nulls().first()
        detector = anomaly_lib.fit_detector(train, feature_set)
        false_alarms = _holdout_false_alarm_rate(con, detector, "candidate", holdout)
    info = model_store.register(DETECTOR_MODEL, detector, params=detector.params,
                                metrics={"holdout_false_alarm_rate": false_alarms, "training_windows": float(train.height)},
                                feature_set_id=feature_set,
                                training_window=(train["window_start"].min(), train["window_start"].max()))
    return dg.MaterializeResult(metadata={
        "version": str(info.version), "aliases": ", ".join(info.aliases) or "challenger",
        "training_windows": train.height, "holdout_windows": holdout.height,
        "holdout_false_alarm_rate": round(false_alarms, 4), "feature_set_id": feature_set,
    })


@dg.asset_check(asset=DETECTOR, blocking=True, pool="duckdb", description=(
    "Promote the challenger detector to champion only when its false-alarm rate on held-out quiet windows is no "
    "worse than the champion's (both scored now, on the same windows)."))
def detector_promotion_gate(warehouse: WarehouseResource, model_store: ModelStoreResource) -> dg.AssetCheckResult:
    uri = model_store.tracking_uri
    challenger = model_registry.get_version(DETECTOR_MODEL, tracking_uri=uri, alias="challenger")
    if challenger is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no challenger: nothing to promote"})
    champion_model, champion = model_store.champion(DETECTOR_MODEL)
    challenger_model, _ = model_registry.load_model(DETECTOR_MODEL, "challenger", tracking_uri=uri)
    with warehouse.connect() as con:
        _, holdout = _split(con)
        rates = {"champion": _holdout_false_alarm_rate(con, champion_model, str(champion.version), holdout),
                 "challenger": _holdout_false_alarm_rate(con, challenger_model, str(challenger.version), holdout)}
        ok, reason = model_registry.compare_for_promotion(
            {"false_alarm_rate": rates["champion"]}, {"false_alarm_rate": rates["challenger"]}, "false_alarm_rate",
            higher_is_better=False, tolerance=FALSE_ALARM_TOLERANCE)
        if ok:
            model_registry.promote(DETECTOR_MODEL, uri)
        append_decisions(con, governance.decision_rows(
            pl.DataFrame({"subject_id": [f"{DETECTOR_MODEL}/{challenger.version}"],
                          "outcome": ["promoted" if ok else "kept_challenger"], "confidence": [None],
                          "rationale": [reason]}, schema_overrides={"confidence": pl.Float64}),
            stage="governance", decision="promote_model", subject_type="model", model_name=DETECTOR_MODEL,
            model_version=str(challenger.version), input_row_counts={"holdout_windows": holdout.height}))
    return dg.AssetCheckResult(passed=ok, metadata={
        "reason": reason, "champion_version": str(champion.version), "challenger_version": str(challenger.version),
        "champion_false_alarm_rate": round(rates["champion"], 4),
        "challenger_false_alarm_rate": round(rates["challenger"], 4)})


@dg.asset(key=REVIEWS, group_name=GROUP, kinds={"duckdb"}, owners=OWNERS, deps=[DEFECTS, LANDED_KEYS["ingested_files"]],
          pool="duckdb", automation_condition=AFTER_ANY_HOUR)
def reviews(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """People's verdicts (feedback files, `qa-assets feedback`) applied to `defects.defects` and logged.

    A correction replaces the type or severity, an approval confirms the labels, a rejection marks the defect a
    false positive (`governance.apply_feedback`); each feedback record becomes a `review_defect` row of the
    decision log. The defects stage applies the same verdicts when an hour is re-run, so none is undone.
    """
    with warehouse.connect() as con:
        if not (wh.table_exists(con, "raw.feedback") and wh.table_exists(con, "defects.defects")):
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no feedback yet"})
        feedback = wh.read_table(con, "raw.feedback")
        current = wh.read_frame(con, "SELECT * FROM defects.defects WHERE defect_id IN (SELECT unnest(?))",
                                [feedback["defect_id"].unique().to_list()])
        reviewed = with_feedback(con, current)
        wh.replace_where(con, "defects.defects", reviewed, "defect_id", reviewed["defect_id"].to_list())
        known = feedback.filter(pl.col("defect_id").is_in(current["defect_id"].implode()))
        append_decisions(con, governance.feedback_decision_rows(known))
    unknown = feedback.filter(~pl.col("defect_id").is_in(current["defect_id"].implode()))
    if unknown.height:
        context.log.warning(f"{unknown.height} feedback record(s) name defects that are not in defects.defects "
                            f"(e.g. {unknown['defect_id'][0]!r}); they wait until such a defect exists")
    verdicts = governance.latest_feedback(known).group_by("decision").len().sort("decision") if known.height \
        else pl.DataFrame({"decision": [], "len": []})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": reviewed.height,
        "feedback_records": feedback.height,
        "unknown_defects": unknown.height,
        "verdicts": dg.MetadataValue.json({str(k): int(v) for k, v in verdicts.iter_rows()}),
        "rejected": int((reviewed["status"] == governance.REJECTED_STATUS).sum()) if reviewed.height else 0,
    })


@dg.asset(key=CLASSIFIER, group_name=GROUP, kinds={"scikit-learn", "mlflow"}, owners=OWNERS, deps=[DEFECTS, REVIEWS],
          pool="duckdb")
def defect_type_classifier(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                           model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Train the defect-type classifier on human feedback (corrections and approvals); the rules rule until then."""
    with warehouse.connect(read_only=True) as con:
        if not (wh.table_exists(con, "raw.feedback") and wh.table_exists(con, "defects.defects")):
            return dg.MaterializeResult(metadata={"labels": 0, "note": "no feedback yet: the rules classify defects"})
        feedback = wh.read_table(con, "raw.feedback")
        defects = wh.read_table(con, "defects.defects")
    latest = governance.latest_feedback(feedback) if feedback.height else feedback
    labels = latest.join(defects.select("defect_id", pl.col("defect_type").alias("_current")), on="defect_id") \
        .filter(pl.col("decision").is_in(["correct", "approve"])) \
        .select("defect_id", pl.coalesce("defect_type", "_current").alias("defect_type"),
                pl.lit("feedback").alias("source")) if latest.height else pl.DataFrame()
    classifier = classify.DefectTypeClassifier()
    if labels.height < classifier.min_labels or labels["defect_type"].n_unique() < 2:
        return dg.MaterializeResult(metadata={
            "labels": labels.height,
            "note": f"{labels.height} labelled defects; the classifier needs {classifier.min_labels} of 2+ types: "
                    "the rules keep classifying"})
    features, y, weights = classify.training_set(defects, labels)
    classifier.fit(features, y, sample_weight=weights)
    metrics = {k: float(v) for k, v in classifier.metrics.items() if isinstance(v, (int, float))}
    info = model_store.register(CLASSIFIER_MODEL, classifier, params=classifier.params, metrics=metrics,
                                feature_set_id="defect_features/v1",
                                training_window=(defects["first_seen"].min(), defects["last_seen"].max()))
    return dg.MaterializeResult(metadata={"labels": labels.height, "version": str(info.version),
                                          "metrics": dg.MetadataValue.json(classifier.metrics)})


@dg.asset_check(asset=CLASSIFIER, blocking=True, description=(
    "Promote the challenger classifier only when its cross-validated accuracy on labelled defects is no worse."))
def classifier_promotion_gate(model_store: ModelStoreResource) -> dg.AssetCheckResult:
    uri = model_store.tracking_uri
    challenger = model_registry.get_version(CLASSIFIER_MODEL, tracking_uri=uri, alias="challenger")
    champion = model_registry.get_version(CLASSIFIER_MODEL, tracking_uri=uri, alias="champion")
    if challenger is None or champion is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no challenger: nothing to promote"})
    ok, reason = model_registry.compare_for_promotion(
        model_registry.run_metrics(CLASSIFIER_MODEL, champion.version, tracking_uri=uri),
        model_registry.run_metrics(CLASSIFIER_MODEL, challenger.version, tracking_uri=uri), "cv_accuracy",
        higher_is_better=True, tolerance=0.0)
    if ok:
        model_registry.promote(CLASSIFIER_MODEL, uri)
    return dg.AssetCheckResult(passed=ok, metadata={"reason": reason})


retrain_models = dg.define_asset_job("retrain_models", selection=dg.AssetSelection.groups(GROUP),
                                     description="Retrain the detector and the classifier; gates promote them.")
JOBS = [retrain_models]
SCHEDULES = [dg.ScheduleDefinition(name="daily_retraining", job=retrain_models, cron_schedule="0 3 * * *",
                                   execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)]
