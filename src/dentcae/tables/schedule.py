"""A table's jobs, in the order they depend on each other, on an engine (runtime/cluster.py: here
one after another, or as Ray tasks):

    got = run_arms(table, arms, engine, overrides, collected, log)

First every pre-training and every arm (an arm starts after the pre-training it copies from), then,
wave by wave, the arms that need other arms finished: pseudo-label arms once their teachers are
(their data is made here, on the driver: tables/pseudo_arms.py), `starts_from` arms (model.init: run,
from that arm's run of the same repeat), and `ensemble_of` arms (the source arm's repeats scored as
one ensemble with the arm's test-time keys, on the driver; one row, repeat 0). On a parallel engine
every job's prepared data is built here first: jobs that found a shared cache entry being built would
fail on its lock rather than wait.
"""
import functools

from ..data.prepare import ensure_dataset, prepare
from ..evaluation.evaluate import evaluate_checkpoint
from ..train.runfiles import run_dir
from . import pseudo_arms
from .jobs import train_and_evaluate, train_pretraining
from .spec import DEPENDS, resolve_run


def _note_replaced(got, note, log):
    """A run that is not what its config asked for, said once in the log and the table."""
    if note and note not in got.replaced:
        log(f"replaced: {note}")
        got.replaced.add(note)


def _resolver(table, overrides, got, log):
    """resolve(config, name, repeat, arm_set, extra=[]) -> one run's config; replaced weights noted once."""
    def resolve(config, name, repeat, arm_set=None, extra=()):
        cfg, note = resolve_run(config, table, name, repeat, list(overrides or []) + list(extra), arm_set)
        _note_replaced(got, note, log)
        return cfg
    return resolve


def _pretrainings(table, overrides):
    """{name: pre-training config} of the pre-trainings the arms start from, in the table's order."""
    inits = {resolve_run(a["config"], table, a["key"], 0, overrides, a.get("set"))[0]["model"]["init"]
             for a in table["arms"] if not any(a.get(d) for d in DEPENDS)}
    return {name: config for name, config in table["pretrainings"].items() if name in inits}


def _plan(table, arms, overrides, got, log):
    """{pre-training run folder: config} and [(key, repeat, config, pre-training run folder or None)]
    of the pre-trainings and the arms that take no pseudo-labels."""
    resolve, pre, jobs = _resolver(table, overrides, got, log), {}, []
    pretrainings = _pretrainings(table, overrides)
    for r in range(table["repeats"]):
        pre_runs = {}
        for name, config in pretrainings.items():
            cfg = resolve(config, name, r if table["repeat_over"] == "seed" else 0)
            pre_runs[name] = str(run_dir(cfg))
            pre.setdefault(pre_runs[name], cfg)
            got.pretrain_runs[name].append(run_dir(cfg))
        for key, arm in arms.items():
            if any(arm.get(d) for d in DEPENDS):
                continue                        # after the arms they need (_dependent_jobs)
            cfg = resolve(arm["config"], key, r, arm.get("set"))
            source = pre_runs.get(cfg["model"]["init"])
            if source:
                cfg["model"]["pretrain_run"] = source
            jobs.append((key, r, cfg, source))
    return pre, jobs


def _job(engine, fn, log):
    return fn if engine.parallel else functools.partial(fn, log=log)


def _prepare_first(engine, cfgs, log):
    if engine.parallel:
        for cfg in cfgs:
            ensure_dataset(cfg, log)
            prepare(cfg, log=log)


def _submit(engine, jobs, pre_refs, got, done, log):
    """The arms' jobs, each after its pre-training; their summaries collected repeat by repeat."""
    fn = _job(engine, train_and_evaluate, log)
    refs = [engine.submit(fn, cfg, f"{key}_r{r}", after=[pre_refs[source]] if source else [])
            for key, r, cfg, source in jobs]
    engine.gather(list(pre_refs.values()))          # a pre-training that failed says so by its name
    for (key, r, cfg, _), summary in zip(jobs, engine.gather(refs)):
        done[key, r] = (cfg, summary)
    for key, r, _, _ in sorted(jobs, key=lambda j: j[1]):      # repeat by repeat, as the errors are kept
        got.add(key, *done[key, r])


