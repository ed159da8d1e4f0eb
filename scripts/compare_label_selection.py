"""The annotation loop's target from configs/isbi/label_selection.yaml's runs: the images a rule
chose against the mean of the random draws, per label budget, over the training seeds.

    python scripts/compare_label_selection.py [--runs runs/label_selection] [--rule kmedoids] [--json out.json]

For each budget whose runs `<arm>_<budget>_r<seed>` finished (summary.json) for the rule and every
random draw, over the seeds all of them have: each arm's MRE per seed, mean +- sd over seeds, SDR 2
mm and the mean shape of its labels; the rule's relative change against the mean of the draws (each
draw averaged over seeds first); a paired Wilcoxon over the test images (each image's error averaged
over seeds, the draws' also over draws), and against each draw alone. It reads the runs as the table
wrote them and trains nothing.
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from dentcae.evaluation.metrics import read_prediction_errors


def _finished(runs):
    """{(arm, budget): {seed: (per-image MRE (N,), summary)}} of the finished runs."""
    got = {}
    for summary in sorted(Path(runs).glob("*_r*/summary.json")):
        m = re.fullmatch(r"(.+)_(\d+)_r(\d+)", summary.parent.name)
        if m:
            errors, _ = read_prediction_errors(summary.parent / "predictions.csv")
            got.setdefault((m[1], int(m[2])), {})[int(m[3])] = (errors.mean(1), json.loads(summary.read_text()))
    return got


def _sd(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def compare(got, budget, rule, draws):
    """The comparison at one budget, or None when the rule or a draw has no finished seed in common."""
    arms = [rule] + draws
    if not all((a, budget) in got for a in arms):
        return None
    seeds = sorted(set.intersection(*(set(got[a, budget]) for a in arms)))
    if not seeds:
        return None
    rows = {a: {"mre_mm": [got[a, budget][s][1]["mre_mm"] for s in seeds],
                "sdr_2mm": [got[a, budget][s][1]["sdr"]["2mm"] for s in seeds],
                "mean_shape_mm": got[a, budget][seeds[0]][1]["baseline_mean_shape_mre_mm"]} for a in arms}
    per_image = {a: np.mean([got[a, budget][s][0] for s in seeds], 0) for a in arms}
    random_mean = float(np.mean([np.mean(rows[d]["mre_mm"]) for d in draws]))
    chosen = float(np.mean(rows[rule]["mre_mm"]))
    pooled = np.mean([per_image[d] for d in draws], 0)
    return {"budget": budget, "seeds": seeds, "arms": rows, "random_mean_mm": random_mean, "rule_mm": chosen,
            "relative_change": (chosen - random_mean) / random_mean,
            "rule_sd_over_seeds_mm": _sd(rows[rule]["mre_mm"]),
            "random_sd_over_seeds_mm": _sd([np.mean([rows[d]["mre_mm"][i] for d in draws]) for i in range(len(seeds))]),
            "wilcoxon_p": float(wilcoxon(per_image[rule], pooled).pvalue),
            "against_each_draw": {d: {"relative_change": float((per_image[rule].mean() - per_image[d].mean())
                                                               / per_image[d].mean()),
                                      "wilcoxon_p": float(wilcoxon(per_image[rule], per_image[d]).pvalue)}
                                  for d in draws}}


def _print(c, rule):
    print(f"\n{c['budget']} labels, seeds {c['seeds']}")
    for arm, row in c["arms"].items():
        print(f"  {arm:10s} MRE {' / '.join(f'{x:.3f}' for x in row['mre_mm'])} mm = {np.mean(row['mre_mm']):.3f} +- "
              f"{_sd(row['mre_mm']):.3f}; SDR 2 mm {' / '.join(f'{100 * x:.1f}' for x in row['sdr_2mm'])} %; "
              f"mean shape {row['mean_shape_mm']:.2f} mm")
    print(f"  {rule} {c['rule_mm']:.3f} mm against the draws' mean {c['random_mean_mm']:.3f} mm: "
          f"{100 * c['relative_change']:+.1f} % (paired Wilcoxon over the test images p = {c['wilcoxon_p']:.2g}); "
          f"sd over seeds: {rule} {c['rule_sd_over_seeds_mm']:.3f}, draws' mean {c['random_sd_over_seeds_mm']:.3f} mm")
    for d, x in c["against_each_draw"].items():
        print(f"    against {d}: {100 * x['relative_change']:+.1f} % (p = {x['wilcoxon_p']:.2g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/label_selection", help="the table's run folder (default %(default)s)")
    ap.add_argument("--rule", default="kmedoids", help="the arm that chose its images (default %(default)s)")
    ap.add_argument("--draws", default="random0,random1,random2", help="the random draws' arms (default %(default)s)")
    ap.add_argument("--json", default=None, help="also write the comparison here")
    args = ap.parse_args()
    got = _finished(args.runs)
    budgets = sorted({b for (a, b) in got if a == args.rule})
    out = [c for b in budgets if (c := compare(got, b, args.rule, args.draws.split(","))) is not None]
    if not out:
        raise SystemExit(f"{args.runs}: no budget has finished runs of {args.rule} and every draw ({args.draws})")
    for c in out:
        _print(c, args.rule)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
