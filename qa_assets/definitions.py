"""The code location: composes the stage folders, the shared resources and the executor; nothing else."""

from __future__ import annotations

import os

import dagster as dg

from qa_assets.defs import resources
from qa_assets.defs.stages import STAGE_MODULES, stage_definitions

# A process per step (isolation; every DuckDB step still waits for the one-slot `duckdb` pool, and the hours
# of `hourly_graph` run one at a time, see dagster.yaml). Batch runs (`qa-assets run`, tests) run in-process.
# The forkserver (one per run, 7-9 s to start) imports these once and every step process is forked from
# it, so a step no longer imports them itself. Measured per step of `hourly_graph` (2 cores): 1.0 s from
# launch to the step's first event + 1.7-2.7 s loading the code location, plus 1-2 s of MLflow/scikit-learn/
# matplotlib imports inside three steps, when only `qa_assets.defs.stages` (which imports nothing heavy)
# was preloaded; about 0.2 s + 0.15 s with this list. The list: the code location itself (stage modules,
# polars, duckdb, networkx), the instance storage every step opens first (~1 s of SQLAlchemy/alembic
# imports), and the libraries steps import lazily (model store, anomaly detector, graph picture).
# The forkserver only imports, it computes nothing, so no polars/OpenMP thread pool exists before a fork.
# A module that fails to import is skipped by the forkserver (the step then imports what it needs).
FORKSERVER_PRELOAD = [
    "qa_assets.definitions",
    "dagster._core.storage.sqlite_storage",
    "mlflow", "mlflow.sklearn", "skops.io", "sklearn.ensemble",
    "matplotlib.figure", "matplotlib.backends.backend_agg",
]
executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": FORKSERVER_PRELOAD}}}
)
if os.environ.get("QA_ASSETS_PROFILE") == "production":
    # Each step in its own Kubernetes job (deploy/production/dagster.yaml launches the runs themselves with
    # the K8sRunLauncher; other jobs spread over the cluster, the hours still go one at a time).
    from dagster_k8s import k8s_job_executor

    executor = k8s_job_executor.configured({"max_concurrent": 8})

defs = dg.Definitions.merge(
    *stage_definitions(),
    dg.Definitions(resources=resources.default_resources(), executor=executor),
)

__all__ = ["STAGE_MODULES", "defs"]
