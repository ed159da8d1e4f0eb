"""Scoring in millimetres: metrics (pure functions of predictions and truth), annotators and
cephalometry, and evaluate (a checkpoint on a split: predictions.csv, summary.json, results.md; its
figures drawn by dentcae/figures.py)."""
