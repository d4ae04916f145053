"""Training one run: the recipe, the DeepSpeed engine, batching and prefetch, checkpoints (with RNG state),
throughput, TensorBoard and adapter export."""
