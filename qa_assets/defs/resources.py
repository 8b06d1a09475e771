"""Where things live: the landing directory, the DuckDB warehouse, the artifacts folder, the MLflow store.

Each setting comes from the environment (QA_ASSETS_LANDING, QA_ASSETS_WAREHOUSE, QA_ASSETS_ARTIFACTS,
QA_ASSETS_MLFLOW_URI), so the Dagster UI and `qa-assets run` share them; without them everything sits under
./data of the folder Dagster was started from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from qa_assets.lib import warehouse

DATA_DIR_ENV = "QA_ASSETS_DATA_DIR"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reporting


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data")).resolve()


def default_landing() -> str:
    return os.environ.get("QA_ASSETS_LANDING", str(data_dir() / "landing"))


def default_warehouse() -> str:
    return os.environ.get("QA_ASSETS_WAREHOUSE", str(data_dir() / "warehouse.duckdb"))


def default_artifacts() -> str:
    return os.environ.get("QA_ASSETS_ARTIFACTS", str(data_dir() / "artifacts"))


def default_mlflow_uri() -> str:
    return os.environ.get("QA_ASSETS_MLFLOW_URI", f"sqlite:///{data_dir() / 'mlflow.db'}")


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (or an `md:` MotherDuck database). Open it briefly, inside the duckdb pool."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.path, read_only=read_only) as con:
            yield con

    @property
    def folder(self) -> Path:
        """Beside the warehouse: the masking key and other local state."""
        if warehouse.is_md_path(self.path):
            return data_dir()
        return Path(self.path).resolve().parent


class LandingResource(dg.ConfigurableResource):
    """The landing directory producers write into (DESIGN.md §2)."""

    path: str
    # A whole-file format (XML, YAML, one JSON document) is read only once unmodified this long;
    # line formats are read up to their last complete line at any time.
    settle_seconds: float = 30.0


class ArtifactsResource(dg.ConfigurableResource):
    """Where generated tests, probes, tickets and reports are written, one file per item; and where tickets are
    filed (qa/ticket_delivery). An empty tracker URL leaves that tracker off: its payload files are still written.
    Tokens are read at run time from the environment variables named here, never stored."""

    path: str
    github_issues_url: str = ""  # https://api.github.com/repos/OWNER/REPO/issues
    github_token_env: str = "QA_ASSETS_GITHUB_TOKEN"
    jira_issue_url: str = ""  # https://SITE.atlassian.net/rest/api/3/issue
    jira_user_env: str = "QA_ASSETS_JIRA_USER"  # Jira Cloud: the account e-mail (basic auth with the API token)
    jira_token_env: str = "QA_ASSETS_JIRA_TOKEN"
    jira_project_key: str = "QA"
    review_confidence_below: float = 0.6  # and every S1: filed only after a person approves (escalation)
    delivery_attempts: int = 4
    delivery_backoff_seconds: float = 1.0  # doubles after each failed attempt
    delivery_timeout_seconds: float = 10.0

    def folder(self, *parts: str) -> Path:
        target = Path(self.path).resolve().joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def trackers(self) -> dict:
        """The configured trackers (name -> delivery.Tracker), with their tokens from the environment."""
        from qa_assets.lib.artifacts import delivery

        found = {}
        if self.github_issues_url:
            found["github"] = delivery.github_tracker(self.github_issues_url, os.environ.get(self.github_token_env))
        if self.jira_issue_url:
            found["jira"] = delivery.jira_tracker(self.jira_issue_url, os.environ.get(self.jira_token_env),
                                                  os.environ.get(self.jira_user_env))
        return found


def artifacts_resource(path: str | None = None) -> ArtifactsResource:
    """The artifacts folder and ticket-delivery settings from the environment (QA_ASSETS_ARTIFACTS,
    QA_ASSETS_GITHUB_ISSUES_URL, QA_ASSETS_JIRA_ISSUE_URL, QA_ASSETS_JIRA_PROJECT_KEY, QA_ASSETS_REVIEW_CONFIDENCE)."""
    return ArtifactsResource(
        path=path or default_artifacts(),
        github_issues_url=os.environ.get("QA_ASSETS_GITHUB_ISSUES_URL", ""),
        jira_issue_url=os.environ.get("QA_ASSETS_JIRA_ISSUE_URL", ""),
        jira_project_key=os.environ.get("QA_ASSETS_JIRA_PROJECT_KEY") or "QA",
        review_confidence_below=float(os.environ.get("QA_ASSETS_REVIEW_CONFIDENCE") or 0.6),
    )


class ModelStoreResource(dg.ConfigurableResource):
    """The MLflow tracking/registry store: a local SQLite file by default, or an MLflow server URI."""

    tracking_uri: str
    artifact_root: str = ""

    @property
    def artifact_location(self) -> str:
        if self.artifact_root:
            return self.artifact_root
        if self.tracking_uri.startswith("sqlite:///"):
            return str(Path(self.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlruns")
        return str(data_dir() / "mlruns")

    def champion(self, name: str):
        """(model, version info) behind name@champion, or None when nothing is registered yet."""
        from qa_assets.lib import model_registry

        if model_registry.get_version(name, tracking_uri=self.tracking_uri, alias="champion") is None:
            return None
        return model_registry.load_model(name, "champion", tracking_uri=self.tracking_uri)

    def register(self, name: str, model, *, params: dict, metrics: dict, feature_set_id: str | None,
                 training_window: tuple):
        from qa_assets.lib import model_registry

        return model_registry.log_and_register(
            name, model, params=params, metrics=metrics, feature_set_id=feature_set_id,
            training_window=training_window, tracking_uri=self.tracking_uri, artifact_root=self.artifact_location)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": WarehouseResource(path=default_warehouse()),
        "landing": LandingResource(
            path=default_landing(), settle_seconds=float(os.environ.get("QA_ASSETS_SETTLE_SECONDS", "30"))
        ),
        "artifacts": artifacts_resource(),
        "model_store": ModelStoreResource(
            tracking_uri=default_mlflow_uri(), artifact_root=os.environ.get("QA_ASSETS_MLFLOW_ARTIFACTS", "")
        ),
    }
