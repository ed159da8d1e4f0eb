"""Which sample trains or tests what: seeded, grouped splits, pinned splits and the label budget.

    held = grouped_split(groups, holdout=0.2, seed=0)        # a set of held-out groups
    assign_splits(rows, prepare_cfg, label_budget=54)         # sets cae_/reg_ train/test per row

Rules: both halves of an image, and all images of one group, share every split. An image pinned
to a test set in landmarks.csv (`split: test`, `test1`, ...) is never trained on, not even by
pre-training; one pinned `train` is never tested. Unpinned images split as the config says (holdout
or k-fold). With a label budget of N, only N training images (whole groups, seeded) keep their
labels for fine-tuning; the other training images still pre-train, unlabelled, as in the paper's
few-label setting. Pins can put one group (one radiograph under two ids) on both sides: such
training images are `leaks` (prepare records them); `prepare.test_duplicates: drop` leaves them out
of every training split.
"""
import numpy as np

from .dataset import DataError, is_test
from .selection import RULES, fill_budget, image_descriptor, priority_order, read_selection


def grouped_split(groups, holdout, seed, folds=0, fold=0):
    """Groups -> set of held-out groups: a seeded shuffle, then enough whole groups for `holdout`
    of the items (or fold `fold` of `folds` round-robin folds). `groups` lists one group per item."""
    names = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    if folds and folds > 1:
        return {g for i, g in enumerate(names) if i % folds == fold}
    sizes = {g: groups.count(g) for g in names}
    target, held = max(1, round(holdout * len(groups))), set()
    for g in names:
        if sum(sizes[h] for h in held) >= target:
            break
        held.add(g)
    return held


def budget_groups(images_by_group, budget, seed):
    """Whole groups holding at most `budget` images: the longest run of groups, in one seeded order,
    that fits. Budgets nest (the 10 labelled images are among the 25, ...), for any group sizes; a
    group that does not fit ends the run (the budget is missed by less than that group's size)."""
    names = sorted(images_by_group)
    np.random.default_rng(seed).shuffle(names)
    _check_budget(images_by_group, budget)
    return set(fill_budget(names, {g: len(v) for g, v in images_by_group.items()}, budget))


def _check_budget(images_by_group, budget):
    total = sum(len(v) for v in images_by_group.values())
    if budget > total:
        raise DataError(f"dataset.label_budget is {budget}, but only {total} annotated training images "
                        "are there")


def selected_groups(images_by_group, budget, order, all_groups):
    """The groups a selection order (`dentcae select`) labels within `budget` images: its first
    groups that fit (nested, as budget_groups). A group it names before the budget is filled that
    holds no labelled training image here (a test image, an unannotated or unknown one) is an error
    naming it."""
    _check_budget(images_by_group, budget)
    kept = fill_budget(order, {g: len(images_by_group.get(g, ())) for g in order}, budget)
    for g in kept:
        if g not in images_by_group:
            why = "is in a test split, left out of training or unannotated" if g in all_groups else \
                "is not in this dataset"
            raise DataError(f"dataset.label_selection lists group {g!r}, which {why}: a selection must "
                            "name this dataset's annotated training images (`dentcae select`)")
    return set(kept)


def leaks(rows, tested):
    """The rows not in a test split whose group has a test row: one radiograph on both sides."""
    test_groups = {r["group"] for r in rows if tested(r)}
    return [r for r in rows if not tested(r) and r["group"] in test_groups]


def assign_splits(rows, pc, label_budget=None, order=None):
    """Set cae_train, cae_test, reg_train and reg_test (0/1) on every sample row, in place; returns
    the leaking rows (kept, or left out of training with prepare.test_duplicates: drop).
    Rows need: group, annotated, image and pin ("train", a test set, or ""). `order`: the groups to
    label first (a selection, data/selection.py) instead of the seeded random order of the budget."""
    free = [r for r in rows if not is_test(r["pin"])]
    cae_held = grouped_split([r["group"] for r in free], pc["cae_holdout"], pc["split_seed"])
    unpinned = [r for r in rows if r["annotated"] and not r["pin"]]
    reg_held = grouped_split([r["group"] for r in unpinned], pc["regressor_holdout"], pc["split_seed"] + 1,
                             pc["folds"], pc["fold"]) if unpinned else set()
    tested = {id(r): is_test(r["pin"]) or (not r["pin"] and r["group"] in reg_held) for r in rows}
    leaked = leaks(rows, lambda r: tested[id(r)])
    dropped = {id(r) for r in leaked} if pc["test_duplicates"] == "drop" else set()
    candidates = [r for r in rows if r["annotated"] and not tested[id(r)] and id(r) not in dropped]
    by_group = {}
    for r in candidates:
        by_group.setdefault(r["group"], set()).add(r["image"])
    labelled = set(by_group) if label_budget is None else \
        budget_groups(by_group, label_budget, pc["split_seed"] + 2) if order is None else \
        selected_groups(by_group, label_budget, list(order), {r["group"] for r in rows})
    for r in rows:
        trains = not is_test(r["pin"]) and id(r) not in dropped
        r["cae_test"] = int(trains and r["group"] in cae_held)
        r["cae_train"] = int(trains and r["group"] not in cae_held)
        r["reg_test"] = int(bool(r["annotated"]) and tested[id(r)])
        r["reg_train"] = int(bool(r["annotated"]) and not tested[id(r)] and id(r) not in dropped
                             and r["group"] in labelled)
    return leaked


def sample_roles(samples, leaks=(), relabel=()):
    """{image: "labelled" | "test" | "candidate"} of prepared-sample rows: test (in a test split or
    pinned to one: never to be read by anything that learns), labelled (its labels train), or a
    candidate (a training image without labels here: unannotated, or withheld by the label budget).
    A `leaks` image (one radiograph with a test image) is never a candidate; a `relabel` image
    (pseudo-labelled in an earlier round) is a candidate again."""
    roles = {}
    for s in samples:
        role = "test" if int(s["reg_test"]) or is_test(s["pin"]) else \
            "labelled" if int(s["reg_train"]) and s["image"] not in relabel else "candidate"
        if roles.get(s["image"]) not in ("test", "labelled"):
            roles[s["image"]] = role
    return {name: role for name, role in roles.items() if not (role == "candidate" and name in set(leaks))}


def prepared_roles(prep, relabel=()):
    """sample_roles of a run's Prepared data, its recorded leaks left out."""
    return sample_roles(prep.samples(), (prep.meta.get("leaks") or {}).get("images") or [], relabel)


def selection_order(selection, rows, pc, greys):
    """The label order of `dataset.label_selection`: None for `random` (budget_groups' seeded order),
    a `dentcae select` CSV's order, or a rule's (data/selection.py) over the annotated training
    images' descriptors. `greys`: {image name: grey pixels}."""
    if selection == "random":
        return None
    if selection not in RULES:
        return read_selection(selection)
    probe = [dict(r) for r in rows]
    assign_splits(probe, pc)
    images = {}
    for r in probe:
        if r["reg_train"]:
            images.setdefault(r["group"], set()).add(r["image"])
    feats = {g: [image_descriptor(greys[n]) for n in sorted(names)] for g, names in images.items()}
    return priority_order(feats, rule=selection)
