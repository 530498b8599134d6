"""The embedded default model bundle (installed as vssflow_cli.weights; see models.default_model_dir)."""
