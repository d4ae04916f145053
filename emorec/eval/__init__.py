"""Evaluation: label scoring (reference, kv_cache, packed), the decision rule, each dataset's metric, and
loading a trained adapter to predict."""
