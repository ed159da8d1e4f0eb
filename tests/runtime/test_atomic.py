"""Atomic files and folders: what a kill -9 leaves behind is removed by the next writer."""
import os
import subprocess
import sys

from dentcae.runtime.atomic import staged_folder


def test_a_dead_writers_partial_folder_is_removed_and_a_living_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)                                           # a process that has exited
    stale = tmp_path / f".entry.partial-{pid}-abc"
    stale.mkdir()
    (stale / "half.h5").write_bytes(b"x" * 100)
    living = tmp_path / f".entry.partial-{os.getpid()}-def"         # this process: still writing
    living.mkdir()
    with staged_folder(tmp_path / "entry") as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (tmp_path / "entry/done.txt").read_text() == "ok"
    assert not stale.exists() and living.exists()


def test_a_temporary_left_by_a_killed_writer_goes_with_the_next_write(tmp_path):
    from dentcae.runtime.atomic import write_atomic
    dead = tmp_path / ".plot_detections.tmp999999999.png"         # no such pid: its writer was killed
    dead.write_bytes(b"half")
    other = tmp_path / ".plot_other.tmp999999999.png"              # another file's: left alone
    other.write_bytes(b"half")
    write_atomic(tmp_path / "plot_detections.png", b"whole")
    assert not dead.exists() and other.exists() and (tmp_path / "plot_detections.png").read_bytes() == b"whole"
