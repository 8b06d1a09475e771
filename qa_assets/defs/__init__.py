"""Dagster definitions, one folder per stage; the domain logic they call lives in qa_assets.lib."""
