"""Text to token ids: prompts in each family's chat format, features and padded batches, packing, micro-batch order."""
