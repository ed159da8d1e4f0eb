"""Table arms that train on pseudo-labels: `pseudo_labels_from: <teacher arm>` in a table config.

    folder, report = pseudo_data(teacher_cfgs, student_cfg, student_name, log)  # runs/<table>/<student>_data
    extra = student_overrides(folder)                              # --set items that point the arm at it

After the teacher arm has trained (same label budget), its detector labels the unlabelled training
images (unlabelled/pseudo_label.py: never a test image) with the student config's `pseudo_labels`
settings (filters, the teachers' views). `teachers: repeat` (the default): each repeat's teacher
labels for the same repeat's student; `teachers: ensemble`: every repeat of the teacher arm together,
one ensemble, labels once for all the student's repeats. The folder holds the kept landmarks beside
the real labels and is made once: it is remade when a teacher's weights or the settings change
(pseudo.json). The student trains on it (model.partial_labels: its missing landmarks are masked out
of the loss, in both nets). When the teacher's budget left no training image unlabelled there is
nothing to add: the student is its teacher (`no_candidates`), and the table says so.
"""
import json
import shutil
from pathlib import Path

from ..inference.runs import run_weights_stamp
from ..train.runfiles import run_dir
from ..unlabelled.pseudo_label import pseudo_label


def data_folder(teacher_cfg, student_name):
    """The student's pseudo-labelled dataset, beside the table's run folders."""
    return Path(teacher_cfg["runs_dir"]) / f"{student_name}_data"


def _made_by(folder, teacher_runs, settings):
    """pseudo.json of the folder when it is whole and was made by these teachers' current weights
    with these settings, else None."""
    try:
        report = json.loads((folder / "pseudo.json").read_text())
    except (OSError, ValueError):
        return None
    same = report.get("teachers_weights_sha256") == [run_weights_stamp(r) for r in teacher_runs] \
        and report.get("settings") == settings
    return report if same else None


def pseudo_data(teacher_cfgs, student_cfg, student_name, log=print):
    """(folder, pseudo.json's dict) of the student's data: reused when these teachers made it with
    the student's settings, else (re)made from the teachers' finished runs."""
    runs = [run_dir(c) for c in teacher_cfgs]
    settings, folder = student_cfg["pseudo_labels"], data_folder(teacher_cfgs[0], student_name)
    report = _made_by(folder, runs, settings) if folder.exists() else None
    if report is not None:
        log(f"reusing the pseudo-labels {folder} of {', '.join(map(str, runs))}")
        return folder, report
    if folder.exists():
        log(f"{folder} was made by other weights or settings: making it again")
        shutil.rmtree(folder)
    log(f"pseudo-labelling the unlabelled training images with {', '.join(map(str, runs))} -> {folder}")
    report = pseudo_label(runs, folder, settings, progress=False)
    log(f"  kept {100 * report['kept_fraction']:.1f}% of the landmarks of {report['images']['candidate']} images")
    return folder, report


def no_candidates(report):
    """The teacher's budget left no unlabelled training image to pseudo-label."""
    return report["images"]["candidate"] == 0


def student_overrides(folder):
    """--set items that train an arm on the pseudo-labelled folder (its rows are pinned: same splits,
    same test images; its real labels were chosen by the teacher's budget)."""
    return [f"dataset.root={folder}", "dataset.synth=null", "dataset.label_budget=null"]


def report_fields(report):
    """What a table keeps of pseudo.json: how many landmarks were kept and how accurate they were."""
    acc = report["accuracy_on_withheld_labels"]
    return {"round": report.get("round", 1), "threshold": report["threshold"],
            "teachers": len(report["source_runs"]), "filters": report["settings"]["filters"],
            "candidate_images": report["images"]["candidate"],
            "kept_fraction": report["kept_fraction"], "kept_landmarks": acc["kept_landmarks"],
            "withheld_label_images": acc["images"], "kept_mre_mm": acc["kept_mre_mm"],
            "rejected_mre_mm": acc["rejected_mre_mm"], "kept_within_2mm": acc["kept_within_2mm"],
            "filter_curves": report["filter_curves_on_withheld_labels"]}


def _curve_cells(curves):
    """'confidence 2.1 / spread 1.4 / shape residual 1.9 mm' at half the landmarks kept."""
    if not curves:
        return "n/a"
    return " / ".join(f"{name} {c['kept_mre_mm'][4]:.2f}" for name, c in curves.items()) + " mm"


def report_lines(labels, reports):
    """Markdown: per pseudo-label arm and repeat, the kept share and its accuracy on withheld labels."""
    if not reports:
        return ""
    mm = lambda v: "n/a" if v is None else f"{v:.2f} mm"          # noqa: E731
    lines = ["", "Pseudo-labels (measured on the training images whose real labels the budget withheld; "
             "never on test images, never used to choose):", "",
             "| arm | repeat | teachers | filters | images labelled | landmarks kept | kept: error | kept within 2 mm | "
             "rejected: error | best half by each criterion: error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, per_repeat in reports.items():
        for r, f in enumerate(per_repeat):
            within = "n/a" if f["kept_within_2mm"] is None else f"{100 * f['kept_within_2mm']:.1f}%"
            lines.append(f"| {labels[key]} | {r} | {f['teachers']} | {', '.join(f['filters'])} | "
                         f"{f['candidate_images']} | {100 * f['kept_fraction']:.1f}% | {mm(f['kept_mre_mm'])} | {within} | "
                         f"{mm(f['rejected_mre_mm'])} | {_curve_cells(f['filter_curves'])} |")
    return "\n".join(lines) + "\n"
