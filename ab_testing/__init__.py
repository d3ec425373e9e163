"""Simulated user population, assignment, event logs, statistics and reports of A/B experiments."""
