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
