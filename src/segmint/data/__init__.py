"""Canonical data model, ingestion, validation, quality and synthetic data."""
