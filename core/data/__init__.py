"""Task data: the three datasets, tokenizing and batching (datasets), and what a user hands in (inputs)."""
