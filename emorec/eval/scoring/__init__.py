"""Scoring every label of a prompt: reference (one forward per pair), kv_cache (the prompt once, labels
from its cache) and packed (prompts and label branches packed in rows)."""
