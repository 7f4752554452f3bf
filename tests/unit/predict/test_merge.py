"""The merged Parquet dataset is swapped in whole and never goes backwards."""

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from astropy.table import QTable

from bliss.catalog.io import write_table
from bliss.errors import BlissIOError
from bliss.predict import merge
from bliss.predict.merge import MERGE_RECORD, write_merged_catalog


def _catalog(directory: Path, name: str, n_rows: int, fingerprint: str = "F1") -> None:
    table = QTable({"flux_r": [1.0 + i for i in range(n_rows)]}, meta={"FPRINT": fingerprint})
    write_table(table, directory / f"{name}.fits")
    record = {
        "name": name,
        "input": f"{name}.fits",
        "fingerprint": fingerprint,
        "n_sources": n_rows,
        "files": [f"{name}.fits"],
    }
    (directory / f"{name}.json").write_text(json.dumps(record))


def _rows(directory: Path) -> int:
    return len(pd.read_parquet(directory / "merged.parquet"))


def test_the_merge_holds_the_complete_catalogs_and_records_itself(tmp_path) -> None:
    _catalog(tmp_path, "a", 2)
    _catalog(tmp_path, "b", 3)
    path, n_rows, kept = write_merged_catalog(tmp_path, "F1")
    assert (n_rows, kept, _rows(tmp_path)) == (5, False, 5)
    assert json.loads((path / MERGE_RECORD).read_text())["fingerprint"] == "F1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_run_of_another_config_or_with_nothing_new_keeps_the_merge(tmp_path) -> None:
    _catalog(tmp_path, "a", 2)
    write_merged_catalog(tmp_path, "F1")
    # every input refused: no catalog of F2
    assert write_merged_catalog(tmp_path, "F2")[1:] == (2, True)
    # a new input cataloged with F2 next to F1's: the F1 merge is not replaced by F2's
    _catalog(tmp_path, "c", 4, fingerprint="F2")
    assert write_merged_catalog(tmp_path, "F2")[1:] == (2, True)
    assert _rows(tmp_path) == 2


def test_unchanged_parts_are_carried_over_and_deleted_catalogs_dropped(tmp_path) -> None:
    _catalog(tmp_path, "a", 2)
    _catalog(tmp_path, "b", 3)
    write_merged_catalog(tmp_path, "F1")
    part = tmp_path / "merged.parquet" / "input=a" / "part-0.parquet"
    inode = part.stat().st_ino
    (tmp_path / "b.fits").unlink()
    assert write_merged_catalog(tmp_path, "F1")[1] == 2
    assert part.stat().st_ino == inode  # linked, not rewritten
    assert not (tmp_path / "merged.parquet" / "input=b").exists()


def test_a_full_disk_keeps_the_old_merge_and_cleans_up(tmp_path, monkeypatch) -> None:
    _catalog(tmp_path, "a", 2)
    write_merged_catalog(tmp_path, "F1")
    _catalog(tmp_path, "b", 3)

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge, "write_table", no_space)
    with pytest.raises(BlissIOError, match="previous merged catalog is kept"):
        write_merged_catalog(tmp_path, "F1")
    assert _rows(tmp_path) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_a_merge_killed_between_its_renames_is_recovered(tmp_path) -> None:
    _catalog(tmp_path, "a", 2)
    merged, _, _ = write_merged_catalog(tmp_path, "F1")
    os.rename(merged, tmp_path / ".merged.parquet.old")  # the kill: no merged.parquet
    (tmp_path / ".merged.parquet.new-999999999").mkdir()  # and a dead builder's staging
    _catalog(tmp_path, "b", 3)
    assert write_merged_catalog(tmp_path, "F1")[1] == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_merge_written_before_the_record_is_read_from_its_parts(tmp_path) -> None:
    _catalog(tmp_path, "a", 2)
    merged, _, _ = write_merged_catalog(tmp_path, "F1")
    (merged / MERGE_RECORD).unlink()
    assert write_merged_catalog(tmp_path, "F2")[1:] == (2, True)
