"""Evaluation commands: measure the project's methods on the shared evaluation data."""
