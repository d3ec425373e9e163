"""Model registry (states and audit log) and the HTTP recommendation server."""
