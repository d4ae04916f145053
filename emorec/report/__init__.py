"""Reports on finished runs: tables with published numbers beside them, plots, and the scaling analysis."""
