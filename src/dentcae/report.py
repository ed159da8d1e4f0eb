"""The paper's tables from configs: train every arm, evaluate, and put ours beside the paper's.

    result = run_table("configs/paper/table2.yaml", repeats=1)

A table config names one shared CAE pre-training config, its arms (each a finetune config, the
paper's published mean/std per landmark, and a label), and the comparisons to test. Arms needing
ImageNet weights run from scratch when model.imagenet_weights is absent, and the table says so by
name. Runs go to runs/<table>/<arm>_r<repeat>; a finished run with the same resolved config is
reused, an interrupted one resumed. Outputs: results/<table>.md/.csv/.json and figures.
"""
import json
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import wilcoxon

from .atomic import write_atomic, write_csv_atomic
from .config import ConfigError, check_name, load_config, merge, parse_set, read_yaml_mapping
from .evaluate import describe, detection_panels, evaluate_checkpoint
from .figures import plot_detections, plot_error_cdf, plot_learning_curves
from .losslog import LossLog
from .metrics import SDR_MM, read_prediction_errors
from .prepare import prepare
from .train import reconstruction_figure, run_dir, train

TABLE_KEYS = {"name", "title", "results_dir", "repeats", "repeat_over", "pretrain", "set", "arms",
              "comparisons", "note"}
ARM_KEYS = {"key", "label", "config", "paper"}


