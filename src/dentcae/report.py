"""The paper's tables from configs: train every arm, evaluate, and put ours beside the paper's.

    result = run_table("configs/paper/table2.yaml", repeats=1)

A table config (tables.py) names its pre-training configs (the CAE, the augmentation pretext), its
arms (each a finetune config, the paper's published mean/std per landmark, and a label), and the
comparisons to test. Arms needing
ImageNet weights run from scratch when model.imagenet_weights is absent, and the table says so by
name. Runs go to runs/<table>/<arm>_r<repeat>; a finished run with the same resolved config is
reused, an interrupted one resumed. Outputs: results/<table>.md/.csv/.json and figures.
"""
import functools
import json
import shutil
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from .atomic import write_atomic, write_csv_atomic
from .config import ConfigError, dump_config, load_config
from .backend import set_device
from .evaluate import describe, detection_panels, evaluate_checkpoint
from .figures import plot_detections, plot_error_cdf, plot_learning_curves
from .jobs import run_jobs
from .losslog import LossLog
from .metrics import SDR_MM, read_prediction_errors
from .prepare import ensure_dataset, prepare
from .pretrain_results import reconstruction_figure
from . import refine
from .tables import PRETRAIN_KEYS, load_preset, load_table, resolve_run  # noqa: F401 (load_table re-exported)
from .train import run_dir, train, train_refine

def _made_by(run, cfg, but=None):
    """The run folder's saved config is `cfg` (keys added to the schema since it was written count
    with their defaults, so older runs of the same settings are still recognised), apart from the
    refine net's test-time keys, and apart from the model key `but` when given."""
    try:
        saved = load_config(run / "config.yaml") if (run / "config.yaml").exists() else None
    except ConfigError:
        return False
    if saved is None:
        return False
    if not but:
        return refine.training_settings(saved) == refine.training_settings(cfg)
    return {**saved, "model": {**saved["model"], but: None}} == {**cfg, "model": {**cfg["model"], but: None}}


def _train_or_reuse(cfg, gpu, log):
    """Reuse a finished run of the same config, resume an interrupted one, else train afresh. A
    heatmap run whose first net was made with the same settings keeps it when only model.refine
    changed, and trains (or resumes) the refine net alone."""
    run = run_dir(cfg)
    first_same = _made_by(run, cfg, but="refine")
    if first_same and (run / "final.caffemodel").exists():
        same = _made_by(run, cfg)
        dump_config(cfg, run / "config.yaml")           # the same, or new test-time or refine settings
        if same and (not refine.enabled(cfg) or (run / "refine" / "final.caffemodel").exists()):
            log(f"reusing finished run {run}")
            return
        if refine.enabled(cfg):
            log(f"reusing the first net of {run}; training its refine net")
            train_refine(cfg, gpu, resume=True, log=log)
        return
    resume = first_same and (run / "snapshots" / "latest.json").exists()
    train(cfg, gpu=gpu, resume=resume, overwrite=not resume, log=log)


def _fmt(mean, std):
    return f"{mean:.4f} ± {std:.4f}"


class _Collected:
    """What the arms of a table produced: per arm and repeat, mm errors and their sample ids."""

    def __init__(self, arms):
        self.errors = {k: [] for k in arms}      # per repeat: (N, K) mm errors
        self.samples = {k: [] for k in arms}     # per repeat: the sample ids of those rows
        self.runs, self.replaced, self.baselines = {}, set(), []
        self.pretrain_runs = {init: [] for init in PRETRAIN_KEYS}   # per repeat: the CAE's, the pretext's
        self.names, self.synthetic, self.dataset_root, self.data = None, False, None, None
        self.wall_s = {}                          # training seconds per arm, all repeats
        self.first_net = {}                       # refined heatmap arms: the first net's stats per repeat

    def add(self, key, cfg, summary):
        run = run_dir(cfg)
        e, ids = read_prediction_errors(run / "predictions.csv")
        self.errors[key].append(e)
        self.samples[key].append(ids)
        self.runs.setdefault(key, []).append(run)
        self.names, self.synthetic = [p["name"] for p in summary["landmarks"]], summary["synthetic"]
        self.dataset_root, self.data = cfg["dataset"]["root"], summary["data"]
        training = summary["training"]
        wall = float(training.get("wall_s", 0.0)) + float(training.get("refine", {}).get("wall_s", 0.0))
        self.wall_s[key] = self.wall_s.get(key, 0.0) + wall
        if "coarse_decoding" in summary:
            self.first_net.setdefault(key, []).append(summary["coarse_decoding"])
        self.baselines.append(summary["baseline_mean_shape_mre_mm"])


