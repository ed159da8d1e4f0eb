"""Table arms that train on pseudo-labels: `pseudo_labels_from: <teacher arm>` in a table config.

    folder, report = pseudo_data(teacher_cfg, student_name, log)     # runs/<table>/<student>_r<r>_data
    extra = student_overrides(folder)                                # --set items that point the arm at it

After the teacher arm has trained (same repeat, same label budget), its detector labels the
unlabelled training images (deploy/pseudo.py: never a test image); the folder holds its confident
landmarks beside the real labels and is made once per teacher: it is remade when the teacher's
weights change (pseudo.json's `source_weights_sha256`). The student arm's config trains on it
(model.partial_labels: its missing landmarks are masked out of the loss). When the teacher's budget
left no training image unlabelled there is nothing to add: the student is its teacher
(`no_candidates`), and the table says so. A pseudo-label arm whose teacher is itself one is a
second round: the teacher's pseudo-labelled images are labelled anew by it.
"""
import json
import shutil
from pathlib import Path

from ..inference.runs import run_weights_stamp
from ..deploy.pseudo import pseudo_label
from ..train.runfiles import run_dir


def data_folder(teacher_cfg, student_name):
    """The student's pseudo-labelled dataset, beside the table's run folders."""
    return Path(teacher_cfg["runs_dir"]) / f"{student_name}_data"


def _made_by_teacher(folder, teacher_run):
    """The folder is whole and was made by the teacher's current weights."""
    try:
        report = json.loads((folder / "pseudo.json").read_text())
    except (OSError, ValueError):
        return None
    return report if report.get("source_weights_sha256") == run_weights_stamp(teacher_run) else None


def pseudo_data(teacher_cfg, student_name, log=print):
    """(folder, pseudo.json's dict) of the student's data: reused when the teacher made it, else
    (re)made from the teacher's finished run."""
    teacher_run, folder = run_dir(teacher_cfg), data_folder(teacher_cfg, student_name)
    report = _made_by_teacher(folder, teacher_run) if folder.exists() else None
    if report is not None:
        log(f"reusing the pseudo-labels {folder} of {teacher_run}")
        return folder, report
    if folder.exists():
        log(f"{folder} was made by other weights than {teacher_run}'s: making it again")
        shutil.rmtree(folder)
    log(f"pseudo-labelling the unlabelled training images with {teacher_run} -> {folder}")
    report = pseudo_label(teacher_run, folder, progress=False)
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
            "candidate_images": report["images"]["candidate"],
            "kept_fraction": report["kept_fraction"], "kept_landmarks": acc["kept_landmarks"],
            "withheld_label_images": acc["images"], "kept_mre_mm": acc["kept_mre_mm"],
            "rejected_mre_mm": acc["rejected_mre_mm"], "kept_within_2mm": acc["kept_within_2mm"]}


def report_lines(labels, reports):
    """Markdown: per pseudo-label arm and repeat, the kept share and its accuracy on withheld labels."""
    if not reports:
        return ""
    mm = lambda v: "n/a" if v is None else f"{v:.2f} mm"          # noqa: E731
    lines = ["", "Pseudo-labels (measured on the training images whose real labels the budget withheld; "
             "never on test images):", "", "| arm | repeat | round | images labelled | landmarks kept | kept: error | "
             "kept within 2 mm | rejected: error |", "|---|---|---|---|---|---|---|---|"]
    for key, per_repeat in reports.items():
        for r, f in enumerate(per_repeat):
            within = "n/a" if f["kept_within_2mm"] is None else f"{100 * f['kept_within_2mm']:.1f}%"
            lines.append(f"| {labels[key]} | {r} | {f['round']} | {f['candidate_images']} | {100 * f['kept_fraction']:.1f}% | "
                         f"{mm(f['kept_mre_mm'])} | {within} | {mm(f['rejected_mre_mm'])} |")
    return "\n".join(lines) + "\n"
