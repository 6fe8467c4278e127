"""Losses: task losses chosen by name, SMART regularisation, task loss weighting. Never imports the model."""
