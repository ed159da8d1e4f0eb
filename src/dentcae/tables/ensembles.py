"""A table's arms scored as ensembles of their repeats (`ensembles: true` in a table config).

    scored = score_ensembles(runs, log)             # {arm: evaluate's summary of its repeats as one ensemble}
    markdown += ensemble_lines(arms, rows, scored)  # beside each arm's single runs: mean +- sd over repeats

After every repeat of an arm has trained, its run folders are evaluated as one ensemble (the
Detector averages their landmarks; inference/detector.py) into runs/<table>/<arm>_ensemble. The
row says what it is: an ensemble of N nets is compared with the single nets' mean +- sd, never with
another arm's single net (an ensemble's gain is not the gain of what the arm changed).
"""
from pathlib import Path

import numpy as np

from ..evaluation.evaluate import evaluate_checkpoint


def score_ensembles(runs, log=print):
    """{arm: summary} of every arm with at least two repeats, its repeats evaluated as one ensemble."""
    out = {}
    for key, folders in runs.items():
        if len(folders) < 2:
            continue
        folder = Path(folders[0]).parent / f"{key}_ensemble"
        log(f"scoring the {len(folders)} repeats of {key} as one ensemble -> {folder}")
        out[key] = evaluate_checkpoint(None, list(folders), out=folder)
    return out


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def ensemble_lines(arms, rows, scored):
    """Markdown: per arm, its single runs (mean +- sd over repeats) beside its ensemble, and how
    the ensemble's spread and flags tell its errors."""
    if not scored:
        return ""
    by_key = {r["arm"]: r for r in rows}
    lines = ["", "Ensembles of each arm's repeats (the landmarks of N nets averaged) beside the single nets:", "",
             "| arm | single nets: MRE, mean ± sd over repeats | ensemble: MRE | change | ensemble SDR 2 mm | "
             "Spearman spread vs error | flagged: share, MRE / unflagged MRE |", "|---|---|---|---|---|---|---|"]
    for key, s in scored.items():
        single = by_key[key]["ours_mre_per_repeat"]
        u = s["uncertainty"]
        rho = "n/a" if u["spearman_spread_error"] is None else f"{u['spearman_spread_error']:+.2f}"
        flagged = "n/a" if u["mre_flagged_mm"] is None else \
            f"{_pct(u['fraction_flagged'])}, {u['mre_flagged_mm']:.2f} / {u['mre_unflagged_mm']:.2f} mm"
        lines.append(f"| {arms[key]['label']} | {np.mean(single):.3f} ± {np.std(single, ddof=1):.3f} mm "
                     f"({len(single)} nets) | {s['mre_mm']:.3f} mm ({len(s['members'])} nets) | "
                     f"{100 * (s['mre_mm'] / np.mean(single) - 1):+.1f}% | {_pct(s['sdr']['2mm'])} | {rho} | {flagged} |")
    return "\n".join(lines) + "\n"


def ensemble_fields(scored):
    """What the table's JSON keeps of each ensemble's summary."""
    keep = ("mre_mm", "median_mm", "sdr", "test_sets", "uncertainty", "members", "out")
    return {key: {k: s[k] for k in keep if k in s} for key, s in scored.items()}
