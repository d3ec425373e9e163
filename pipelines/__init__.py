"""The Beam data pipeline and the Kubeflow pipelines of both loops."""
