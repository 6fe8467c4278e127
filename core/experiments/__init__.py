"""The reproduction study: plans of rows x seeds, resumable, claims beside results."""
