"""minBERT's library: packages by concept (config, data, model, losses, training, evaluation,
serving, jobs, experiments, tools) over leaf modules (errors, tasks, paths, atomic, settings,
train_log). Who may import whom is the layer table of docs/layout.md, enforced by
tests/test_layout.py. Nothing here imports analysis/, app/ or Streamlit."""
