"""Tables from configs: spec (what a table runs, validated), jobs (one run: train or reuse, score),
schedule (the jobs in order on an engine), pseudo_arms, run (the table), render and curve (numbers,
Markdown, CSV, figures)."""
