"""The verb that labels unlabelled X-rays: `dentcae pseudo-label` (cli.py adds it)."""
from pathlib import Path

import yaml

from ..pseudo_settings import FILTERS
from .choose import DEFAULTS


def _views(text):
    if Path(text).is_file():                 # a YAML file of views (configs/recipes/views.yaml), or the list itself
        text = Path(text).read_text()
    views = yaml.safe_load(text)
    if not isinstance(views, list):
        raise SystemExit(f"dentcae pseudo-label: views must be a YAML list such as '[{{rotate: 3}}]', got {text!r}")
    return views


def cmd_pseudo_label(args):
    from .pseudo_label import pseudo_label
    settings = {"filters": [f.strip() for f in args.filters.split(",") if f.strip()],
                "min_confidence": args.min_confidence, "spread_keep": args.spread_keep,
                "shape_quantile": args.shape_quantile,
                "views": None if args.views is None else _views(args.views),
                "refine_views": None if args.refine_views is None else _views(args.refine_views)}
    r = pseudo_label(args.runs, args.out, settings)
    acc = r["accuracy_on_withheld_labels"]
    print(f"dataset {args.out}: {r['pseudo_labelled_images']} of {r['images']['candidate']} unlabelled training images "
          f"pseudo-labelled by {len(args.runs)} teacher(s) ({100 * r['kept_fraction']:.1f} % of their landmarks kept by "
          f"{', '.join(settings['filters'])}); {r['images']['labelled']} labelled and {r['images']['test']} test images "
          "kept as they were; every candidate landmark in pseudo_labels.csv")
    if acc["images"]:
        rejected = acc["rejected_mre_mm"]
        print(f"on {acc['images']} images whose labels were withheld: kept pseudo-labels {acc['kept_mre_mm']:.2f} mm "
              f"from them ({100 * (acc['kept_within_2mm'] or 0):.1f} % within 2 mm), rejected ones "
              f"{'n/a' if rejected is None else f'{rejected:.2f}'} mm (filter_curves.svg: each criterion's curve)")
    print(f"train on it: dentcae finetune --config configs/ours/heatmap_pseudo.yaml --set dataset.root={args.out} "
          "--set dataset.synth=null")
    return 0


def add_verbs(sub):
    p = sub.add_parser("pseudo-label", help="label unlabelled training images with trained detectors: a new dataset",
                       description="Trained heatmap detectors (one run, or several runs of the same data as an "
                       "ensemble, optionally through test-time views) label the training images that have no labels; "
                       "the landmarks that pass the filters, the real labels and the test images (untouched, never "
                       "predicted) go to a new dataset folder. Train on it with model.partial_labels: true.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="finetune run folders of the heatmap head (several: an "
                   "ensemble, e.g. the seeds of one table arm)")
    p.add_argument("--out", required=True, help="the new dataset folder (must not exist)")
    p.add_argument("--filters", default=",".join(DEFAULTS["filters"]),
                   help=f"comma-separated, all must pass: {', '.join(FILTERS)} (default: %(default)s)")
    p.add_argument("--min-confidence", type=float, default=None, metavar="C",
                   help="confidence filter: keep landmarks of at least this confidence (default: the teachers' flag "
                   "threshold, the 5 %% quantile on their labelled training images)")
    p.add_argument("--spread-keep", type=float, default=DEFAULTS["spread_keep"], metavar="SHARE",
                   help="spread filter: per landmark, keep this share of the images where the teachers agree best "
                   "(default: %(default)s)")
    p.add_argument("--shape-quantile", type=float, default=DEFAULTS["shape_quantile"], metavar="Q",
                   help="shape filter: the residual limit, this quantile of the labelled shapes' leave-one-out "
                   "residuals (default: %(default)s)")
    p.add_argument("--views", default=None, metavar="YAML", help="the teachers' test-time views, e.g. "
                   "'[{rotate: 3}, {scale: 1.05}]' or a YAML file of them (default: the runs' own test_time.views)")
    p.add_argument("--refine-views", default=None, metavar="YAML", help="the teachers' refine-net views "
                   "(default: the runs' own model.refine.views)")
    p.set_defaults(fn=cmd_pseudo_label)
