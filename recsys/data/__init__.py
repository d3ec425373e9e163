"""Datasets: sources, fetching, schema validation, statistics, splits and prepared data."""
