"""Splits: grouped holdout and k-fold keep a group (one radiograph under two ids) on one side; the
challenge's pinned test sets; leaks between pinned training and test images, kept or dropped."""
import pytest

from dentcae.data.splits import assign_splits, grouped_split

PC = {"cae_holdout": 0.1, "regressor_holdout": 0.25, "split_seed": 0, "folds": 0, "fold": 0,
      "test_duplicates": "keep"}


def _rows(pins):
    """One sample per image; images i and i + 1 (i even) are one radiograph (same group)."""
    return [{"index": i, "image": f"{i:03d}.png", "group": f"g{i // 2}", "annotated": 1, "pin": pin}
            for i, pin in enumerate(pins)]


@pytest.mark.parametrize("seed", range(20))
def test_a_duplicate_pair_never_straddles_a_seeded_split(seed):
    rows = _rows([""] * 40)
    assign_splits(rows, {**PC, "split_seed": seed})
    for a, b in zip(rows[::2], rows[1::2]):
        assert all(a[k] == b[k] for k in ("cae_train", "cae_test", "reg_train", "reg_test")), (a, b)
    folds = [grouped_split([r["group"] for r in rows], 0.2, seed, folds=5, fold=f) for f in range(5)]
    assert set().union(*folds) == {r["group"] for r in rows} and sum(map(len, folds)) == 20


def test_pinned_test_sets_are_never_trained_on_and_leaks_are_reported_or_dropped():
    pins = ["train", "test1"] + ["train", "train"] * 4 + ["test2", "test2"] + ["test1", "test1"]
    rows = _rows(pins)                               # group g0: a training image and a test1 image
    leaked = assign_splits(rows, PC)
    assert [r["image"] for r in leaked] == ["000.png"]
    test = {r["image"] for r in rows if r["reg_test"]}
    assert test == {"001.png", "010.png", "011.png", "012.png", "013.png"}
    assert not any(r["cae_train"] or r["cae_test"] or r["reg_train"] for r in rows if r["image"] in test)
    assert rows[0]["reg_train"] == 1                 # the standard split keeps the leaking image
    rows = _rows(pins)
    assert [r["image"] for r in assign_splits(rows, {**PC, "test_duplicates": "drop"})] == ["000.png"]
    assert rows[0]["reg_train"] == rows[0]["cae_train"] == rows[0]["cae_test"] == 0
    assert sum(r["reg_train"] for r in rows) == 8


def test_a_label_budget_takes_whole_groups():
    rows = _rows([""] * 40)
    assign_splits(rows, PC, label_budget=11)
    kept = [r for r in rows if r["reg_train"]]
    assert len(kept) == 10 and all(sum(r["group"] == k["group"] for r in kept) == 2 for k in kept)


@pytest.mark.parametrize("seed", range(8))
def test_label_budgets_nest_for_any_group_sizes(seed):
    """The 10 labelled images are among the 25, the 25 among the 54: a label-efficiency curve adds
    labels, it never swaps them, even when groups of 1 and 2 images mix."""
    rows = [{"index": i, "image": f"{i:03d}.png", "group": f"g{i // 2}" if i < 90 else f"s{i}", "annotated": 1,
             "pin": "test" if i >= 100 else "train"} for i in range(110)]       # 45 pairs, 10 single images
    kept = {}
    for budget in (9, 10, 25, 54, 100):
        for r in rows:
            r.pop("reg_train", None)
        assign_splits(rows, {**PC, "split_seed": seed}, label_budget=budget)
        kept[budget] = {r["image"] for r in rows if r["reg_train"]}
        assert budget - 2 < len(kept[budget]) <= budget and not any(r["reg_train"] for r in rows[100:])
    assert kept[9] <= kept[10] <= kept[25] <= kept[54] <= kept[100]


def test_a_process_that_finds_the_cache_entry_being_built_waits_and_reuses_it(phantom, tmp_path):
    """While one process builds a prepared-data entry (its lock held here), a second waits for it
    instead of failing (a table's jobs on a cold cache), then builds or reuses it."""
    import shutil
    import subprocess
    import sys
    import time
    from conftest import ROOT, tiny_config
    from dentcae.config import load_config
    from dentcae.data.prepare import prepare
    from dentcae.runtime.locks import exclusive
    path = tiny_config(tmp_path, phantom, name="cold")
    entry = prepare(load_config(path), log=lambda *a: None).dir
    shutil.rmtree(entry)
    code = ("from dentcae.config import load_config; from dentcae.data.prepare import prepare; "
            f"print(prepare(load_config({str(path)!r}), log=lambda *a: None).dir)")
    with exclusive(entry.parent / f".{entry.name}.lock", "entry", remove=True):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert proc.poll() is None                      # waiting, not failed
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.strip() == str(entry), err[-2000:]
    assert "waiting for prepared-data cache entry" in err


def test_augmenting_a_dataset_without_labelled_images_prepares_it_for_pre_training(tmp_path, quiet):
    from conftest import tiny
    from dentcae.data.phantom import write_phantom
    from dentcae.data.prepare import prepare
    root = write_phantom(tmp_path / "unlabelled", images=8, annotated=0, seed=1)
    cfg = tiny(tmp_path, root, stage="pretrain", prepare={"augment": {"copies": 2}})
    prep = prepare(cfg, log=quiet)
    assert prep.meta["counts"]["reg_train"] == 0 and prep.meta["counts"]["cae_train"] > 0
    assert "reg_train_aug" not in prep.meta["counts"]
