"""Prefect flows and the `facegate` entry point: wiring, retries, logging; no ML logic."""

from facegate.components.core.paths import configure_environment

configure_environment()  # embedded defaults and telemetry off before Prefect/MLflow are imported
