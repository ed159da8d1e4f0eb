"""What the docs list matches what the code has: every verb of the CLI in the lists of verbs, every
registered pre-training in the lists of pre-trainings, every recipe loading with its expected-results
page beside it (pure: reads files and the parser, trains nothing)."""
import re

from conftest import ROOT
from dentcae.cli import build_parser
from dentcae.config import load_config
from dentcae.registry import PRETEXTS


def _verbs():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def test_every_verb_is_in_each_list_of_verbs():
    verbs = _verbs()
    assert {"select", "pseudo-label", "predict", "export", "table"} <= verbs
    arch = (ROOT / "docs/architecture.md").read_text()
    listed = re.search(r"cli\.py\s+one verb per stage: ([^\n]+\n[^\n]+)", arch).group(1)
    assert {v.strip(" ,\n") for v in re.split(r",\s*", listed.replace("\n", " ")) if v.strip()} >= verbs
    pipeline = (ROOT / "docs/pipeline.md").read_text()
    assert not [v for v in verbs if f"`dentcae {v}" not in pipeline and v not in ("doctor",)], \
        [v for v in verbs if f"`dentcae {v}" not in pipeline]
    cli_doc = (ROOT / "src/dentcae/cli.py").read_text().split('"""')[1]
    assert not [v for v in verbs if f"dentcae {v}" not in cli_doc]


def test_every_pre_training_is_in_each_list_of_pre_trainings():
    names = set(PRETEXTS.names())
    arch = (ROOT / "docs/architecture.md").read_text()
    line = next(l for l in arch.splitlines() if l.strip().startswith("pretexts/"))
    assert all(n in line for n in names), line
    pretraining = (ROOT / "docs/pretraining.md").read_text()
    assert all(f"model.pretext: {n}`" in pretraining for n in names)


def test_every_recipe_loads_and_has_its_expected_results_beside_it():
    recipes = sorted(p for p in (ROOT / "configs/recipes").glob("*.yaml") if not p.name.endswith("views.yaml"))
    assert {p.stem for p in recipes} == {"detector", "detector_unlabelled", "paper"}
    for path in recipes:
        cfg = load_config(path)
        assert cfg["name"] and path.with_suffix(".md").is_file(), path
    detector = load_config(ROOT / "configs/recipes/detector.yaml")
    default = load_config(ROOT / "configs/base.yaml", ["model.head=heatmap"])
    assert detector["model"]["refine"]["loss"] == default["model"]["refine"]["loss"] == "inside"
