"""The code location: composes the stage folders, the shared resources and the executor; nothing else."""

from __future__ import annotations

import os

import dagster as dg

from qa_assets.defs import resources
from qa_assets.defs.stages import STAGE_MODULES, stage_definitions

# Parallel partitions pay back a subprocess per step; forkserver with preloaded modules makes each step
# start in about a second instead of four (STACK.md). Batch runs (`qa-assets run`, tests) run in-process.
executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["qa_assets.defs.stages"]}}}
)
if os.environ.get("QA_ASSETS_PROFILE") == "production":
    # Each step in its own Kubernetes job: partitions of a backfill spread over the cluster
    # (deploy/production/dagster.yaml launches the runs themselves with the K8sRunLauncher).
    from dagster_k8s import k8s_job_executor

    executor = k8s_job_executor.configured({"max_concurrent": 8})

defs = dg.Definitions.merge(
    *stage_definitions(),
    dg.Definitions(resources=resources.default_resources(), executor=executor),
)

__all__ = ["STAGE_MODULES", "defs"]
