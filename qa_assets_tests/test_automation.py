"""Sensors and schedules, evaluated with Dagster's test contexts and persisted cursors."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import dagster as dg

from qa_assets.defs.automation.schedules import hourly_graph_schedule
from qa_assets.defs.automation.sensors import deployment_sensor, landed_telemetry_sensor
from qa_assets.lib.alerts import send_alert


def cdevent(event_id: str, service: str, ts: str = "2024-03-05T10:01:00Z", kind: str = "deployed") -> str:
    return json.dumps({
        "context": {"version": "0.4.1", "id": event_id, "source": "/ci", "type": f"dev.cdevents.service.{kind}.0.2.0",
                    "timestamp": ts},
        "subject": {"id": f"prod/{service}", "source": "/ci", "type": "service",
                    "content": {"environment": {"id": "prod"}, "artifactId": f"pkg:oci/{service}@sha256:abc?tag=1.2.0"}},
    })


def test_deployment_sensor_requests_the_event_hours_once_per_event(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_ASSETS_LANDING", str(tmp_path))
    folder = tmp_path / "deployments"
    folder.mkdir()
    (folder / "a.jsonl").write_text(cdevent("ev-1", "cart") + "\n")
    context = dg.build_sensor_context(cursor=None)
    requests = list(deployment_sensor(context))
    assert [r.run_key for r in requests] == ["ev-1:2024-03-05-10:00", "ev-1:2024-03-05-11:00"]
    assert requests[0].tags["qa-assets/service"] == "cart"
    cursor = context.cursor
    # Same files again: nothing new. A rollback appended to the file: only the new event.
    again = deployment_sensor(dg.build_sensor_context(cursor=cursor))
    assert isinstance(again, dg.SkipReason)
    with open(folder / "a.jsonl", "a") as handle:
        handle.write(cdevent("ev-2", "cart", "2024-03-05T12:30:00Z", kind="rolledback") + "\n")
    third = list(deployment_sensor(dg.build_sensor_context(cursor=cursor)))
    assert {r.run_key.split(":")[0] for r in third} == {"ev-2"}
    assert third[0].tags["qa-assets/event-type"] == "rolledback"


def test_landed_telemetry_sensor_fires_on_new_and_grown_files_only(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_ASSETS_LANDING", str(tmp_path))
    (tmp_path / "otlp").mkdir()
    path = tmp_path / "otlp" / "t.jsonl"
    path.write_text("{}\n")
    context = dg.build_sensor_context(cursor=None)
    first = landed_telemetry_sensor(context)
    assert isinstance(first, dg.RunRequest)
    assert isinstance(landed_telemetry_sensor(dg.build_sensor_context(cursor=context.cursor)), dg.SkipReason)
    path.write_text("{}\n{}\n")
    later = time.time() + 5
    os.utime(path, (later, later))
    assert isinstance(landed_telemetry_sensor(dg.build_sensor_context(cursor=context.cursor)), dg.RunRequest)


def test_missing_landing_directory_is_a_skip_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_ASSETS_LANDING", str(tmp_path / "none"))
    result = landed_telemetry_sensor(dg.build_sensor_context())
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def test_hourly_schedule_runs_the_hour_that_just_ended():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 5, 11, 10, tzinfo=timezone.utc))
    request = hourly_graph_schedule(context)
    assert request.partition_key == "2024-03-05-10:00"


def test_alert_webhook_down_never_raises():
    assert send_alert({"kind": "test"}, webhook="http://127.0.0.1:9/", attempts=1, timeout_s=0.5) is False


def _recording_server():
    """A webhook on a free loopback port that records the JSON bodies posted to it."""
    import http.server
    import threading

    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def test_failed_asset_check_in_a_successful_run_is_alerted_to_the_webhook(monkeypatch):
    from qa_assets.defs.automation.sensors import check_failure_alert, failed_checks

    @dg.asset
    def windows() -> None:
        return None

    @dg.asset_check(asset=windows, description="drift against the training window")
    def drift() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="feature drift 0.41 > 0.25: retrain")

    @dg.asset_check(asset=windows)
    def fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    server, received = _recording_server()
    monkeypatch.setenv("QA_ASSETS_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    try:
        with dg.instance_for_test() as instance:
            job = dg.Definitions(assets=[windows], asset_checks=[drift, fine]).resolve_implicit_global_asset_job_def()
            result = job.execute_in_process(instance=instance)
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            assert [c["check"] for c in failed_checks(instance, run.run_id)] == ["drift"]
            success = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
            context = dg.build_run_status_sensor_context(
                sensor_name="check_failure_alert", dagster_instance=instance, dagster_run=run, dagster_event=success)
            check_failure_alert(context)
    finally:
        server.shutdown()
    assert len(received) == 1
    alert = received[0]
    assert alert["kind"] == "check_failure" and alert["run_id"] == run.run_id
    assert alert["failed_checks"][0]["check"] == "drift"
    assert alert["failed_checks"][0]["severity"] == "WARN"
    assert "feature drift 0.41" in alert["message"]


def test_artifacts_stage_is_requested_when_an_hour_of_its_parents_updates():
    from qa_assets.definitions import defs
    from qa_assets.defs.defects.assets import DEFECTS
    from qa_assets.defs.qa_artifacts.assets import ARTIFACTS, QA_REPORT

    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_num_requested(ARTIFACTS) == 0  # nothing changed since the first evaluation
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=DEFECTS, partition="2024-03-05-10:00"))
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.get_num_requested(ARTIFACTS) == 1
        assert third.get_num_requested(QA_REPORT) == 1  # downstream of the artifacts, in the same run


def test_a_verified_deployment_hour_starts_the_release_gate_and_other_runs_do_not():
    from qa_assets.defs.automation.sensors import post_deploy_gate_sensor

    @dg.asset
    def hour() -> None:
        return None

    job = dg.Definitions(assets=[hour]).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        requests = []
        for tags in ({"qa-assets/trigger": "deployment", "qa-assets/service": "cart", "qa-assets/change": "ev-1"},
                     {"dagster/schedule_name": "hourly_graph_schedule"}):
            result = job.execute_in_process(instance=instance, tags=tags)
            run = instance.get_run_by_id(result.run_id)
            success = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
            context = dg.build_run_status_sensor_context(
                sensor_name="post_deploy_gate_sensor", dagster_instance=instance, dagster_run=run,
                dagster_event=success)
            requests.append(post_deploy_gate_sensor(context))
    gate, skip = requests
    assert isinstance(gate, dg.RunRequest)
    assert gate.run_key.startswith("gate:") and gate.tags["qa-assets/change"] == "ev-1"
    assert isinstance(skip, dg.SkipReason)


def test_post_deploy_gate_job_holds_the_release_gate():
    from qa_assets.definitions import defs
    from qa_assets.defs.qa_artifacts.assets import RELEASE_READINESS

    job = defs.resolve_job_def("post_deploy_gate")
    assert RELEASE_READINESS in job.asset_layer.executable_asset_keys
