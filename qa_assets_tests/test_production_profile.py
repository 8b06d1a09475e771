"""The production profile loads: its instance config validates and the definitions use the k8s executor."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_production_instance_config_is_valid(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(ROOT / "deploy" / "production" / "dagster.yaml", tmp_path / "dagster.yaml")
    for name, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
                        "DAGSTER_PG_PASSWORD": "x", "DAGSTER_PG_DB": "dagster", "QA_ASSETS_K8S_NAMESPACE": "qa"}.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in config["storage"]
    importlib.import_module("dagster_postgres")
    importlib.import_module("dagster_k8s")


def test_production_definitions_use_the_kubernetes_executor(monkeypatch):
    monkeypatch.setenv("QA_ASSETS_PROFILE", "production")
    import qa_assets.definitions as definitions

    try:
        reloaded = importlib.reload(definitions)
        assert "k8s" in reloaded.defs.executor.name
    finally:
        monkeypatch.delenv("QA_ASSETS_PROFILE")
        importlib.reload(definitions)


@pytest.mark.parametrize("path", ["md:qa_assets", "motherduck:qa_assets"])
def test_motherduck_paths_are_recognized(path):
    from qa_assets.lib.warehouse import is_md_path

    assert is_md_path(path)


# ----------------------------------------------------------------------------------------------------------
# The production instance for real: a throwaway PostgreSQL server (Debian's packages; `make test` installs
# them when it runs as root) started by the test, the production dagster.yaml pointed at it, and a job of the
# code location executed by the `dagster` CLI against that instance. Only the Kubernetes run launcher cannot
# run here: `dagster job execute` runs in this process tree, so the launcher is never asked to start a pod.


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user(command: list[str]) -> list[str]:
    """Postgres refuses to run as root: as root, run the server tools as the `postgres` system user."""
    import os

    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    import os
    import socket
    import subprocess

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: install Debian's postgresql (make test does as root)")
    base = tmp_path_factory.mktemp("pg")
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        base.chmod(0o755)
        for parent in base.parents:  # the server user must be able to reach its folder
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o111)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *args: subprocess.run(_as_postgres_user([str(bin_dir / args[0]), *args[1:]]),  # noqa: E731
                                       check=True, capture_output=True, text=True, timeout=120)
    run("initdb", "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8")
    run("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "start",
        "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster")
        yield {"host": "127.0.0.1", "port": port, "user": "dagster", "db": "dagster"}
    finally:
        subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)


@pytest.mark.integration
def test_production_instance_runs_a_job_on_postgres(postgres, tmp_path):
    import json
    import os
    import subprocess
    import sys

    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "production" / "dagster.yaml", home / "dagster.yaml")
    landing = tmp_path / "landing" / "otlp"
    landing.mkdir(parents=True)
    span = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7",
                                   "name": "GET /cart", "kind": 2, "startTimeUnixNano": "1709633700000000000",
                                   "endTimeUnixNano": "1709633700005000000", "status": {}}]}]}]}
    (landing / "t.jsonl").write_text(json.dumps(span) + "\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": postgres["host"],
           "DAGSTER_PG_PORT": str(postgres["port"]), "DAGSTER_PG_USER": postgres["user"], "DAGSTER_PG_PASSWORD": "",
           "DAGSTER_PG_DB": postgres["db"], "QA_ASSETS_K8S_NAMESPACE": "qa",
           "QA_ASSETS_LANDING": str(tmp_path / "landing"), "QA_ASSETS_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "QA_ASSETS_DATA_DIR": str(tmp_path / "data"), "QA_ASSETS_SETTLE_SECONDS": "0"}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "job", "execute", "-m", "qa_assets.definitions", "-j", "land_telemetry"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                 "QA_ASSETS_K8S_NAMESPACE"):
        os.environ[name] = env[name]
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs()
            assert [(r.job_name, r.status) for r in runs] == [("land_telemetry", dg.DagsterRunStatus.SUCCESS)]
            materialized = instance.get_latest_materialization_event(dg.AssetKey(["raw", "ingested_files"]))
            assert materialized is not None and materialized.run_id == runs[0].run_id
    finally:
        for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                     "QA_ASSETS_K8S_NAMESPACE"):
            os.environ.pop(name, None)