def train_and_evaluate(cfg, gpu, log=print):
    """One arm's run: train (or reuse) it, then score it on its test split (a job of jobs.run_jobs;
    worker processes log to their stdout)."""
    _train_or_reuse(cfg, gpu, log)
    return evaluate_checkpoint(cfg, run_dir(cfg), gpu=gpu)


def _pretrainings(table):
    """{init: pre-training config} of the inits the arms use (cae, pretext)."""
    inits = {load_config(a["config"])["model"]["init"] for a in table["arms"]}
    pretrains = {init: table[key] for init, key in PRETRAIN_KEYS.items() if init in inits}
    for init, config in pretrains.items():
        if config is None:
            raise ConfigError(f"{table['name']}: arms start from '{init}' but the table names no "
                              f"'{PRETRAIN_KEYS[init]}' config")
    return pretrains


def _run_arms(table, arms, devices, overrides, log):
    """Train (or reuse) the pre-trainings, then every arm for every repeat (on all `devices` at
    once when there are several), and evaluate each arm."""
    got, pretrains, jobs = _Collected(arms), _pretrainings(table), []

    def resolve(config, name, repeat):
        cfg, note = resolve_run(config, table, name, repeat, overrides)
        if note and note not in got.replaced:
            log(f"replaced: {note}")
            got.replaced.add(note)
        return cfg

    for r in range(table["repeats"]):
        pre_runs = {}
        for init, config in pretrains.items():          # the CAE, the augmentation pretext
            pre_cfg = resolve(config, init, r if table["repeat_over"] == "seed" else 0)
            _train_or_reuse(pre_cfg, devices[0], log)
            pre_runs[init] = run_dir(pre_cfg)
            got.pretrain_runs[init].append(pre_runs[init])
        for key, arm in arms.items():
            cfg = resolve(arm["config"], key, r)
            if cfg["model"]["init"] in pre_runs:
                cfg["model"][f"{cfg['model']['init']}_run"] = str(pre_runs[cfg["model"]["init"]])
            jobs.append((key, cfg))
    if len(devices) > 1:        # workers would race to build a prepared-data entry they share
        for _, cfg in jobs:
            ensure_dataset(cfg, log)
            prepare(cfg, log=log)
    job = train_and_evaluate if len(devices) > 1 else functools.partial(train_and_evaluate, log=log)
    for (key, cfg), summary in zip(jobs, run_jobs(job, [cfg for _, cfg in jobs], devices)):
        got.add(key, cfg, summary)
    return got


def _table_figures(stem, table, got):
    first = {k: v[0] for k, v in got.runs.items()}
    plot_learning_curves({k: LossLog(r / "loss.csv").read() for k, r in first.items()},
                         f"{stem}_learning_curves.png", f"{table['name']}: fine-tuning (repeat 0)")
    plot_detections(detection_panels({k: r / "predictions.csv" for k, r in first.items()}, got.dataset_root),
                    f"{stem}_detections.png")
    best = min(got.errors, key=lambda k: np.concatenate(got.errors[k]).mean())     # alone, every error in mm
    plot_detections(detection_panels({best: first[best] / "predictions.csv"}, got.dataset_root),
                    f"{stem}_best_detections.png")
    plot_error_cdf({k: np.concatenate(v).reshape(-1) for k, v in got.errors.items()}, f"{stem}_error_cdf.png",
                   SDR_MM)
    if got.pretrain_runs["cae"]:
        cae = got.pretrain_runs["cae"][0]
        reconstruction_figure(cae, prepare(load_config(cae / "config.yaml")), f"{stem}_cae_reconstructions.png")
        plot_learning_curves({"CAE": LossLog(cae / "loss.csv").read()}, f"{stem}_cae_learning_curves.png",
                             "CAE pre-training")
    if got.pretrain_runs["pretext"]:
        shutil.copyfile(got.pretrain_runs["pretext"][0] / "pretext.png", f"{stem}_pretext.png")


