"""The rows of a swept table (spec.py `sweep`) as a curve: each row names its arm as the table
writes it (`scratch`), the swept value and, for a label-budget sweep, the labelled images it had;
a label-budget sweep also draws <stem>.png, MRE and SDR@2 mm against the labels, a line per arm,
the mean-shape baseline per budget and the annotators' own disagreement where the data has two.

    curve_rows(result, arms, data_by_arm, baselines_by_arm)
    plot_curve(stem, table, result, protocols)
"""
import numpy as np

from ..figures import plot_label_curve

BUDGET = "dataset.label_budget"


def curve_rows(result, arms, data_by_arm, baselines_by_arm):
    """Rows of a swept table get `arm` (the table's key), `run_key` (the arm's run, `scratch_25`),
    `sweep` {key: value}, and with a label-budget sweep `label_budget` (labelled images; `all` is
    the number the run had) and the mean-shape baseline of that budget. Others are left as they are."""
    for row in result["rows"]:
        arm = arms[row["arm"]]
        if "base_key" not in arm:
            continue
        key, value = row["arm"], arm["sweep_value"]
        row.update(arm=arm["base_key"], run_key=key, sweep={result["sweep_key"]: value})
        row["baseline_mean_shape_mre_mm"] = float(np.mean(baselines_by_arm[key]))
        if result["sweep_key"] == BUDGET:
            row["label_budget"] = value if value is not None else data_by_arm[key]["labelled_train_images"]
    return result


def _inter_observer(protocols):
    """{"label", "mre_mm", "sdr_2mm"} of the first pair of annotators over all test samples (the one
    test set when there is one), or None."""
    for by_set in protocols.values():
        by_set = by_set or {}
        scores = by_set.get("all") or (next(iter(by_set.values())) if len(by_set) == 1 else {})
        for pair, b in (scores.get("inter_observer") or {}).items():
            return {"label": f"{pair.replace('_vs_', ' vs ')} annotator ({b['n_samples']} test images)",
                    "mre_mm": b["mre_mm"], "sdr_2mm": b["sdr"]["2mm"]}
    return None


def curve_lines(rows):
    """{arm: {labels, mre_mm, sdr_2mm, sd_mre_mm}} of a label-budget sweep, budgets ascending."""
    lines = {}
    for row in sorted(rows, key=lambda r: r["label_budget"]):
        line = lines.setdefault(row["arm"], {"labels": [], "mre_mm": [], "sdr_2mm": [], "sd_mre_mm": []})
        per = row["ours_mre_per_repeat"]
        line["labels"].append(row["label_budget"])
        line["mre_mm"].append(row["ours_mre_mm"])
        line["sdr_2mm"].append(row["ours_sdr"]["2mm"])
        line["sd_mre_mm"].append(float(np.std(per, ddof=1)) if len(per) > 1 else None)
    return lines


def plot_curve(stem, table, result, protocols):
    """<stem>.png of a label-budget sweep; None for other tables. The baseline is the first arm's."""
    rows = [r for r in result["rows"] if "label_budget" in r]
    if not rows:
        return None
    labels = {r["arm"]: r["label"].rsplit(", " + BUDGET, 1)[0] for r in rows}
    lines = {labels[arm]: line for arm, line in curve_lines(rows).items()}
    first = sorted((r for r in rows if r["arm"] == rows[0]["arm"]), key=lambda r: r["label_budget"])
    baseline = {"labels": [r["label_budget"] for r in first],
                "mre_mm": [r["baseline_mean_shape_mre_mm"] for r in first],
                "sdr_2mm": [np.nan for _ in first]}
    reference = _inter_observer(protocols)
    title = table.get("title", table["name"]) + ("" if reference else "\n(no second annotation in this dataset: "
                                                                        "no inter-observer level drawn)")
    return plot_label_curve(lines, f"{stem}.png", reference, baseline, title)
