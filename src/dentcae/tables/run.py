"""The paper's tables, and ours, from configs: train every arm, evaluate, and write the results.

    result = run_table("configs/paper/table2.yaml", repeats=1)

A table config (spec.py) names its pre-trainings, its arms (each a finetune config, the paper's
published mean/std per landmark, and a label) and the comparisons to test. Arms needing ImageNet
weights run from scratch when model.imagenet_weights is absent, and the table says so by name.
Runs go to runs/<table>/<arm>_r<repeat>; a finished run with the same resolved config is reused, an
interrupted one resumed, and a finished first net is kept when only its head's sub-run settings
changed (jobs.py). The jobs run here one after another, or as Ray tasks on this machine's devices or
a cluster (schedule.py, runtime/cluster.py). Outputs (render.py): results/<table>.md/.csv/.json and
figures.
"""
import json
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..evaluation.annotators import protocol_lines
from ..evaluation.describe import describe
from ..evaluation.metrics import read_prediction_errors
from ..runtime.atomic import write_atomic, write_csv_atomic
from ..runtime.backend import set_device
from ..runtime.cluster import open_engine
from ..train.runfiles import run_dir
from ..train.stages import subruns
from . import pseudo_arms
from .jobs import other_settings
from .ensembles import ensemble_fields, ensemble_lines, score_ensembles
from .curve import curve_rows, plot_curve
from .render import csv_rows, first_net_lines, pretraining_lines, table_figures, tabulate
from .schedule import planned_configs, run_arms
from .spec import check_repeats, check_runs, load_preset, load_table, resolve_run, slug


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


def _refuse_replacing(table, arms, overrides):
    """Refuse, before any work, to train over runs that were made with other settings (a --set or an
    edited config would retrain them in place and lose them); --overwrite allows it."""
    planned = planned_configs(table, arms, overrides, _Collected(arms, table["pretrainings"]))
    clash = [(cfg, keys) for cfg in planned if (keys := other_settings(cfg))]
    if clash:
        shown = "; ".join(f"{run_dir(c)} ({', '.join(k[:4])}{', ...' if len(k) > 4 else ''})" for c, k in clash[:4])
        raise ConfigError(f"{table['name']}: {len(clash)} run folder(s) hold runs made with other settings: {shown}"
                          f"{'; ...' if len(clash) > 4 else ''}. Training would replace them. Keep them: give these "
                          "runs another folder (--set runs_dir=runs/OTHER --out results/OTHER); replace them: add "
                          "--overwrite")


def _results_name(table, overrides, only):
    """The results' file stem: the table's name, plus the one swept value and the arms when a run
    was narrowed to them (--set of the swept key, --arms), so it never overwrites the whole table's."""
    name = table["name"]
    if "sweep_key" in table and any(o.split("=", 1)[0].strip() == table["sweep_key"] for o in overrides or []):
        name += f"_{table['sweep_key'].rsplit('.', 1)[-1]}-" + "-".join(slug(v) for v in table["sweep_values"])
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


def run_table(path, repeats=None, gpu=None, out=None, overrides=None, preset=None, gpus=None, only=None,
              ray=None, cpus_per_job=None, overwrite=False, log=print):
    """Train and evaluate every arm; write <name>.md/.json/.csv and figures; returns the result.
    `preset` (spec.load_preset) scales every run's schedule, e.g. "gpu"; `gpus` runs the jobs in
    parallel on those CUDA devices (a local Ray; `gpu`: all on one device); `ray`: "local" or a
    cluster's address, `cpus_per_job` CPUs each where there are no GPUs; `only`: those arms (keys as
    the table writes them, before a sweep) and the arms they take pseudo-labels from; `overwrite`:
    retrain runs whose folders hold runs of other settings (else refused before any work)."""
    for device in list(gpus or []) + [gpu]:
        if device is not None:
            set_device(device)          # a GPU asked for but absent fails here, before any work
    table, run_overrides = _load(path, repeats, preset, overrides, only)
    arms = {a["key"]: a for a in table["arms"]}
    if not overwrite:
        _refuse_replacing(table, arms, run_overrides)
    out = Path(out or table["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(resolve_run(table["arms"][0]["config"], table, "x", 0, run_overrides)[0]["runs_dir"])
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open_engine(runs_dir, ray, gpus, gpu, cpus_per_job, log) as engine:
        got = run_arms(table, arms, engine, run_overrides, _Collected(arms, table["pretrainings"]), log)
        where = engine.describe()
    scored = score_ensembles(got.runs, log) if table.get("ensembles") else {}
    result = tabulate(table, arms, got.errors, got.names, sorted(got.replaced), got.synthetic, got.samples,
                      data_lines(arms, got.data_by_arm), got.wall_s)
    result.update(data=got.data, data_by_arm=got.data_by_arm, preset=table["preset"] or None,
                  baseline_mean_shape_mre_mm=float(np.mean(got.baselines)), pseudo_labels=got.pseudo or None,
                  ran_on=where)
    if "sweep_key" in table:
        result.update(sweep_key=table["sweep_key"], sweep_values=table["sweep_values"])
        curve_rows(result, arms, got.data_by_arm, got.baselines_by_arm)
    result["ensembles"] = ensemble_fields(scored) or None
    markdown = result.pop("markdown_text") + ensemble_lines(arms, result["rows"], scored) + _markdown(result, got, arms)
    result["protocols"] = {k: p for k, p in got.protocols.items() if p}
    stem = out / _results_name(table, overrides, only)
    result["markdown"] = str(stem) + ".md"
    write_atomic(str(stem) + ".md", markdown)
    write_atomic(str(stem) + ".json", json.dumps(result, indent=1))
    write_csv_atomic(str(stem) + ".csv", csv_rows(result))
    table_figures(stem, table, got.runs, got.errors, got.dataset_root, got.pretrain_runs)
    plot_curve(stem, table, result, got.protocols)
    return result
