"""Developer tools: the side-by-side benchmark and the GPU readiness check."""
