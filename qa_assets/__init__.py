"""qa-assets: production telemetry in, QA outcomes out (a Dagster code location)."""
