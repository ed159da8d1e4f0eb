"""A table's numbers, text and figures from what its arms produced (tables/run.py collects it).

    result = tabulate(table, arms, errors, names, replaced, synthetic, samples, data_line, wall_s)
    markdown += pretraining_lines(result, pretrain_runs) + first_net_lines(result, first_net, errors, arms)
    table_figures(stem, runs, errors, dataset_root, pretrain_runs)

Per arm: per-landmark mean +- std in mm beside the paper's, MRE and success detection rates, training
time; per listed pair of arms, the relative change and a paired Wilcoxon test on per-sample errors.
The figures draw arrays read from the runs' files; nothing here runs a net but a pre-training's own
table figures (its plug-in's table_figures hook).
"""
import numpy as np
from scipy.stats import wilcoxon

from ..evaluation.evaluate import detection_panels
from ..figures import plot_detections, plot_error_cdf, plot_learning_curves
from ..evaluation.metrics import SDR_MM
from ..registry import PRETEXTS
from ..train.losslog import LossLog


def _fmt(mean, std):
    return f"{mean:.4f} ± {std:.4f}"


def _paired(errors, samples, a, b):
    """Per-sample mean errors of arms a and b over all repeats, refused unless the samples match."""
    if samples is not None and samples[a] != samples[b]:
        raise ValueError(f"cannot compare arms '{a}' and '{b}': they were evaluated on different "
                         "samples (sample ids differ), so their errors do not pair")
    return np.concatenate(errors[a]).mean(1), np.concatenate(errors[b]).mean(1)


def _arm_row(key, arm, errors):
    """One arm's numbers over all its repeats, and its Markdown lines (ours, then the paper's)."""
    e = np.concatenate(errors)                 # all repeats' samples
    per_rep = [x.mean() for x in errors]
    ours = [_fmt(e[:, i].mean(), np.std(e[:, i], ddof=1)) for i in range(e.shape[1])]
    mean_cell = _fmt(e.mean(), np.std(per_rep, ddof=1)) + " (over repeats)" if len(per_rep) > 1 \
        else _fmt(e.mean(), np.std(e, ddof=1))
    lines = [f"| {arm['label']} | ours | " + " | ".join(ours) + f" | {mean_cell} |"]
    row = {"arm": key, "label": arm["label"], "ours_mean_mm": e.mean(0).tolist(),
           "ours_std_mm": np.std(e, 0, ddof=1).tolist(), "ours_mre_mm": float(e.mean()),
           "ours_mre_per_repeat": [float(x) for x in per_rep], "n_samples": int(e.shape[0]),
           "ours_sdr": {f"{t:g}mm": float((e <= t).mean()) for t in SDR_MM}}
    if arm.get("paper"):
        p = arm["paper"]
        paper_cells = [_fmt(m, s) for m, s in zip(p["mean"], p["std"])]
        lines.append(f"| {arm['label']} | paper | " + " | ".join(paper_cells) + f" | {np.mean(p['mean']):.4f} |")
        row.update(paper_mean_mm=p["mean"], paper_std_mm=p["std"], paper_mre_mm=float(np.mean(p["mean"])))
    return row, lines


def _overall_lines(rows):
    """MRE, success detection rates and training time per arm."""
    lines = ["", "| arm | MRE (mm) | " + " | ".join(f"SDR {t:g} mm" for t in SDR_MM) + " | training |",
             "|---|---|" + "---|" * (len(SDR_MM) + 1)]
    for r in rows:
        wall = f"{r['train_wall_s'] / 60:.1f} min" if r.get("train_wall_s") else "n/a"
        lines.append(f"| {r['label']} | {r['ours_mre_mm']:.2f} | "
                     + " | ".join(f"{100 * v:.1f}%" for v in r["ours_sdr"].values()) + f" | {wall} |")
    return lines


def _comparisons(table, arms, errors, samples, by_key):
    """Relative change of the mean error and a paired Wilcoxon test for each listed pair of arms."""
    comps, lines = [], []
    if table.get("comparisons"):
        lines += ["", "| comparison (B vs A) | ours: change of mean error | paper: change | Wilcoxon p (per-sample mean error) |",
                  "|---|---|---|---|"]
    for a, b in table.get("comparisons") or []:
        ea, eb = _paired(errors, samples, a, b)
        p = float(wilcoxon(ea, eb).pvalue) if len(ea) > 1 and np.any(ea != eb) else 1.0
        ours = (by_key[b]["ours_mre_mm"] - by_key[a]["ours_mre_mm"]) / by_key[a]["ours_mre_mm"]
        paper = None
        if "paper_mre_mm" in by_key[a] and "paper_mre_mm" in by_key[b]:
            paper = (by_key[b]["paper_mre_mm"] - by_key[a]["paper_mre_mm"]) / by_key[a]["paper_mre_mm"]
        comps.append({"a": a, "b": b, "ours_relative_change": ours, "paper_relative_change": paper,
                      "wilcoxon_p": p, "n_pairs": int(len(ea))})
        paper_txt = f"{100 * paper:+.1f}%" if paper is not None else "n/a"
        lines.append(f"| {arms[b]['label']} vs {arms[a]['label']} | {100 * ours:+.1f}% | {paper_txt} | {p:.3g} (n={len(ea)}) |")
    return comps, lines