def _ready(table, arms, key, done, got):
    """The arm is not scored yet and every arm it needs has finished every repeat."""
    needs = [arms[key].get(d) for d in DEPENDS if arms[key].get(d)]
    return not got.errors[key] and needs and all((n, r) in done for n in needs for r in range(table["repeats"]))


def _pseudo_extra(table, arm, key, r, done, resolve, got, log):
    """--set items pointing a pseudo-label arm at its data (made or reused), or None when the arm is
    its teacher (the budget left nothing unlabelled: done at once, noted)."""
    teacher = arm["pseudo_labels_from"]
    ensemble = arm.get("teachers") == "ensemble"
    teachers = [done[teacher, i][0] for i in range(table["repeats"])] if ensemble else [done[teacher, r][0]]
    student = resolve(arm["config"], key, r, arm.get("set"))
    folder, report = pseudo_arms.pseudo_data(teachers, student, key if ensemble else f"{key}_r{r}", log)
    if not ensemble or r == 0:                          # an ensemble labels once for every repeat
        got.pseudo.setdefault(key, []).append(pseudo_arms.report_fields(report))
    if pseudo_arms.no_candidates(report):
        _note_replaced(got, f"{key}: no training image was left unlabelled, so the arm is its teacher {teacher}", log)
        done[key, r] = done[teacher, r]
        got.add(key, *done[teacher, r])
        return None
    return pseudo_arms.student_overrides(folder)


def _score_ensemble(arm, key, done, table, resolve, got, log):
    """An ensemble_of arm: the source arm's repeats as one ensemble, with the arm's test-time keys."""
    cfg = resolve(arm["config"], key, 0, arm.get("set"))
    runs = [run_dir(done[arm["ensemble_of"], r][0]) for r in range(table["repeats"])]
    log(f"scoring the {len(runs)} repeats of {arm['ensemble_of']} as one ensemble -> {run_dir(cfg)}")
    done[key, 0] = (cfg, evaluate_checkpoint(cfg, runs, out=run_dir(cfg)))
    got.add(key, *done[key, 0])


def _dependent_jobs(table, arms, done, overrides, got, log):
    """The jobs of the arms whose needed arms are done: pseudo-label arms (their data made or reused)
    and starts_from arms; ensemble_of arms are scored here at once."""
    resolve, jobs = _resolver(table, overrides, got, log), []
    for key, arm in arms.items():
        if not _ready(table, arms, key, done, got):
            continue
        if arm.get("ensemble_of"):
            _score_ensemble(arm, key, done, table, resolve, got, log)
            continue
        for r in range(table["repeats"]):
            extra = []
            if arm.get("pseudo_labels_from"):
                extra = _pseudo_extra(table, arm, key, r, done, resolve, got, log)
                if extra is None:
                    continue
            if arm.get("starts_from"):
                extra += ["model.init=run", f"model.init_run={run_dir(done[arm['starts_from'], r][0])}"]
            jobs.append((key, r, resolve(arm["config"], key, r, arm.get("set"), extra), None))
    return jobs


def planned_configs(table, arms, overrides, got):
    """The configs of the runs known before any trains, as run_arms trains them: the pre-trainings
    and every repeat of the arms that need no other arm."""
    pre, jobs = _plan(table, arms, overrides, got, lambda *_: None)
    return list(pre.values()) + [cfg for _, _, cfg, _ in jobs]


def run_arms(table, arms, engine, overrides, got, log):
    """Every pre-training and arm of every repeat on `engine`, each arm evaluated, into `got`."""
    done = {}
    pre, jobs = _plan(table, arms, overrides, got, log)
    _prepare_first(engine, list(pre.values()) + [cfg for _, _, cfg, _ in jobs], log)
    fn = _job(engine, train_pretraining, log)
    pre_refs = {run: engine.submit(fn, cfg, run.rsplit("/", 1)[-1]) for run, cfg in pre.items()}
    _submit(engine, jobs, pre_refs, got, done, log)
    while not all(got.errors[k] for k in arms):
        jobs = _dependent_jobs(table, arms, done, overrides, got, log)
        if not jobs and not all(got.errors[k] for k in arms):
            raise RuntimeError(f"{table['name']}: arms {', '.join(k for k in arms if not got.errors[k])} "
                               "wait for arms that did not run")
        _prepare_first(engine, [cfg for _, _, cfg, _ in jobs], log)
        _submit(engine, jobs, {}, got, done, log)
    return got
