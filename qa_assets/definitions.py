"""The code location: composes the stage folders, the shared resources and the executor; nothing else."""

from __future__ import annotations

import dagster as dg

from qa_assets.defs import resources
from qa_assets.defs.stages import STAGE_MODULES, stage_definitions

# Parallel partitions pay back a subprocess per step; forkserver with preloaded modules makes each step
# start in about a second instead of four (STACK.md). Batch runs (`qa-assets run`, tests) run in-process.
executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["qa_assets.defs.stages"]}}}
)

defs = dg.Definitions.merge(
    *stage_definitions(),
    dg.Definitions(resources=resources.default_resources(), executor=executor),
)

__all__ = ["STAGE_MODULES", "defs"]
