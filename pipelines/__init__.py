"""The Beam data pipeline and the Kubeflow pipelines of both loops."""

PIPELINE_NAMES = ("offline_evolution", "online_experiment", "two_loop")  # here, so the CLI names them without kfp
