"""Declarative automation for the stages downstream of the hours.

The unpartitioned assets after the hourly graph (artifacts, release gate, knowledge base, report) depend on
every hour of their hourly parents. `AutomationCondition.eager()` fits them: materialize when any parent
partition was updated, once the parents are no longer in progress. Its `~any_deps_missing()` part is left
out on purpose: hours before the telemetry began are missing for ever and must not hold the stage back.

Evaluated by Dagster's `default_automation_condition_sensor` (stopped until switched on in the UI under
Automation, or with `dagster sensor start default_automation_condition_sensor`).
"""

import dagster as dg

AFTER_ANY_HOUR = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("after any hour updates")
)
