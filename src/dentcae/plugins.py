"""Every plug-in dentcae ships, registered by name (the one list; registry.py imports none of them).

A new head or pre-training: its module in heads/ or pretexts/, its config, and one line here
(docs/adding-a-head.md, docs/adding-a-pretraining.md). The package imports this module first, so
every `import dentcae...` finds them registered.
"""
from .heads import heatmap, regression
from .pretexts import augment, cae, denoise
from .registry import HEADS, PRETEXTS

for _name, _plugin in (("heatmap", heatmap), ("regression", regression)):
    if _name not in HEADS.names():
        HEADS.register(_name, _plugin)
for _name, _plugin in (("augment", augment), ("cae", cae), ("denoise", denoise)):
    if _name not in PRETEXTS.names():
        PRETEXTS.register(_name, _plugin)
