"""The Kubeflow pipelines of both loops: components and wiring over the floors below, no logic of their own."""

PIPELINE_NAMES = ("offline_evolution", "online_experiment", "two_loop")  # here, so the CLI names them without kfp
