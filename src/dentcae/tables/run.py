"""The paper's tables, and ours, from configs: train every arm, evaluate, and write the results.

    result = run_table("configs/paper/table2.yaml", repeats=1)

A table config (spec.py) names its pre-trainings, its arms (each a finetune config, the paper's
published mean/std per landmark, and a label) and the comparisons to test. Arms needing ImageNet
weights run from scratch when model.imagenet_weights is absent, and the table says so by name.
Runs go to runs/<table>/<arm>_r<repeat>; a finished run with the same resolved config is reused, an
interrupted one resumed, and a finished first net is kept when only its head's sub-run settings
changed. Outputs (render.py): results/<table>.md/.csv/.json and figures.
"""
import functools
import json
from pathlib import Path

import numpy as np

from ..config import ConfigError, dump_config, load_config
from ..data.prepare import ensure_dataset, prepare
from ..evaluation.annotators import protocol_lines
from ..evaluation.evaluate import describe, evaluate_checkpoint
from ..evaluation.metrics import read_prediction_errors
from ..runtime.atomic import write_atomic, write_csv_atomic
from ..runtime.backend import set_device
from ..runtime.jobs import run_jobs
from ..train.loop import train, train_subrun
from ..train.runfiles import run_dir
from ..schema import first_net_settings, training_settings
from ..train.stages import subruns
from . import pseudo_arms
from .curve import curve_rows, plot_curve
from .render import csv_rows, first_net_lines, pretraining_lines, table_figures, tabulate
from .spec import check_repeats, check_runs, load_preset, load_table, resolve_run, slug


def _made_by(run, cfg, first_net_only=False):
    """The run folder's saved config is `cfg` (keys added to the schema since it was written count
    with their defaults, so older runs of the same settings are still recognised), apart from the
    head's test-time keys; with `first_net_only`, apart from everything only its sub-runs read."""
    try:
        saved = load_config(run / "config.yaml") if (run / "config.yaml").exists() else None
    except ConfigError:
        return False
    if saved is None:
        return False
    settings = first_net_settings if first_net_only else training_settings
    return settings(saved) == settings(cfg)


def _train_or_reuse(cfg, gpu, log):
    """Reuse a finished run of the same config, resume an interrupted one, else train afresh. A
    run whose first net was made with the same settings keeps it when only its sub-runs' settings
    changed (the heatmap's model.refine), and trains (or resumes) those sub-runs alone."""
    run = run_dir(cfg)
    if _made_by(run, cfg, first_net_only=True) and (run / "final.caffemodel").exists():
        same = _made_by(run, cfg)
        dump_config(cfg, run / "config.yaml")           # the same, or new test-time or sub-run settings
        todo = [name for name in subruns(cfg) if not same or not (run / name / "final.caffemodel").exists()]
        if not todo:
            log(f"reusing finished run {run}")
            return
        log(f"reusing the first net of {run}; training its {', '.join(todo)} net")
        for name in todo:
            train_subrun(cfg, name, gpu, resume=True, log=log)
        return
    resume = _made_by(run, cfg, first_net_only=True) and (run / "snapshots" / "latest.json").exists()
    train(cfg, gpu=gpu, resume=resume, overwrite=not resume, log=log)


class _Collected:
    """What the arms of a table produced: per arm and repeat, mm errors and their sample ids."""

    def __init__(self, arms, pretrainings):
        self.errors = {k: [] for k in arms}      # per repeat: (N, K) mm errors
        self.samples = {k: [] for k in arms}     # per repeat: the sample ids of those rows
        self.runs, self.replaced, self.baselines, self.baselines_by_arm = {}, set(), [], {}
        self.pretrain_runs = {name: [] for name in pretrainings}   # per repeat: each pre-training's run
        self.names, self.synthetic, self.dataset_root, self.data = None, False, None, None
        self.wall_s = {}                          # training seconds per arm (sub-runs included), all repeats
        self.first_net = {}                       # refined arms: the first net's stats per repeat
        self.protocols = {}                       # repeat 0 per arm: scores per test set and annotation
        self.data_by_arm = {}                     # repeat 0 per arm: what it was trained and tested on
        self.pseudo = {}                          # pseudo-label arms: per repeat, what their data kept

    def add(self, key, cfg, summary):
        run = run_dir(cfg)
        e, ids = read_prediction_errors(run / "predictions.csv")
        self.errors[key].append(e)
        self.samples[key].append(ids)
        self.runs.setdefault(key, []).append(run)
        self.names, self.synthetic = [p["name"] for p in summary["landmarks"]], summary["synthetic"]
        self.dataset_root, self.data = cfg["dataset"]["root"], summary["data"]
        training = summary["training"]
        wall = float(training.get("wall_s", 0.0)) + sum(float(training.get(name, {}).get("wall_s", 0.0))
                                                        for name in subruns(cfg))
        self.wall_s[key] = self.wall_s.get(key, 0.0) + wall
        if "coarse_decoding" in summary:
            self.first_net.setdefault(key, []).append(summary["coarse_decoding"])
        self.protocols.setdefault(key, summary.get("protocols"))
        self.data_by_arm.setdefault(key, summary["data"])
        self.baselines.append(summary["baseline_mean_shape_mre_mm"])
        self.baselines_by_arm.setdefault(key, []).append(summary["baseline_mean_shape_mre_mm"])


