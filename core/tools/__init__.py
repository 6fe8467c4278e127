"""Tools that put the layers together: the side-by-side benchmark (``bench``), the GPU
readiness check (``gpu_check``), publishing and exporting a checkpoint (``export``: our
format, 🤗 transformers, sentence-transformers) and the dev metrics of each precision
(``quantize``)."""
