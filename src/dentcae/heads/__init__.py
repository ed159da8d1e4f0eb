"""Landmark heads: one module (or package) each, registered in plugins.py. A head builds its net on
the AlexNet encoder, says what it is trained against (targets) and how its outputs become landmarks
(decode). docs/adding-a-head.md lists its hooks."""
