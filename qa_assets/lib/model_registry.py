"""The model registry: log, register, load, promote and roll back models in MLflow.

Plain functions over ``mlflow.MlflowClient`` with an explicit tracking URI: nothing here touches MLflow's
process-wide tracking URI or active run, so two stores (two tests, a backfill and the UI) never mix. The
URI is a local SQLite store (``sqlite:///<data_dir>/mlflow.db``, the default the resources build) or an
MLflow server (``http://host:5000``); both go through the same calls.

Aliases carry the lifecycle (DESIGN.md, governance):

- ``champion``: the version the pipeline loads. The first version ever registered under a name becomes
  champion; every later one becomes ``challenger`` and waits for ``promote`` (gated by a blocking asset
  check that calls ``compare_for_promotion``).
- ``promote`` moves ``champion`` to the challenger (or a given version) and writes the version it replaced
  into the new champion's ``qa_assets.previous_champion`` tag. ``rollback`` reads that tag and moves
  ``champion`` back; the rolled-back version keeps no alias (so a later plain ``promote`` cannot pick it
  again) and is tagged ``qa_assets.rolled_back_at``. Rolling back twice walks further back.

How models are stored (and why):

- scikit-learn estimators use MLflow's ``sklearn`` flavor in the ``skops`` format, which loads without
  unpickling arbitrary code. skops refuses types it does not know; the types a fitted estimator needs
  (``sklearn.tree._tree.Tree`` for IsolationForest and forests, ``TreePredictor`` for histogram boosting)
  are found by asking skops for the estimator's untrusted types and trusting them only when they belong
  to scikit-learn, NumPy or SciPy.
- Anything else (a detector object holding baselines and an IsolationForest, a pipeline with a custom
  step) is stored with the same flavor in MLflow's ``cloudpickle`` format. cloudpickle pickles classes
  that live in an importable module by reference, so loading needs only ``qa_assets`` installed - no
  network, no code copied into the artifact - and gives back the very object that was logged
  (``load_model`` returns it as is, not wrapped). A ``pyfunc.PythonModel`` wrapper would pickle the same
  way but hand back a wrapper, and it needs a class defined at import time, which would make importing
  this module import MLflow (1.8 s) - kept lazy here so the CLI's ``--help`` and sensors stay fast.

``pip_requirements`` are given explicitly: MLflow otherwise spends ~10 s inferring them per model.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from qa_assets.lib.governance import code_version

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT_PREFIX = "qa-assets/"  # one experiment per registered model: its training runs
TAG_PREFIX = "qa_assets."
TAG_FEATURE_SET = "qa_assets.feature_set_id"
TAG_TRAINING_WINDOW = "qa_assets.training_window"
TAG_CODE_VERSION = "qa_assets.code_version"
TAG_SERIALIZATION = "qa_assets.serialization"
TAG_PREVIOUS_CHAMPION = "qa_assets.previous_champion"
TAG_PROMOTED_AT = "qa_assets.promoted_at"
TAG_ROLLED_BACK_AT = "qa_assets.rolled_back_at"

# Registered-model names end up in MLflow filter strings and artifact paths: keep them plain.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# Types skops may trust when they come from these libraries (the estimator's own compiled parts).
_TRUSTED_ROOTS = ("sklearn.", "numpy.", "scipy.")
_MAX_PARAM_LENGTH = 6000  # MLflow's limit for a parameter value

LIST_COLUMNS: dict[str, pl.DataType] = {
    "name": pl.String,
    "version": pl.String,
    "aliases": pl.List(pl.String),
    "created": pl.Datetime("us"),
    "feature_set_id": pl.String,
    "training_window": pl.String,
    "metrics": pl.String,  # JSON object of the training run's metrics
    "run_id": pl.String,
    "previous_champion": pl.String,
    "serialization": pl.String,
}


class ModelRegistryError(RuntimeError):
    """A registry operation that cannot be done as asked; the message says what to do instead."""


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...] = ()
    feature_set_id: str | None = None
    tags: Mapping[str, str] | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# ------------------------------------------------------------------------------------------ store


def default_tracking_uri(data_dir: str | os.PathLike[str]) -> str:
    """The local store under a data folder: ``sqlite:///<data_dir>/mlflow.db``."""
    return f"sqlite:///{Path(data_dir).resolve() / 'mlflow.db'}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):])
    return None