def run_table(path, repeats=None, gpu=None, out=None, overrides=None, preset=None, gpus=None, log=print):
    """Train and evaluate every arm; write <name>.md/.json/.csv and figures; returns the result.
    `preset` (tables.load_preset) scales every run's schedule, e.g. "gpu"; `gpus` runs the arms
    and repeats in parallel, one process per GPU (`gpu`: all on one device)."""
    devices = list(gpus) if gpus else [gpu]
    for device in devices:
        if device is not None:
            set_device(device)          # a GPU asked for but absent fails here, before any work
    table = load_table(path)
    table["preset"] = load_preset(preset)
    if preset:                      # its runs and results stand beside the table's own, never over them
        table["name"] = f"{table['name']}_{Path(preset).stem}"
    if repeats:
        table["repeats"] = repeats
    out = Path(out or table["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    arms = {a["key"]: a for a in table["arms"]}
    got = _run_arms(table, arms, devices, overrides, log)
    result = _tabulate(table, arms, got.errors, got.names, sorted(got.replaced), got.synthetic, got.samples,
                       describe(got.data), got.wall_s)
    result["data"] = got.data
    result["preset"] = table["preset"] or None
    baseline = float(np.mean(got.baselines))
    result["baseline_mean_shape_mre_mm"] = baseline
    markdown = result.pop("markdown_text") + (
        f"\nNo-learning baseline: predicting the training set's mean landmarks gives an MRE of "
        f"{baseline:.4f} mm on the same test samples.\n")
    markdown += _pretraining_lines(result, got) + _first_net_lines(result, got, arms)
    stem = out / table["name"]
    result["markdown"] = str(stem) + ".md"
    write_atomic(str(stem) + ".md", markdown)
    write_atomic(str(stem) + ".json", json.dumps(result, indent=1))
    write_csv_atomic(str(stem) + ".csv", _csv_rows(result))
    _table_figures(stem, table, got)
    return result


def _pretraining_lines(result, got):
    """Wall time of the pre-training runs (and the pretext's held-out accuracy), into result and text."""
    text = ""
    if got.pretrain_runs["cae"]:
        cae_s = [json.loads((r / "training.json").read_text())["wall_s"]
                 for r in dict.fromkeys(got.pretrain_runs["cae"])]
        result["cae_wall_s"] = float(sum(cae_s))
        text += f"CAE pre-training: {sum(cae_s) / 60:.1f} min ({len(cae_s)} run(s)).\n"
    if got.pretrain_runs["pretext"]:
        runs = list(dict.fromkeys(got.pretrain_runs["pretext"]))
        wall = sum(json.loads((r / "training.json").read_text())["wall_s"] for r in runs)
        pretext = [json.loads((r / "pretext.json").read_text()) for r in runs]
        result["pretext_wall_s"] = float(wall)
        result["pretext_held_out_accuracy"] = [p["held_out_accuracy"] for p in pretext]
        text += (f"Augmentation-pretext pre-training: {wall / 60:.1f} min ({len(runs)} run(s)); it names the "
                 f"augmentation of held-out images with accuracy "
                 f"{', '.join(f'{p:.3f}' for p in result['pretext_held_out_accuracy'])} "
                 f"(chance {pretext[0]['chance']:.3f}; methods: {', '.join(pretext[0]['methods'])}).\n")
    return text


def _first_net_lines(result, got, arms):
    """What the refine net added: each refined heatmap arm's first-net MRE and SDR@2 mm beside the
    refined ones (the refined numbers are the table's)."""
    text = ""
    for key, stats in got.first_net.items():
        first = {"mre_mm": float(np.mean([s["mre_mm"] for s in stats])),
                 "sdr_2mm": float(np.mean([s["sdr"]["2mm"] for s in stats]))}
        e = np.concatenate(got.errors[key])
        refined = {"mre_mm": float(e.mean()), "sdr_2mm": float((e <= 2).mean())}
        result.setdefault("first_net", {})[key] = {"first": first, "refined": refined}
        text += (f"{arms[key]['label']}: first net alone {first['mre_mm']:.2f} mm (SDR 2 mm "
                 f"{100 * first['sdr_2mm']:.1f}%), refined {refined['mre_mm']:.2f} mm "
                 f"({100 * refined['sdr_2mm']:.1f}%).\n")
    return text


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
