"""Tables from configs: spec (what a table runs, validated), run (train and evaluate every arm),
render (numbers, Markdown, CSV, figures)."""