def train_and_evaluate(cfg, gpu, log=print):
    """One arm's run: train (or reuse) it, then score it on its test split (a job of jobs.run_jobs;
    worker processes log to their stdout)."""
    _train_or_reuse(cfg, gpu, log)
    return evaluate_checkpoint(cfg, run_dir(cfg), gpu=gpu)


def _pretrainings(table, overrides):
    """{name: pre-training config} of the pre-trainings the arms start from, in the table's order."""
    inits = {resolve_run(a["config"], table, a["key"], 0, overrides, a.get("set"))[0]["model"]["init"]
             for a in table["arms"]}
    return {name: config for name, config in table["pretrainings"].items() if name in inits}


def _resolver(table, overrides, got, log):
    """resolve(config, name, repeat, arm_set, extra=[]) -> one run's config; replaced weights noted once."""
    def resolve(config, name, repeat, arm_set=None, extra=()):
        cfg, note = resolve_run(config, table, name, repeat, list(overrides or []) + list(extra), arm_set)
        if note and note not in got.replaced:
            log(f"replaced: {note}")
            got.replaced.add(note)
        return cfg
    return resolve


def _jobs(table, arms, devices, overrides, got, log):
    """Train (or reuse) the pre-trainings of every repeat; returns the arms' (key, repeat, config) jobs."""
    jobs, resolve = [], _resolver(table, overrides, got, log)
    pretrainings = _pretrainings(table, overrides)
    for r in range(table["repeats"]):
        pre_runs = {}
        for name, config in pretrainings.items():
            pre_cfg = resolve(config, name, r if table["repeat_over"] == "seed" else 0)
            _train_or_reuse(pre_cfg, devices[0], log)
            pre_runs[name] = run_dir(pre_cfg)
            got.pretrain_runs[name].append(pre_runs[name])
        for key, arm in arms.items():
            if arm.get("pseudo_labels_from"):
                continue                        # after their teachers (_pseudo_jobs)
            cfg = resolve(arm["config"], key, r, arm.get("set"))
            if cfg["model"]["init"] in pre_runs:
                cfg["model"]["pretrain_run"] = str(pre_runs[cfg["model"]["init"]])
            jobs.append((key, r, cfg))
    return jobs


def _pseudo_jobs(table, arms, done, overrides, got, devices, log):
    """The pseudo-label arms whose teachers are done: their data made (or reused), their jobs; an
    arm whose teacher left nothing unlabelled is its teacher (done at once, noted)."""
    resolve, jobs = _resolver(table, overrides, got, log), []
    for key, arm in arms.items():
        teacher = arm.get("pseudo_labels_from")
        if not teacher or key in got.errors and got.errors[key] or (teacher, 0) not in done:
            continue
        for r in range(table["repeats"]):
            folder, report = pseudo_arms.pseudo_data(done[teacher, r][0], f"{key}_r{r}", log, devices[0])
            got.pseudo.setdefault(key, []).append(pseudo_arms.report_fields(report))
            if pseudo_arms.no_candidates(report):
                note = f"{key}: no training image was left unlabelled, so the arm is its teacher {teacher}"
                if note not in got.replaced:
                    log(f"replaced: {note}")
                    got.replaced.add(note)
                done[key, r] = done[teacher, r]
                got.add(key, *done[teacher, r])
                continue
            jobs.append((key, r, resolve(arm["config"], key, r, arm.get("set"), pseudo_arms.student_overrides(folder))))
    return jobs


def _run_jobs(jobs, devices, got, done, log):
    """Train and evaluate the jobs (on all `devices` at once when there are several)."""
    if len(devices) > 1:        # workers would race to build a prepared-data entry they share
        for _, _, cfg in jobs:
            ensure_dataset(cfg, log)
            prepare(cfg, log=log)
    job = train_and_evaluate if len(devices) > 1 else functools.partial(train_and_evaluate, log=log)
    for (key, r, cfg), summary in zip(jobs, run_jobs(job, [cfg for _, _, cfg in jobs], devices)):
        done[key, r] = (cfg, summary)
    for key, r, _ in sorted(jobs, key=lambda j: j[1]):      # repeat by repeat, as the errors are kept
        got.add(key, *done[key, r])


def _run_arms(table, arms, devices, overrides, log):
    """The pre-trainings, then every arm for every repeat, each evaluated; then, wave by wave, the
    pseudo-label arms whose teachers have finished."""
    got, done = _Collected(arms, table["pretrainings"]), {}
    _run_jobs(_jobs(table, arms, devices, overrides, got, log), devices, got, done, log)
    while not all(got.errors[k] for k in arms):
        jobs = _pseudo_jobs(table, arms, done, overrides, got, devices, log)
        if not jobs and not all(got.errors[k] for k in arms):
            raise RuntimeError(f"{table['name']}: arms {', '.join(k for k in arms if not got.errors[k])} "
                               "wait for teachers that did not run")
        _run_jobs(jobs, devices, got, done, log)
    return got