def _client(tracking_uri: str) -> MlflowClient:
    if not tracking_uri:
        raise ModelRegistryError(
            "no MLflow tracking URI given: pass sqlite:///<data_dir>/mlflow.db or an MLflow server URL "
            "(QA_ASSETS_MLFLOW_URI)"
        )
    # Offline by default: MLflow otherwise looks up its telemetry server once per process.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sqlite_file = _sqlite_path(tracking_uri)
    if sqlite_file is not None:  # SQLite creates the file, not its folder
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _artifact_location(tracking_uri: str, artifact_root: str | os.PathLike[str] | None) -> str | None:
    """Where new experiments keep model files: the given root, else ``mlruns`` beside a SQLite file
    (never the current folder's ``./mlruns``), else the server's own default."""
    if artifact_root:
        root = str(artifact_root)
        if "://" in root or root.startswith("mlflow-artifacts:"):
            return root
        return Path(root).resolve().as_uri()
    sqlite_file = _sqlite_path(tracking_uri)
    if sqlite_file is not None:
        return (sqlite_file.resolve().parent / "mlruns").as_uri()
    return None


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment_name = EXPERIMENT_PREFIX + name
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None if artifact_location is None else f"{artifact_location.rstrip('/')}/{name}"
    return client.create_experiment(experiment_name, artifact_location=location)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ModelRegistryError(
            f"model name {name!r} is not usable: use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


# ---------------------------------------------------------------------------------------- logging


def _pinned(*distributions: str) -> list[str]:
    pins = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return pins


def _skops_trusted_types(model: object) -> list[str] | None:
    """The types skops must trust to load this estimator, or None when it holds a type from outside
    scikit-learn/NumPy/SciPy (a custom class): such a model is stored with cloudpickle instead."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    except Exception:  # skops cannot serialize it at all (lambdas, custom functions)
        return None
    if all(name.startswith(_TRUSTED_ROOTS) for name in untrusted):
        return list(untrusted)
    return None


def _window_text(training_window: object) -> str | None:
    """``(start, end)`` -> ``start/end`` in ISO 8601 (an interval); a string is kept as written."""
    if training_window is None:
        return None
    if isinstance(training_window, str):
        return training_window
    if isinstance(training_window, tuple | list) and len(training_window) == 2:
        start, end = training_window
        as_text = [v.isoformat() if isinstance(v, datetime) else str(v) for v in (start, end)]
        return "/".join(as_text)
    raise ModelRegistryError(
        f"training_window {training_window!r} must be (start, end) or an ISO 8601 interval string"
    )


def _example_frame(input_example: object) -> object:
    if isinstance(input_example, pl.DataFrame):
        return input_example.to_pandas()
    return input_example


def log_and_register(
    name: str,
    model: object,
    *,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    feature_set_id: str | None,
    training_window: tuple[datetime, datetime] | str | None,
    tracking_uri: str,
    artifact_root: str | os.PathLike[str] | None = None,
    input_example: object = None,
) -> ModelVersionInfo:
    """Log ``model`` with its training run (params, metrics, feature set, window) and register it as a
    new version of ``name``: ``champion`` when it is the first version, else ``challenger``."""
    _check_name(name)
    bad_metrics = {k: v for k, v in metrics.items() if not isinstance(v, numbers.Real) or isinstance(v, bool)}
    if bad_metrics:
        raise ModelRegistryError(f"metrics of model {name!r} must be numbers; got {bad_metrics!r}")
    window = _window_text(training_window)
    client = _client(tracking_uri)
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
    from mlflow.models import Model
    import mlflow.sklearn

    experiment_id = _experiment_id(client, name, _artifact_location(tracking_uri, artifact_root))
    version_code = code_version()
    run_tags = {
        key: value
        for key, value in {
            TAG_FEATURE_SET: feature_set_id,
            TAG_TRAINING_WINDOW: window,
            TAG_CODE_VERSION: version_code,
            "mlflow.runName": f"train-{name}",
        }.items()
        if value
    }
    run = client.create_run(experiment_id, tags=run_tags)
    run_id = run.info.run_id
    logged, finalized = None, False
    try:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(str(k), float(v), now_ms, 0) for k, v in metrics.items()],
            params=[Param(str(k), _param_text(v)) for k, v in params.items()],
        )
        trusted = _skops_trusted_types(model) if _is_sklearn_estimator(model) else None
        serialization = mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS if trusted is not None else (
            mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
        )
        requirements = _pinned("mlflow", "scikit-learn", "numpy", "scipy") + (
            _pinned("skops") if trusted is not None else _pinned("cloudpickle")
        )
        logged = client.create_logged_model(
            experiment_id,
            name=name,
            source_run_id=run_id,
            params={str(k): _param_text(v) for k, v in params.items()},
            tags={TAG_SERIALIZATION: serialization, **({TAG_FEATURE_SET: feature_set_id} if feature_set_id else {})},
        )
        with tempfile.TemporaryDirectory(prefix="qa-assets-model-") as tmp:
            local_path = Path(tmp) / "model"
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_id=logged.model_id,
                model_uuid=logged.model_id,
            )
            # Choosing cloudpickle for an object skops cannot hold is deliberate (module docstring);
            # MLflow's generic warning about it would repeat on every retraining.
            sklearn_logger = logging.getLogger("mlflow.sklearn")
            previous_level = sklearn_logger.level
            sklearn_logger.setLevel(logging.ERROR)
            try:
                mlflow.sklearn.save_model(
                    model,
                    str(local_path),
                    mlflow_model=mlflow_model,
                    serialization_format=serialization,
                    skops_trusted_types=trusted,
                    pip_requirements=requirements,
                    input_example=_example_frame(input_example),
                )
            finally:
                sklearn_logger.setLevel(previous_level)
            client.log_model_artifacts(logged.model_id, str(local_path))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        finalized = True
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        existing = _versions_of(client, name)
        if not existing:
            try:
                client.create_registered_model(name, description="registered by qa-assets")
            except Exception as exc:  # created concurrently by another run: fine
                if "already exists" not in str(exc).lower():
                    raise
        version_tags = {
            key: value
            for key, value in {
                TAG_FEATURE_SET: feature_set_id,
                TAG_TRAINING_WINDOW: window,
                TAG_CODE_VERSION: version_code,
                TAG_SERIALIZATION: serialization,
            }.items()
            if value
        }
        # The artifact location, not `models:/<model_id>`: MLflow's SQL registry resolves that form
        # through the process-wide tracking URI (a stray ./mlflow.db), not this client's store.
        created = client.create_model_version(
            name, source=logged.artifact_location, run_id=run_id, tags=version_tags,
            model_id=logged.model_id,
        )
        alias = CHAMPION if not existing else CHALLENGER
        client.set_registered_model_alias(name, alias, created.version)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        # Leave a visible failed run (and model) rather than a run that looks still in progress.
        if logged is not None and not finalized:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        client.set_terminated(run_id, "FAILED")
        raise
    return ModelVersionInfo(
        name=name, version=str(created.version), run_id=run_id, aliases=(alias,),
        feature_set_id=feature_set_id, tags=version_tags,
    )


def _param_text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:_MAX_PARAM_LENGTH]


def _is_sklearn_estimator(model: object) -> bool:
    from sklearn.base import BaseEstimator

    return isinstance(model, BaseEstimator)


# ---------------------------------------------------------------------------------------- reading


def _versions_of(client: MlflowClient, name: str) -> list[ModelVersion]:
    """All versions of one registered model (none when it does not exist)."""
    # The name is checked against _MODEL_NAME (no quotes), so it is safe inside MLflow's filter string.
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _info(version: ModelVersion) -> ModelVersionInfo:
    tags = dict(version.tags or {})
    return ModelVersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        aliases=tuple(sorted(version.aliases or ())),
        feature_set_id=tags.get(TAG_FEATURE_SET) or None,
        tags=tags,
    )


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if _is_not_found(exc) or "alias" in str(exc).lower():
            return None
        raise


def get_version(name: str, *, tracking_uri: str, alias: str | None = None,
                version: str | int | None = None) -> ModelVersionInfo | None:
    """The version behind an alias or a number, or None when there is none."""
    _check_name(name)
    client = _client(tracking_uri)
    if version is not None:
        try:
            return _info(client.get_model_version(name, str(version)))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise
    found = _by_alias(client, name, alias or CHAMPION)
    return None if found is None else _info(found)


def load_model(name: str, alias: str = CHAMPION, *, tracking_uri: str) -> tuple[object, ModelVersionInfo]:
    """The model behind ``name@alias`` (the object that was logged) and its version."""
    _check_name(name)
    client = _client(tracking_uri)
    found = _by_alias(client, name, alias)
    if found is None:
        versions = _versions_of(client, name)
        if not versions:
            raise ModelRegistryError(
                f"no model {name!r} is registered in {tracking_uri}: train it first (the retraining job "
                "registers the first version as champion), or point QA_ASSETS_MLFLOW_URI at the store "
                "that holds it"
            )
        numbers = ", ".join(sorted((str(v.version) for v in versions), key=int))
        raise ModelRegistryError(
            f"model {name!r} has no version with alias {alias!r} (versions: {numbers}); "
            f"promote one with `qa-assets model promote {name} --version N`"
        )
    import mlflow.artifacts

    download_uri = client.get_model_version_download_uri(name, str(found.version))
    local_folder = _local_folder(download_uri)
    if local_folder is not None:  # a local store: read the files where they are
        return _load_local(str(local_folder)), _info(found)
    with tempfile.TemporaryDirectory(prefix="qa-assets-load-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=download_uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        return _load_local(local), _info(found)


def _local_folder(uri: str) -> Path | None:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # a plain path
        path = Path(uri)
    else:
        return None
    return path if path.is_dir() else None


def _load_local(folder: str) -> object:
    import mlflow.sklearn
    from mlflow.models import Model

    if "sklearn" in Model.load(folder).flavors:
        return mlflow.sklearn.load_model(folder)
    import mlflow.pyfunc  # a version registered by other tooling: its generic pyfunc form

    return mlflow.pyfunc.load_model(folder)


def list_models(tracking_uri: str) -> pl.DataFrame:
    """Every registered version: name, version, aliases, created, feature set, metrics (JSON), run."""
    client = _client(tracking_uri)
    rows: list[dict[str, object]] = []
    token = None
    versions: list[ModelVersion] = []
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    # Version searches do not carry aliases; the registered model holds them (alias -> version).
    aliases_of: dict[tuple[str, str], list[str]] = {}
    for name in sorted({v.name for v in versions}):
        for alias, number in (client.get_registered_model(name).aliases or {}).items():
            aliases_of.setdefault((name, str(number)), []).append(alias)
    metrics_of: dict[str, dict[str, float]] = {}
    for version in versions:  # one run lookup per version: registries hold tens, not millions
        tags = dict(version.tags or {})
        run_metrics: dict[str, float] = {}
        if version.run_id:
            if version.run_id not in metrics_of:
                try:
                    metrics_of[version.run_id] = dict(client.get_run(version.run_id).data.metrics)
                except Exception as exc:
                    if not _is_not_found(exc):
                        raise
                    metrics_of[version.run_id] = {}
            run_metrics = metrics_of[version.run_id]
        rows.append({
            "name": version.name,
            "version": str(version.version),
            "aliases": sorted(aliases_of.get((version.name, str(version.version)), [])),
            "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).replace(tzinfo=None),
            "feature_set_id": tags.get(TAG_FEATURE_SET) or None,
            "training_window": tags.get(TAG_TRAINING_WINDOW) or None,
            "metrics": json.dumps({k: _json_number(v) for k, v in sorted(run_metrics.items())}),
            "run_id": version.run_id,
            "previous_champion": tags.get(TAG_PREVIOUS_CHAMPION) or None,
            "serialization": tags.get(TAG_SERIALIZATION) or None,
        })
    frame = pl.DataFrame(rows, schema=LIST_COLUMNS)
    return frame.sort("name", pl.col("version").cast(pl.Int64, strict=False))


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def run_metrics(name: str, version: str, *, tracking_uri: str) -> dict[str, float]:
    """The metrics of the training run that produced a version (for ``compare_for_promotion``)."""
    client = _client(tracking_uri)
    found = client.get_model_version(name, str(version))
    if not found.run_id:
        return {}
    return dict(client.get_run(found.run_id).data.metrics)


# ------------------------------------------------------------------------------ promotion, rollback


def promote(name: str, tracking_uri: str, version: str | int | None = None) -> ModelVersionInfo:
    """Make the challenger (or ``version``) champion; the replaced champion is recorded on the new one."""
    _check_name(name)
    client = _client(tracking_uri)
    if version is None:
        target = _by_alias(client, name, CHALLENGER)
        if target is None:
            raise ModelRegistryError(
                f"model {name!r} has no challenger to promote: train a new version first, "
                f"or name one with `qa-assets model promote {name} --version N`"
            )
    else:
        try:
            target = client.get_model_version(name, str(version))
        except Exception as exc:
            if not _is_not_found(exc):
                raise
            numbers = ", ".join(sorted((str(v.version) for v in _versions_of(client, name)), key=int))
            raise ModelRegistryError(
                f"model {name!r} has no version {version} (versions: {numbers or 'none'})"
            ) from None
    current = _by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == str(target.version):
        return _info(target)  # already champion: nothing to move, nothing to record
    if current is not None:
        client.set_model_version_tag(name, str(target.version), TAG_PREVIOUS_CHAMPION, str(current.version))
    client.set_model_version_tag(name, str(target.version), TAG_PROMOTED_AT, _now_text())
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    challenger = _by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(target.version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return _info(client.get_model_version(name, str(target.version)))


def rollback(name: str, tracking_uri: str) -> ModelVersionInfo:
    """Move ``champion`` back to the version it replaced; returns that (now champion) version."""
    _check_name(name)
    client = _client(tracking_uri)
    current = _by_alias(client, name, CHAMPION)
    if current is None:
        raise ModelRegistryError(f"model {name!r} has no champion to roll back (nothing registered or promoted)")
    previous = (current.tags or {}).get(TAG_PREVIOUS_CHAMPION)
    if not previous:
        raise ModelRegistryError(
            f"model {name!r}: champion version {current.version} replaced no earlier champion, so there is "
            f"nothing to roll back to; promote another version with `qa-assets model promote {name} --version N`"
        )
    try:
        client.get_model_version(name, previous)
    except Exception as exc:
        if not _is_not_found(exc):
            raise
        raise ModelRegistryError(
            f"model {name!r}: the previous champion, version {previous}, no longer exists; "
            f"promote another version with `qa-assets model promote {name} --version N`"
        ) from None
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, str(current.version), TAG_ROLLED_BACK_AT, _now_text())
    # The rolled-back version keeps no alias, so a plain `promote` cannot bring it back by accident.
    challenger = _by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(current.version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return _info(client.get_model_version(name, previous))


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def compare_for_promotion(
    champion_metrics: Mapping[str, float] | None,
    challenger_metrics: Mapping[str, float] | None,
    metric: str,
    higher_is_better: bool = True,
    tolerance: float = 0.0,
) -> tuple[bool, str]:
    """Whether the challenger may replace the champion on ``metric``.

    The challenger passes when it is no worse than the champion by more than ``tolerance`` (in the
    metric's own units). Without a champion value there is nothing to lose: it passes. A challenger
    without the metric, or with a value that is not a finite number, fails.
    """
    if tolerance < 0 or math.isnan(tolerance):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    challenger_value = _metric_value(challenger_metrics, metric)
    if challenger_value is None:
        return False, f"challenger has no finite {metric!r} metric; it cannot be compared"
    champion_value = _metric_value(champion_metrics, metric)
    if champion_value is None:
        return True, f"no champion {metric!r} to compare with; challenger {metric}={challenger_value:.6g}"
    delta = challenger_value - champion_value if higher_is_better else champion_value - challenger_value
    direction = "higher" if higher_is_better else "lower"
    summary = (
        f"challenger {metric}={challenger_value:.6g} vs champion {champion_value:.6g} "
        f"({direction} is better, tolerance {tolerance:.6g})"
    )
    if delta >= -tolerance:
        return True, f"{summary}: not worse beyond tolerance"
    return False, f"{summary}: worse by {-delta:.6g}"


def _metric_value(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    if not metrics or metric not in metrics:
        return None
    value = metrics[metric]
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
