"""Kubeflow pipeline of lakeguard and its compiled IR (``lakeguard_pipeline.yaml``)."""
