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
    """Where generated tests, probes, tickets and reports are written, one file per item."""

    path: str

    def folder(self, *parts: str) -> Path:
        target = Path(self.path).resolve().joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        return target


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
        "artifacts": ArtifactsResource(path=default_artifacts()),
        "model_store": ModelStoreResource(
            tracking_uri=default_mlflow_uri(), artifact_root=os.environ.get("QA_ASSETS_MLFLOW_ARTIFACTS", "")
        ),
    }
