"""Log template mining (`miner`) and the registry that keeps template ids stable (`registry`).

The calls other stages need:

- `mine_templates(messages)`: per message `template_id`, `template` (`<*>` for variables), `params`.
- `mine_log(lines, log_format)`: the same for whole log lines, header fields split off by `log_format`.
- `summarize_partition(events, ...)` then `update_registry(registry, templates, ...)`: match a partition
  against the registry (ids stay stable, generalizations are recorded in the lineage), and
  `relabel_events(events, update.assignments)` to give the partition's lines the registry's ids.
- `resolve_template_ids(ids, lineage)`: old ids to the templates that replaced them.
"""

from qa_assets.lib.templates.miner import (
    DEFAULT_SETTINGS,
    VARIABLE,
    LogFileError,
    MinerSettings,
    mine_log,
    mine_templates,
    read_log_lines,
    template_id_of,
)
from qa_assets.lib.templates.registry import (
    LINEAGE_SCHEMA,
    REGISTRY_SCHEMA,
    RegistryInputError,
    RegistryUpdate,
    empty_lineage,
    empty_registry,
    relabel_events,
    resolve_template_ids,
    summarize_partition,
    update_registry,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "LINEAGE_SCHEMA",
    "REGISTRY_SCHEMA",
    "VARIABLE",
    "LogFileError",
    "MinerSettings",
    "RegistryInputError",
    "RegistryUpdate",
    "empty_lineage",
    "empty_registry",
    "mine_log",
    "mine_templates",
    "read_log_lines",
    "relabel_events",
    "resolve_template_ids",
    "summarize_partition",
    "template_id_of",
    "update_registry",
]
