"""Outer loop: picks candidates, runs simulated A/B experiments, decides, asks for approval."""