def data_lines(arms, data_by_arm):
    """The data sentence of the table: one when every arm saw the same data, else one per arm."""
    sentences = {key: describe(d) for key, d in data_by_arm.items()}
    if len(set(sentences.values())) == 1:
        return next(iter(sentences.values()))
    return "\n".join(f"- {arms[key]['label']}: {text}" for key, text in sentences.items())


def _load(path, repeats, preset, overrides, only=None):
    """The table, its preset and repeats applied, every run it would train checked; and the --set
    items for every run: a --set of the swept key chose the arms' value and goes no further (the
    pre-trainings, which serve every value, stay the same runs)."""
    table = load_table(path, overrides, only)
    overrides = [o for o in overrides or [] if o.split("=", 1)[0].strip() != table.get("sweep_key")]
    table["preset"] = load_preset(preset, path)
    if preset:                      # its runs and results stand beside the table's own, never over them
        table["name"] = f"{table['name']}_{Path(preset).stem}"
    if repeats is not None:
        table["repeats"] = check_repeats(repeats)
    check_runs(table, overrides)
    return table, overrides


def _results_name(table, overrides, only):
    """The results' file stem: the table's name, plus the one swept value and the arms when a run
    was narrowed to them (--set of the swept key, --arms), so it never overwrites the whole table's."""
    name = table["name"]
    if "sweep_key" in table and any(o.split("=", 1)[0].strip() == table["sweep_key"] for o in overrides or []):
        name += f"_{table['sweep_key'].rsplit('.', 1)[-1]}-{slug(table['sweep_values'][0])}"
    return name + ("_" + "-".join(only) if only else "")


def _markdown(result, got, arms):
    """The table's text after its rows: baselines, pre-trainings, first nets, pseudo-labels, protocols."""
    baselines = {k: float(np.mean(v)) for k, v in got.baselines_by_arm.items()}
    if len(set(np.round(list(baselines.values()), 4))) > 1:       # e.g. one per label budget
        text = "\nNo-learning baseline (the training set's mean landmarks), MRE on the same test samples: " + \
            "; ".join(f"{arms[k]['label']}: {v:.4f} mm" for k, v in baselines.items()) + ".\n"
    else:
        text = (f"\nNo-learning baseline: predicting the training set's mean landmarks gives an MRE of "
                f"{result['baseline_mean_shape_mre_mm']:.4f} mm on the same test samples.\n")
    text += pretraining_lines(result, got.pretrain_runs) + first_net_lines(result, got.first_net, got.errors, arms)
    text += pseudo_arms.report_lines({k: arms[k]["label"] for k in got.pseudo}, got.pseudo)
    return text + protocol_lines({arms[k]["label"]: p for k, p in got.protocols.items()})


def run_table(path, repeats=None, gpu=None, out=None, overrides=None, preset=None, gpus=None, only=None, log=print):
    """Train and evaluate every arm; write <name>.md/.json/.csv and figures; returns the result.
    `preset` (spec.load_preset) scales every run's schedule, e.g. "gpu"; `gpus` runs the arms
    and repeats in parallel, one process per GPU (`gpu`: all on one device); `only`: those arms
    (keys as the table writes them, before a sweep) and the arms they take pseudo-labels from."""
    devices = list(gpus) if gpus else [gpu]
    for device in devices:
        if device is not None:
            set_device(device)          # a GPU asked for but absent fails here, before any work
    table, run_overrides = _load(path, repeats, preset, overrides, only)
    out = Path(out or table["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    arms = {a["key"]: a for a in table["arms"]}
    got = _run_arms(table, arms, devices, run_overrides, log)
    result = tabulate(table, arms, got.errors, got.names, sorted(got.replaced), got.synthetic, got.samples,
                      data_lines(arms, got.data_by_arm), got.wall_s)
    result.update(data=got.data, data_by_arm=got.data_by_arm, preset=table["preset"] or None,
                  baseline_mean_shape_mre_mm=float(np.mean(got.baselines)), pseudo_labels=got.pseudo or None)
    if "sweep_key" in table:
        result.update(sweep_key=table["sweep_key"], sweep_values=table["sweep_values"])
        curve_rows(result, arms, got.data_by_arm, got.baselines_by_arm)
    markdown = result.pop("markdown_text") + _markdown(result, got, arms)
    result["protocols"] = {k: p for k, p in got.protocols.items() if p}
    stem = out / _results_name(table, overrides, only)
    result["markdown"] = str(stem) + ".md"
    write_atomic(str(stem) + ".md", markdown)
    write_atomic(str(stem) + ".json", json.dumps(result, indent=1))
    write_csv_atomic(str(stem) + ".csv", csv_rows(result))
    table_figures(stem, table, got.runs, got.errors, got.dataset_root, got.pretrain_runs)
    plot_curve(stem, table, result, got.protocols)
    return result
