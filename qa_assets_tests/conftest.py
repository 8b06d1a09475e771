"""Shared fixtures: every test gets its own warehouse, artifacts folder and MLflow store under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The evaluation data beside the project (../shared/data), or QA_ASSETS_SHARED_DATA."""
    return Path(os.environ.get("QA_ASSETS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Evaluation data; tests that need it skip on a machine without it."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"evaluation data not found at {path} (set QA_ASSETS_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _offline_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _fresh_code_version():
    """code_version() is cached per process; a test that sets QA_ASSETS_CODE_VERSION must not leak it."""
    from qa_assets.lib import governance

    governance.code_version.cache_clear()
    yield
    governance.code_version.cache_clear()
