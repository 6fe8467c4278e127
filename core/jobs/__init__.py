"""Background training jobs: store, submission, orchestration and backends (local, Slurm). Never imports torch."""
