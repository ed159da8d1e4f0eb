"""Scoring in millimetres: metrics (pure functions of predictions and truth), figures (drawn from
arrays, no nets) and evaluate (a checkpoint on a split: predictions.csv, summary.json, results.md)."""
