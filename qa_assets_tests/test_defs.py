"""The code location loads, and the telemetry stage runs through Dagster as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from qa_assets.defs import resources as res
from qa_assets.defs.stages import stage_definitions
from qa_assets.lib import warehouse

SPAN = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7", "name": "GET /a", "kind": 2,
        "startTimeUnixNano": "1709633700000000000", "endTimeUnixNano": "1709633700005000000",
        "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}}], "status": {}}


def test_definitions_load_with_every_stage_and_resource():
    from qa_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    repository = defs.get_repository_def()
    assert {"raw/ingested_files", "raw/quarantine", "raw/catalog", "raw/spans", "raw/logs", "raw/metrics",
            "raw/deployments", "raw/test_cases", "signals/log_events", "signals/log_templates",
            "signals/service_calls", "signals/service_graph_nodes", "signals/service_graph_edges",
            "signals/service_windows"} <= keys
    assert {"hourly_graph", "land_telemetry"} <= {j.name for j in repository.get_all_jobs()}
    assert {"landed_telemetry_sensor", "staged_hours_sensor", "deployment_sensor", "run_failure_alert"} <= {
        s.name for s in repository.sensor_defs}
    assert {"hourly_graph_schedule", "daily_retraining"} <= {s.name for s in repository.schedule_defs}
    assert {"defects/anomalies", "defects/defects", "rca/root_causes", "qa/artifacts", "qa/release_readiness",
            "qa/knowledge_base", "qa/report", "governance/window_detector", "governance/defect_type_classifier"} <= keys
    assert set(repository.get_top_level_resources()) >= {"warehouse", "landing", "artifacts", "model_store"}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        node = defs.resolve_asset_graph().get(key)
        assert node.group_name in {"telemetry", "signals", "defects", "root_causes", "qa_artifacts", "governance"}


def _resources(tmp_path: Path) -> dict:
    return {
        "warehouse": res.WarehouseResource(path=str(tmp_path / "wh.duckdb")),
        "landing": res.LandingResource(path=str(tmp_path / "landing"), settle_seconds=0),
        "artifacts": res.ArtifactsResource(path=str(tmp_path / "artifacts")),
        "model_store": res.ModelStoreResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    }


def test_landing_then_partition_materialize_and_rematerialize_identically(tmp_path):
    landing = tmp_path / "landing" / "otlp"
    landing.mkdir(parents=True)
    request = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
                                  "scopeSpans": [{"spans": [SPAN]}]}]}
    (landing / "t.jsonl").write_text(json.dumps(request) + "\n{broken\n")
    defs = dg.Definitions.merge(*stage_definitions())
    assets = list(defs.assets) + list(defs.asset_checks)
    resources = _resources(tmp_path)
    landed = [dg.AssetKey(["raw", "ingested_files"]), dg.AssetKey(["raw", "quarantine"]), dg.AssetKey(["raw", "catalog"])]
    result = dg.materialize(assets, selection=landed, resources=resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    raw = [dg.AssetKey(["raw", n]) for n in ("spans", "logs", "metrics", "deployments", "test_cases")]
    partition = "2024-03-05-10:00"
    assert dg.materialize(assets, selection=raw, resources=resources, partition_key=partition).success
    with warehouse.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        first = warehouse.read_table(con, "raw.spans")
        quarantined = con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0]
    assert first.height == 1 and quarantined == 1
    assert dg.materialize(assets, selection=raw, resources=resources, partition_key=partition).success
    with warehouse.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        assert warehouse.read_table(con, "raw.spans").equals(first)


def test_signals_checks_pass_on_a_simulated_hour(tmp_path):
    from datetime import UTC, datetime

    from qa_assets.simulate import simulate

    start = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    simulate(tmp_path / "landing", topology="shop", hours=1, scale="tiny", seed=5, start=start)
    defs = dg.Definitions.merge(*stage_definitions())
    assets = list(defs.assets) + list(defs.asset_checks)
    resources = _resources(tmp_path)
    landed = [dg.AssetKey(["raw", "ingested_files"]), dg.AssetKey(["raw", "quarantine"]), dg.AssetKey(["raw", "catalog"])]
    assert dg.materialize(assets, selection=landed, resources=resources).success
    upstream = [k for a in defs.assets for k in a.keys if k.path[0] in ("raw", "signals") and k not in landed]
    result = dg.materialize(assets, selection=upstream, resources=resources, partition_key="2026-03-04-10:00")
    assert result.success
    outcomes = {c.check_name: (c.passed, c.metadata) for c in result.get_asset_check_evaluations()}
    assert {"every_line_templated", "request_calls_consistent", "graph_sound", "windows_for_every_service"} <= set(outcomes)
    assert all(passed for passed, _ in outcomes.values()), outcomes


@pytest.mark.slow
def test_qa_assets_run_over_a_simulated_landing_directory(tmp_path, capsys, monkeypatch):
    from qa_assets.cli import main
    from qa_assets.simulate import simulate

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name in ("QA_ASSETS_LANDING", "QA_ASSETS_WAREHOUSE", "QA_ASSETS_ARTIFACTS", "QA_ASSETS_SETTLE_SECONDS"):
        monkeypatch.setenv(name, "")  # the run exports its settings; restored after the test
    simulate(tmp_path / "landing", topology="shop", hours=1, scale="tiny", seed=5,
             ground_truth=tmp_path / "truth.json")
    code = main(["run", "--landing", str(tmp_path / "landing"), "--warehouse", str(tmp_path / "wh.duckdb"),
                 "--artifacts", str(tmp_path / "artifacts")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stored records per source" in out
    with warehouse.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        for table in ("raw.spans", "raw.logs", "raw.metrics", "raw.deployments", "signals.log_events",
                      "signals.call_edges", "signals.request_calls", "signals.service_graph_nodes",
                      "signals.service_graph_edges",
                      "signals.service_windows"):
            assert con.execute(warehouse.statement("SELECT count(*) FROM {t}", t=table)).fetchone()[0] > 0, table
        pending = con.execute("SELECT count(*) FROM raw.ingested_files WHERE status <> 'ingested'").fetchone()[0]
    assert pending == 0


def test_cli_help_names_every_subcommand(capsys):
    from qa_assets.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "run", "simulate", "templates", "evaluate", "bench"):
        assert command in out


def test_run_without_landing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from qa_assets.cli import main

    monkeypatch.delenv("QA_ASSETS_LANDING", raising=False)
    code = main(["run", "--landing", str(tmp_path / "missing"), "--warehouse", str(tmp_path / "w.duckdb")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_champion_detector_is_learnt_from_an_hour_without_traffic(tmp_path):
    import logging
    import types
    from datetime import datetime, timedelta

    import duckdb
    import polars as pl

    from qa_assets.defs.defects.assets import DETECTOR_MODEL, detector_for

    def hour_of_windows(start: datetime, requests: int) -> pl.DataFrame:
        minutes = [start + timedelta(minutes=m) for m in range(60)]
        return pl.DataFrame({
            "hour": start, "service": ["shop", "mailer"] * 60, "window_start": [m for m in minutes for _ in (0, 1)],
            "window_minutes": 1, "feature_set_id": "f", "requests": [requests, 0] * 60, "errors": 0,
            "client_calls": 0, "client_errors": 0, "log_count": 3, "log_error": 0, "new_template_count": 0,
            "restarts": 0, "latency_p50_ms": [20.0 if requests else None, None] * 60,
            "latency_p95_ms": [40.0 if requests else None, None] * 60,
        }, schema_overrides={"hour": pl.Datetime("us"), "window_start": pl.Datetime("us"),
                             "latency_p50_ms": pl.Float64, "latency_p95_ms": pl.Float64})

    quiet, busy = datetime(2026, 3, 1, 23), datetime(2026, 3, 2, 0)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    frame = pl.concat([hour_of_windows(quiet, 0), hour_of_windows(busy, 12)])
    warehouse.ensure_table(con, "signals.service_windows", dict(frame.schema))
    warehouse.insert(con, "signals.service_windows", frame)
    store = res.ModelStoreResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    context = types.SimpleNamespace(log=logging.getLogger("test"))
    # the CI-only hour (logs, no requests) is baselined on itself: nothing becomes champion
    _, version = detector_for(con, store, quiet, context)
    assert version == "self-baselined" and store.champion(DETECTOR_MODEL) is None
    # the first hour with traffic bootstraps the champion from its own minutes, the quiet service's included
    detector, version = detector_for(con, store, busy, context)
    assert version == "1" and store.champion(DETECTOR_MODEL) is not None
    assert detector.training_rows == 120
