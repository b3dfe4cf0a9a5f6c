"""A ready-to-run demo project over generated synthetic data."""

from __future__ import annotations

from pathlib import Path

import yaml

from segmint.config import PROJECT_FILE, parse_project

# Generated file -> (source name, canonical kind, extra source settings).
DEMO_SOURCES = {
    "customers": ("crm", "customers", {"impute": {"age": "median"}}),
    "products": ("catalogue", "products", {}),
    "orders": ("orders", "orders", {}),
    "order_items": ("order_items", "order_items", {}),
    "events": ("web_events", "events", {}),
    "consents": ("consents", "consents", {}),
}


def write_demo_project(data_files: dict[str, Path], folder: Path) -> Path:
    """Write a ``segmint.yaml`` in ``folder`` with one source per generated file."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for key, (name, kind, extra) in DEMO_SOURCES.items():
        if key not in data_files:
            continue
        path = Path(data_files[key]).resolve()
        try:
            relative = path.relative_to(folder.resolve())
        except ValueError:
            relative = path
        sources.append({"name": name, "kind": kind, "path": str(relative), **extra})
    text = "# Demo project written by `segmint demo`.\n" + yaml.safe_dump(
        {"version": 1, "warehouse": "./segmint.duckdb", "sources": sources}, sort_keys=False
    )
    parse_project(text)  # the demo must always be a valid project
    target = folder / PROJECT_FILE
    target.write_text(text, encoding="utf-8")
    return target
