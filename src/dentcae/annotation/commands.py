"""The annotation loop's verb: `dentcae select` (cli.py adds it)."""


def cmd_select(args):
    from ..config import load_config
    from .select import select_images
    cfg = load_config(args.config) if args.config else None
    report = select_images(args.dataset, args.budget, args.out, features=args.features, rule=args.rule, cfg=cfg,
                           ignore_annotations=args.ignore_annotations, overwrite=args.overwrite, gpu=args.gpu)
    print(f"{len(report['chosen'])} images to label first, of {report['candidates']} candidates "
          f"({report['labelled']} already labelled):")
    if args.budget > report["candidates"]:
        print(f"note: --budget {args.budget} is more than the {report['candidates']} candidates: every one is chosen")
    for i, name in enumerate(report["chosen"], 1):
        print(f"  {i:3d}. {name}")
    print(f"order of every candidate: {report['csv']}; contact sheet: {report['sheet']}")
    return 0


def add_verbs(sub):
    p = sub.add_parser("select", help="which unlabelled X-rays to label first (a CSV in priority order + contact sheet)",
                       description="Order a dataset's unlabelled, non-test images by how much labelling them adds "
                       "(greedy k-medoids on image features: representative first, then diverse), whole duplicate "
                       "groups at a time, and mark the first that fit --budget. Deterministic. See "
                       "docs/annotation-loop.md.")
    p.add_argument("dataset", help="a dataset folder (dentcae import ...): its labelled images count as chosen")
    p.add_argument("--budget", type=int, required=True, metavar="N", help="how many images you can label now")
    p.add_argument("--out", required=True, metavar="FILE.csv",
                   help="the selection CSV (rank, image, group, chosen); the contact sheet goes beside it as .png")
    p.add_argument("--features", default="image", metavar="image|RUN|BUNDLE|PRETRAINING",
                   help="image: plain image descriptors (default, no model needed); or an encoder that describes the "
                        "images: a trained detector (finetune run folder or bundle) or a pre-training's run folder "
                        "(CAE, augmentation pretext, denoising: no label needed)")
    p.add_argument("--rule", choices=("kmedoids", "kcenter"), default="kmedoids",
                   help="kmedoids (default): representative, then diverse; kcenter: farthest point, outliers first")
    p.add_argument("--config", default=None, help="a config whose test split (besides pinned test images) is never chosen")
    p.add_argument("--ignore-annotations", action="store_true",
                   help="treat the labelled images as unlabelled (replay the choice on a fully annotated dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier selection CSV at --out")
    p.add_argument("--gpu", type=int, default=None, metavar="N", help="run the encoder on CUDA device N")
    p.set_defaults(fn=cmd_select)
