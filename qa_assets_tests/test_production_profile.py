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