def tabulate(table, arms, errors, names, replaced, synthetic, samples=None, data_line=None, wall_s=None):
    """The table's numbers (rows, comparisons) and its Markdown text."""
    lines = [f"# {table.get('title', table['name'])}", ""]
    if synthetic:
        lines += ["**Ours are on the SYNTHETIC phantom, not the paper's dental X-rays: compare trends, "
                  "not values.** Paper rows quote Wang & Chu.", ""]
    if data_line:
        lines += [data_line, ""]
    lines += [f"- Replaced: {note}." for note in replaced]
    lines += ["", "| " + " | ".join(["arm", "source", *[str(i + 1) for i in range(len(names))], "mean"]) + " |",
              "|" + "---|" * (len(names) + 3)]
    rows = []
    for key, arm in arms.items():
        row, arm_lines = _arm_row(key, arm, errors[key])
        row["train_wall_s"] = (wall_s or {}).get(key)
        rows.append(row)
        lines += arm_lines
    lines += _overall_lines(rows)
    comps, comp_lines = _comparisons(table, arms, errors, samples, {r["arm"]: r for r in rows})
    lines += comp_lines
    lines += ["", f"Radial error in mm, mean ± std over test samples; {table['repeats']} repeat(s) over "
              f"{table['repeat_over']}s. Landmarks: " + ", ".join(f"{i + 1} = {n}" for i, n in enumerate(names)) + "."]
    if table.get("note"):
        lines += ["", table["note"].strip()]
    return {"table": table["name"], "synthetic": synthetic, "replaced": replaced, "rows": rows,
            "comparisons": comps, "markdown_text": "\n".join(lines) + "\n"}


def csv_rows(result):
    k = len(result["rows"][0]["ours_mean_mm"])
    rows = [["arm", "source", *[f"l{i + 1}_mean_mm" for i in range(k)], *[f"l{i + 1}_std_mm" for i in range(k)],
             "mre_mm"]]
    for r in result["rows"]:
        rows.append([r.get("run_key", r["arm"]), "ours", *np.round(r["ours_mean_mm"], 4), *np.round(r["ours_std_mm"], 4),
                     round(r["ours_mre_mm"], 4)])
        if "paper_mean_mm" in r:
            rows.append([r.get("run_key", r["arm"]), "paper", *r["paper_mean_mm"], *r["paper_std_mm"], round(r["paper_mre_mm"], 4)])
    return rows



def first_net_lines(result, first_net, errors, arms):
    """What the refine net added: each refined heatmap arm's first-net MRE and SDR@2 mm beside the
    refined ones (the refined numbers are the table's)."""
    text = ""
    for key, stats in first_net.items():
        first = {"mre_mm": float(np.mean([s["mre_mm"] for s in stats])),
                 "sdr_2mm": float(np.mean([s["sdr"]["2mm"] for s in stats]))}
        e = np.concatenate(errors[key])
        refined = {"mre_mm": float(e.mean()), "sdr_2mm": float((e <= 2).mean())}
        result.setdefault("first_net", {})[key] = {"first": first, "refined": refined}
        text += (f"{arms[key]['label']}: first net alone {first['mre_mm']:.2f} mm (SDR 2 mm "
                 f"{100 * first['sdr_2mm']:.1f}%), refined {refined['mre_mm']:.2f} mm "
                 f"({100 * refined['sdr_2mm']:.1f}%).\n")
    return text


def pretraining_lines(result, pretrain_runs):
    """What each pre-training's plug-in reports of its runs (wall time, ...), into result and text."""
    text = ""
    for name, runs in pretrain_runs.items():
        if runs:
            fields, lines = PRETEXTS.get(name).table_lines(list(dict.fromkeys(runs)))
            result.update(fields)
            text += lines
    return text


def table_figures(stem, table, runs, errors, dataset_root, pretrain_runs):
    """Learning curves, detections (all arms; the best arm alone, every error in mm), error CDFs,
    and each pre-training's learning curves and own figures (repeat 0)."""
    first = {k: v[0] for k, v in runs.items()}
    plot_learning_curves({k: LossLog(r / "loss.csv").read() for k, r in first.items()},
                         f"{stem}_learning_curves.png", f"{table['name']}: fine-tuning (repeat 0)")
    plot_detections(detection_panels({k: r / "predictions.csv" for k, r in first.items()}, dataset_root),
                    f"{stem}_detections.png")
    best = min(errors, key=lambda k: np.concatenate(errors[k]).mean())
    plot_detections(detection_panels({best: first[best] / "predictions.csv"}, dataset_root),
                    f"{stem}_best_detections.png")
    plot_error_cdf({k: np.concatenate(v).reshape(-1) for k, v in errors.items()}, f"{stem}_error_cdf.png", SDR_MM)
    for name, pre in pretrain_runs.items():
        if pre:
            plugin = PRETEXTS.get(name)
            plot_learning_curves({plugin.TITLE: LossLog(pre[0] / "loss.csv").read()},
                                 f"{stem}_{name}_learning_curves.png", f"{plugin.TITLE} pre-training")
            plugin.table_figures(pre[0], stem)
