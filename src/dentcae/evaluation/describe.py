"""What a result is measured on, as data (`data_description`, kept in summary.json) and as one
sentence (`describe`, in results.md and the tables): dataset, real or synthetic, landmarks, split,
labels (by hand, or with pseudo-labels), spacing, and training images that are one radiograph with a
test image."""
from ..data.dataset import pseudo_report


def data_description(prep, split="reg_test", samples=None, test_set=None):
    """What a result is measured on: dataset, real or synthetic, landmarks, split (and test set),
    labels, spacing, and training images that are one radiograph with a test image."""
    m = prep.meta
    n_images = len({s["image"] for s in samples}) if samples is not None else m.get("test_images")
    return {"dataset": m["dataset"], "synthetic": m["synthetic"], "landmarks": m["landmark_names"],
            "layout": m["layout"], "split": split if test_set is None else f"{split}, test set {test_set}",
            "test_samples": len(samples) if samples is not None else m["counts"][split],
            "test_images": n_images, "labelled_train_samples": m["counts"]["reg_train"],
            "leaks": {k: (len(v) if isinstance(v, list) else v) for k, v in m.get("leaks", {}).items()},
            "labelled_train_images": m.get("labelled_train_images"), "label_budget": m.get("label_budget"),
            "pretrain_images": m["counts"]["cae_train"], "spacing_mm": m.get("spacing_mm"),
            "input_size": m["input_size"], "pseudo_labels": _pseudo_labels(m.get("dataset_root"))}


def _pseudo_labels(root):
    """{round, real_labelled_images, pseudo_labelled_images} of a dataset `dentcae pseudo-label`
    wrote (its pseudo.json), else None: its 'labelled' images are not all labelled by hand."""
    report = pseudo_report(root)
    if report is None:
        return None
    return {"round": report.get("round", 1), "real_labelled_images": report["images"]["labelled"],
            "pseudo_labelled_images": report["pseudo_labelled_images"]}


def describe(d):
    """One sentence of data_description for results.md and the tables."""
    kind = "SYNTHETIC phantom" if d["synthetic"] else "real X-rays"
    budget = f" (label budget {d['label_budget']})" if d["label_budget"] else ""
    return (f"Data: {d['dataset']} ({kind}); {len(d['landmarks'])} landmarks per sample "
            f"({', '.join(d['landmarks'])}); trained on {_trained_on(d)}"
            f"{budget}, tested on {d['test_images']} images ({d['test_samples']} samples, split "
            f"{d['split']}); {d['pretrain_images']} samples for pre-training; spacing "
            f"{'/'.join(f'{s:g}' for s in d['spacing_mm'] or [])} mm/px; input {d['input_size']} px."
            + _leak_words(d.get("leaks") or {}))


def _trained_on(d):
    p = d.get("pseudo_labels")
    if not p:
        return f"{d['labelled_train_images']} labelled images"
    return (f"{p['real_labelled_images']} images labelled by hand and the pseudo-labels of "
            f"{p['pseudo_labelled_images']} more (round {p['round']})")


def _leak_words(leaks):
    if not leaks.get("images"):
        return ""
    if leaks["policy"] == "drop":
        return f" {leaks['images']} training images that are one radiograph with a test image were left out."
    return (f" {leaks['images']} training images ({leaks['labelled']} of them labelled) are the same radiograph "
            "as a test image (kept, as the standard split does).")
