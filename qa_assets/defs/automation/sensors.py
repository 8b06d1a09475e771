"""Sensors: newly landed telemetry, deployment events (post-deploy verification), and alerts on failed runs
and failed asset checks."""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from qa_assets.defs.automation.jobs import hourly_graph, land_telemetry, post_deploy_gate
from qa_assets.defs.partitions import hourly_partitions
from qa_assets.defs.resources import default_landing, default_warehouse
from qa_assets.lib.alerts import send_alert
from qa_assets.lib.ingest import landing as ingest
from qa_assets.lib.ingest.deploy_events import deployment_events_since

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def _listing_fingerprint(files: list[ingest.LandedFile]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\0{f.size}\0{f.mtime.isoformat()}\n".encode())
    return digest.hexdigest()[:32]


@dg.sensor(job=land_telemetry, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Starts the landing run when files in the landing directory appear, grow or change.")
def landed_telemetry_sensor(context: dg.SensorEvaluationContext):
    landing = Path(default_landing())
    if not landing.is_dir():
        return dg.SkipReason(f"landing directory {landing} does not exist (set QA_ASSETS_LANDING)")
    fingerprint = _listing_fingerprint(ingest.discover(landing))
    if fingerprint == context.cursor:
        return dg.SkipReason("no new, grown or changed files")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"landing-{fingerprint}")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[land_telemetry],
                      request_job=hourly_graph, default_status=dg.DefaultSensorStatus.STOPPED,
                      description="After a landing run, runs the graph for every hour that received records.")
def staged_hours_sensor(context: dg.RunStatusSensorContext):
    from qa_assets.lib import warehouse

    try:
        with warehouse.connect(default_warehouse(), read_only=True, lock_timeout_s=30) as con:
            hours = ingest.staged_hours(con)
    except warehouse.WarehouseError as exc:
        return dg.SkipReason(f"warehouse busy or missing: {exc}")
    keys = set(hourly_partitions.get_partition_keys())
    requests = []
    for hour in hours:
        key = hour.strftime(PARTITION_FORMAT)
        if key in keys:
            requests.append(dg.RunRequest(run_key=f"{context.dagster_run.run_id}:{key}", partition_key=key))
    return requests or dg.SkipReason("the landing run staged no records")


@dg.sensor(job=hourly_graph, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="A new CDEvent in landing/deployments starts post-deploy verification of its hours.")
def deployment_sensor(context: dg.SensorEvaluationContext):
    landing = Path(default_landing())
    cursor = json.loads(context.cursor) if context.cursor else {}
    found = deployment_events_since(landing, cursor)
    context.update_cursor(json.dumps(found.cursor))
    for problem in found.problems:
        context.log.warning(problem)
    known = set(found.known_services)
    keys = set(hourly_partitions.get_partition_keys())
    requests = []
    for event in found.events:
        if known and event["service"] not in known:
            context.log.warning(f"deployment {event['event_id']} names service {event['service']!r}, which is "
                                "not in the catalog or in any telemetry yet; verifying it anyway")
        for key in event["partition_keys"]:
            if key in keys:
                requests.append(dg.RunRequest(
                    run_key=f"{event['event_id']}:{key}", partition_key=key,
                    tags={"qa-assets/trigger": "deployment", "qa-assets/service": event["service"] or "",
                          "qa-assets/change": event["event_id"], "qa-assets/event-type": event["event_type"]}))
    return requests or dg.SkipReason("no new deployment events")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[hourly_graph],
                      request_job=post_deploy_gate, default_status=dg.DefaultSensorStatus.STOPPED,
                      description="When a deployment's hour has been verified, runs the release gate (and the "
                                  "artifacts it reads) for that change.")
def post_deploy_gate_sensor(context: dg.RunStatusSensorContext):
    tags = context.dagster_run.tags
    if tags.get("qa-assets/trigger") != "deployment":
        return dg.SkipReason("the run was not started by a deployment event")
    return dg.RunRequest(run_key=f"gate:{context.dagster_run.run_id}", tags={
        key: tags[key] for key in ("qa-assets/trigger", "qa-assets/service", "qa-assets/change",
                                   "qa-assets/event-type") if key in tags})


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    """The asset checks that did not pass in one run: asset, check, severity and what the check said."""
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        failed.append({"asset": evaluation.asset_key.to_user_string(), "check": evaluation.check_name,
                       "severity": evaluation.severity.value, "description": evaluation.description or "",
                       "partition": entry.dagster_event.partition})
    return failed


def _alert_webhook() -> str | None:
    return os.environ.get("QA_ASSETS_ALERT_WEBHOOK") or None


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Failed runs go to the log and, when QA_ASSETS_ALERT_WEBHOOK is set, to a webhook.")
def run_failure_alert(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    checks = failed_checks(context.instance, run.run_id)
    message = f"qa-assets run {run.run_id} of job {run.job_name} failed: {context.failure_event.message}"
    if checks:
        message += " (failed checks: " + ", ".join(f"{c['asset']}:{c['check']}" for c in checks) + ")"
    context.log.error(message)
    send_alert({"kind": "run_failure", "run_id": run.run_id, "job": run.job_name, "message": message,
                "failed_checks": checks}, webhook=_alert_webhook(), log=context.log)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Asset checks that failed in a run that still succeeded (warnings such as drift "
                                  "or unaccounted records) go to the log and to QA_ASSETS_ALERT_WEBHOOK when set.")
def check_failure_alert(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    checks = failed_checks(context.instance, run.run_id)
    if not checks:
        return dg.SkipReason(f"every asset check of run {run.run_id} passed")
    message = (f"qa-assets run {run.run_id} of job {run.job_name} succeeded with {len(checks)} failed asset "
               "check(s): " + "; ".join(f"{c['asset']}:{c['check']} ({c['severity']}) {c['description']}"
                                         for c in checks))
    context.log.warning(message)
    send_alert({"kind": "check_failure", "run_id": run.run_id, "job": run.job_name, "message": message,
                "failed_checks": checks}, webhook=_alert_webhook(), log=context.log)
    return None


SENSORS = [landed_telemetry_sensor, staged_hours_sensor, deployment_sensor, post_deploy_gate_sensor, run_failure_alert,
           check_failure_alert]
