"""The embedded default model bundle (installed as vssflow_cli.weights; see bundle.default_model_dir)."""
