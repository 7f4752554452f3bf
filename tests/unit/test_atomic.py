"""Atomic writes and the removal of temporary files that killed writers left behind."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bliss.atomic import _host, atomic_path, remove_stale_temporaries


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_say_whose_they_are(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "cat.fits") as tmp:
        assert tmp.name.startswith(".cat.") and tmp.name.endswith(".fits.tmp")
        assert f"-{os.getpid()}-" in tmp.name


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.png") as live:
        live.touch()
        dead = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
        dead.touch()
        foreign_new = tmp_path / ".a.otherhost-1-abcdefgh.png.tmp"
        foreign_old = tmp_path / ".b.otherhost-1-abcdefgh.png.tmp"
        foreign_new.touch()
        foreign_old.touch()
        day_ago = time.time() - 2 * 24 * 3600
        os.utime(foreign_old, (day_ago, day_ago))
        user_file = tmp_path / ".notes.tmp"  # not a bliss temporary: never touched
        user_file.touch()

        removed = remove_stale_temporaries(tmp_path)

        assert sorted(removed) == sorted([dead, foreign_old])
        assert live.exists() and foreign_new.exists() and user_file.exists()


def test_a_stem_limits_what_is_removed(tmp_path: Path) -> None:
    pid = _dead_pid()
    mine = tmp_path / f".cat_samples.{_host()}-{pid}-abcdefgh.fits.tmp"
    other = tmp_path / f".field.{_host()}-{pid}-abcdefgh.png.tmp"
    for path in (mine, other):
        path.touch()
    assert remove_stale_temporaries(tmp_path, stem="cat") == [mine]
    assert other.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []
