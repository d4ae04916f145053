"""Benchmarks that print figures: one model's training and evaluation speed (model), a sweep's makespan
(cluster), the packed-attention isolation check, and profiler summaries."""
