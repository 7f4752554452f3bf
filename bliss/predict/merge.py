"""The merged catalog of a many-input ``mode=predict`` run: a Parquet dataset partitioned by input.

``<predict.output>/merged.parquet/input=<name>/part-0.parquet`` holds the catalog of input
``<name>`` (names are URI-escaped, as pyarrow's hive partitioning expects). Read it whole with
``pandas.read_parquet(path)`` or ``pyarrow.dataset.dataset(path, partitioning="hive")``; the
partition key becomes an ``input`` column, and a filter such as ``[("input", "=", name)]`` reads
one input only. Each part file is written by astropy, so ``QTable.read(part)`` restores units and
the provenance meta of its catalog. ``_bliss_merge.json`` (ignored by pyarrow, as every name
starting with ``_``) records the fingerprint and the row count.

The dataset never goes backwards: a new one is built aside (``.merged.parquet.new-<pid>``) and
swapped in by two renames, so a reader sees the old dataset or the new one, never a half merge;
a run that cataloged nothing with its config (every input refused or failed) leaves the old one
as it is, and so does a run whose config differs from the one the dataset holds.
"""

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from astropy.table import QTable

from bliss.catalog.io import write_table
from bliss.errors import BlissIOError
from bliss.predict.inputs import MERGED_NAME

__all__ = ["MERGE_RECORD", "PART_NAME", "read_records", "write_merged_catalog"]

PART_NAME = "part-0.parquet"
MERGE_RECORD = "_bliss_merge.json"
_PARTITION_PREFIX = "input="
_OLD = f".{MERGED_NAME}.old"
_NEW = f".{MERGED_NAME}.new-"


def read_records(directory: str | Path, fingerprint: str | None) -> dict[str, dict]:
    """The completion records (``<name>.json``) in ``directory`` made with ``fingerprint``.

    Args:
        directory: the output directory.
        fingerprint: the catalog config's fingerprint; None: records of any fingerprint.

    Returns:
        name -> record (``name``, ``input``, ``fingerprint``, ``n_sources``, ``files``), with the
        record's path under ``"record_path"``.
    """
    records = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # not a record bliss wrote
            continue
        if not isinstance(record, dict) or "name" not in record or "fingerprint" not in record:
            continue
        if fingerprint is None or record["fingerprint"] == fingerprint:
            records[record["name"]] = {**record, "record_path": path}
    return records


def _merged_state(merged: Path) -> tuple[str | None, int]:
    """The fingerprint and row count of an existing merged dataset (``None, 0`` if empty)."""
    try:
        state = json.loads((merged / MERGE_RECORD).read_text())
        return state.get("fingerprint"), int(state.get("n_rows", 0))
    except (OSError, json.JSONDecodeError, ValueError):
        pass
    parts = sorted(merged.glob(f"{_PARTITION_PREFIX}*/{PART_NAME}"))
    if not parts:  # an empty dataset holds nothing to keep
        return None, 0
    import pyarrow.parquet as pq

    # written before the record existed: each part's meta has its catalog's fingerprint
    n_rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    return str(QTable.read(parts[0]).meta.get("FPRINT")), n_rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(directory: Path) -> None:
    """Undo what a merge killed between its renames, or while building, left behind."""
    merged, old = directory / MERGED_NAME, directory / _OLD
    if old.is_dir():
        if merged.exists():  # killed after the swap, before removing the old dataset
            shutil.rmtree(old, ignore_errors=True)
        else:  # killed between the renames: the old dataset is the complete one
            os.rename(old, merged)
    for staging in directory.glob(f"{_NEW}*"):
        pid = staging.name[len(_NEW) :]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _build(directory: Path, records: dict[str, dict], merged: Path, staging: Path) -> int:
    """Write the dataset of ``records`` into ``staging``, unchanged parts linked; its rows."""
    n_rows = 0
    for name, record in records.items():
        partition = f"{_PARTITION_PREFIX}{quote(name, safe='')}"
        old, new = merged / partition / PART_NAME, staging / partition / PART_NAME
        new.parent.mkdir(parents=True)
        n_rows += int(record["n_sources"])
        if old.exists() and old.stat().st_mtime_ns >= record["record_path"].stat().st_mtime_ns:
            try:  # unchanged: share the file (the old dataset is removed after the swap)
                os.link(old, new)
            except OSError:
                shutil.copy2(old, new)
            continue
        write_table(QTable.read(directory / record["files"][0]), new)
    return n_rows


def write_merged_catalog(directory: str | Path, fingerprint: str) -> tuple[Path, int, bool]:
    """Refresh ``merged.parquet`` in ``directory``: one partition per complete catalog.

    The new dataset holds one partition per input whose record was made with ``fingerprint``
    and whose catalog exists; unchanged partitions are carried over, changed ones rewritten. It
    replaces the old one only when it holds something and the old one holds the same config's
    catalogs (or nothing).

    Returns:
        The dataset directory, its number of rows, and whether the old dataset was kept as it
        was (nothing cataloged with ``fingerprint``, or it holds another config's catalogs).

    Raises:
        BlissIOError: the new dataset cannot be written (a full disk); the old one is kept.
    """
    directory = Path(directory)
    merged = directory / MERGED_NAME
    _recover(directory)
    records = {
        name: record
        for name, record in read_records(directory, fingerprint).items()
        if (directory / record["files"][0]).exists()
    }
    if merged.is_dir():
        held, n_held = _merged_state(merged)
        if not records or (n_held and held not in (None, fingerprint)):
            return merged, n_held, True
    staging = directory / f"{_NEW}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        n_rows = _build(directory, records, merged, staging)
        state = {"fingerprint": fingerprint, "n_rows": n_rows, "inputs": sorted(records)}
        (staging / MERGE_RECORD).write_text(json.dumps(state, indent=1))
        old = directory / _OLD
        if merged.exists():
            os.rename(merged, old)
        os.rename(staging, merged)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise BlissIOError(
            f"{merged} could not be refreshed ({err}); the previous merged catalog is kept and "
            "every input's catalog is in place. Free some space and re-run the same command: "
            "complete inputs are skipped and the merge is redone."
        ) from err
    return merged, n_rows, False