def load_table(path):
    path = Path(path)
    t = read_yaml_mapping(path, "table config", allow_empty=False)
    for key in t:
        if key not in TABLE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(TABLE_KEYS))})")
    if not isinstance(t.get("arms"), list) or not all(isinstance(a, dict) for a in t["arms"]):
        raise ConfigError(f"{path}: a table needs 'arms', a list of mappings with key, label and config")
    for i, arm in enumerate(t["arms"]):
        missing = {"key", "config"} - set(arm)
        if missing:
            raise ConfigError(f"{path}: arms[{i}]: missing {', '.join(sorted(missing))}")
        for key in arm:
            if key not in ARM_KEYS:
                raise ConfigError(f"{path}: arms[{i}]: unknown key '{key}' (known: {', '.join(sorted(ARM_KEYS))})")
    if "name" not in t:
        raise ConfigError(f"{path}: a table needs a 'name' (its runs go to runs/<name>/)")
    try:
        check_name(t["name"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = [a["key"] for a in t["arms"]]
    for a, b in t.get("comparisons", []):
        if a not in keys or b not in keys:
            raise ConfigError(f"{path}: comparison [{a}, {b}] names an arm that is not in 'arms'")
    t.setdefault("repeats", 1)
    t.setdefault("repeat_over", "seed")
    t.setdefault("results_dir", "results")
    if t["repeat_over"] not in ("seed", "fold"):
        raise ConfigError(f"{path}: repeat_over must be seed or fold")
    return t


def _resolve(config, table, name, repeat, extra):
    """Arm or CAE config for one repeat: table-wide `set`, --set, run folder, seed or fold."""
    over = {}
    for k, v in (table.get("set") or {}).items():   # the table's settings, then --set on top
        _merge_dotted(over, k, v)
    cfg = load_config(config, merge(over, parse_set(extra)))
    cfg["runs_dir"], cfg["name"] = str(Path(cfg["runs_dir"]) / table["name"]), f"{name}_r{repeat}"
    if table["repeat_over"] == "seed":
        cfg["solver"]["random_seed"] = cfg["seed"] = repeat
    else:
        cfg["prepare"]["folds"], cfg["prepare"]["fold"] = table["repeats"], repeat
    replaced = None
    if cfg["model"]["init"] == "imagenet" and not Path(cfg["model"]["imagenet_weights"]).exists():
        replaced = f"{name}: ImageNet weights {cfg['model']['imagenet_weights']} absent, ran from scratch"
        cfg["model"]["init"] = "scratch"
    return cfg, replaced


def _merge_dotted(over, key, value):
    node = over
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return over


def _train_or_reuse(cfg, gpu, log):
    run = run_dir(cfg)
    saved = run / "config.yaml"
    if (run / "final.caffemodel").exists() and saved.exists() and yaml.safe_load(saved.read_text()) == cfg:
        log(f"reusing finished run {run}")
        return
    resume = (run / "snapshots" / "latest.json").exists() and saved.exists() and \
        yaml.safe_load(saved.read_text()) == cfg
    train(cfg, gpu=gpu, resume=resume, overwrite=not resume, log=log)


def _fmt(mean, std):
    return f"{mean:.4f} ± {std:.4f}"


class _Collected:
    """What the arms of a table produced: per arm and repeat, mm errors and their sample ids."""

    def __init__(self, arms):
        self.errors = {k: [] for k in arms}      # per repeat: (N, K) mm errors
        self.samples = {k: [] for k in arms}     # per repeat: the sample ids of those rows
        self.runs, self.replaced, self.cae_runs, self.baselines = {}, set(), [], []
        self.names, self.synthetic, self.dataset_root, self.data = None, False, None, None
        self.wall_s = {}                          # training seconds per arm, all repeats

    def add(self, key, cfg, summary):
        run = run_dir(cfg)
        e, ids = read_prediction_errors(run / "predictions.csv")
        self.errors[key].append(e)
        self.samples[key].append(ids)
        self.runs.setdefault(key, []).append(run)
        self.names, self.synthetic = [p["name"] for p in summary["landmarks"]], summary["synthetic"]
        self.dataset_root, self.data = cfg["dataset"]["root"], summary["data"]
        self.wall_s[key] = self.wall_s.get(key, 0.0) + float(summary["training"].get("wall_s", 0.0))
        self.baselines.append(summary["baseline_mean_shape_mre_mm"])


def _run_arms(table, arms, gpu, overrides, log):
    """Train (or reuse) the shared CAE and every arm for every repeat, and evaluate each arm."""
    got = _Collected(arms)
    needs_cae = any(load_config(a["config"])["model"]["init"] == "cae" for a in table["arms"])

    def resolve(config, name, repeat):
        cfg, note = _resolve(config, table, name, repeat, overrides)
        if note and note not in got.replaced:
            log(f"replaced: {note}")
            got.replaced.add(note)
        return cfg

    for r in range(table["repeats"]):
        if needs_cae:
            cae_cfg = resolve(table["pretrain"], "cae", r if table["repeat_over"] == "seed" else 0)
            _train_or_reuse(cae_cfg, gpu, log)
            got.cae_runs.append(run_dir(cae_cfg))
        for key, arm in arms.items():
            cfg = resolve(arm["config"], key, r)
            if cfg["model"]["init"] == "cae":
                cfg["model"]["cae_run"] = str(run_dir(cae_cfg))
            _train_or_reuse(cfg, gpu, log)
            got.add(key, cfg, evaluate_checkpoint(cfg, run_dir(cfg), gpu=gpu))
    return got


def _table_figures(stem, table, got):
    first = {k: v[0] for k, v in got.runs.items()}
    plot_learning_curves({k: LossLog(r / "loss.csv").read() for k, r in first.items()},
                         f"{stem}_learning_curves.png", f"{table['name']}: fine-tuning (repeat 0)")
    plot_detections(detection_panels({k: r / "predictions.csv" for k, r in first.items()}, got.dataset_root),
                    f"{stem}_detections.png")
    plot_error_cdf({k: np.concatenate(v).reshape(-1) for k, v in got.errors.items()}, f"{stem}_error_cdf.png",
                   SDR_MM)
    if got.cae_runs:
        cae = got.cae_runs[0]
        reconstruction_figure(cae, prepare(load_config(cae / "config.yaml")), f"{stem}_cae_reconstructions.png")
        plot_learning_curves({"CAE": LossLog(cae / "loss.csv").read()}, f"{stem}_cae_learning_curves.png",
                             "CAE pre-training")


def run_table(path, repeats=None, gpu=None, out=None, overrides=None, log=print):
    """Train and evaluate every arm; write <name>.md/.json/.csv and figures; returns the result."""
    table = load_table(path)
    if repeats:
        table["repeats"] = repeats
    out = Path(out or table["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    arms = {a["key"]: a for a in table["arms"]}
    got = _run_arms(table, arms, gpu, overrides, log)
    result = _tabulate(table, arms, got.errors, got.names, sorted(got.replaced), got.synthetic, got.samples,
                       describe(got.data), got.wall_s)
    result["data"] = got.data
    baseline = float(np.mean(got.baselines))
    result["baseline_mean_shape_mre_mm"] = baseline
    markdown = result.pop("markdown_text") + (
        f"\nNo-learning baseline: predicting the training set's mean landmarks gives an MRE of "
        f"{baseline:.4f} mm on the same test samples.\n")
    if got.cae_runs:
        cae_s = [json.loads((r / "training.json").read_text())["wall_s"] for r in dict.fromkeys(got.cae_runs)]
        result["cae_wall_s"] = float(sum(cae_s))
        markdown += f"CAE pre-training: {sum(cae_s) / 60:.1f} min ({len(cae_s)} run(s)).\n"
    stem = out / table["name"]
    result["markdown"] = str(stem) + ".md"
    write_atomic(str(stem) + ".md", markdown)
    write_atomic(str(stem) + ".json", json.dumps(result, indent=1))
    write_csv_atomic(str(stem) + ".csv", _csv_rows(result))
    _table_figures(stem, table, got)
    return result


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
    for a, b in table.get("comparisons", []):
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


def _tabulate(table, arms, errors, names, replaced, synthetic, samples=None, data_line=None, wall_s=None):
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


def _csv_rows(result):
    k = len(result["rows"][0]["ours_mean_mm"])
    rows = [["arm", "source", *[f"l{i + 1}_mean_mm" for i in range(k)], *[f"l{i + 1}_std_mm" for i in range(k)],
             "mre_mm"]]
    for r in result["rows"]:
        rows.append([r["arm"], "ours", *np.round(r["ours_mean_mm"], 4), *np.round(r["ours_std_mm"], 4),
                     round(r["ours_mre_mm"], 4)])
        if "paper_mean_mm" in r:
            rows.append([r["arm"], "paper", *r["paper_mean_mm"], *r["paper_std_mm"], round(r["paper_mre_mm"], 4)])
    return rows
