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
                      "signals.call_edges", "signals.service_graph_nodes", "signals.service_graph_edges",
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
