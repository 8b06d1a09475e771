"""The stage folders in flow order; each contributes assets, checks, jobs, sensors and schedules."""

from __future__ import annotations

import importlib

import dagster as dg

STAGE_MODULES: dict[str, list[str]] = {
    "telemetry": ["qa_assets.defs.telemetry.assets", "qa_assets.defs.telemetry.checks"],
    "signals": ["qa_assets.defs.signals.assets"],
    "defects": ["qa_assets.defs.defects.assets"],
    "root_causes": ["qa_assets.defs.root_causes.assets"],
    "qa_artifacts": ["qa_assets.defs.qa_artifacts.assets"],
    "governance": ["qa_assets.defs.governance.assets"],
    "automation": ["qa_assets.defs.automation.jobs", "qa_assets.defs.automation.sensors",
                   "qa_assets.defs.automation.schedules"],
}


def stage_definitions() -> list[dg.Definitions]:
    found = []
    for modules in STAGE_MODULES.values():
        loaded = [importlib.import_module(name) for name in modules]
        found.append(dg.Definitions(
            assets=dg.load_assets_from_modules(loaded),
            asset_checks=dg.load_asset_checks_from_modules(loaded),
            jobs=[j for m in loaded for j in getattr(m, "JOBS", [])],
            sensors=[s for m in loaded for s in getattr(m, "SENSORS", [])],
            schedules=[s for m in loaded for s in getattr(m, "SCHEDULES", [])],
        ))
    return found
