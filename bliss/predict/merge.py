"""The merged catalog of a many-input ``mode=predict`` run: a Parquet dataset partitioned by input.

``<predict.output>/merged.parquet/input=<name>/part-0.parquet`` holds the catalog of input
``<name>`` (names are URI-escaped, as pyarrow's hive partitioning expects). Read it whole with
``pandas.read_parquet(path)`` or ``pyarrow.dataset.dataset(path, partitioning="hive")``; the
partition key becomes an ``input`` column, and a filter such as ``[("input", "=", name)]`` reads
one input only. Each part file is written by astropy, so ``QTable.read(part)`` restores units and
the provenance meta of its catalog.
"""

import json
import shutil
from pathlib import Path
from urllib.parse import quote

from astropy.table import QTable

from bliss.catalog.io import write_table
from bliss.predict.inputs import MERGED_NAME

__all__ = ["PART_NAME", "read_records", "write_merged_catalog"]

PART_NAME = "part-0.parquet"
_PARTITION_PREFIX = "input="


def read_records(directory: str | Path, fingerprint: str) -> dict[str, dict]:
    """The completion records (``<name>.json``) in ``directory`` made with ``fingerprint``.

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
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
            records[record["name"]] = {**record, "record_path": path}
    return records


def write_merged_catalog(directory: str | Path, fingerprint: str) -> tuple[Path, int]:
    """Refresh ``merged.parquet`` in ``directory``: one partition per complete catalog.

    A partition is (re)written when it is missing or older than its input's record; partitions
    of inputs without a record made with ``fingerprint`` are removed, so the dataset always
    equals the directory's complete catalogs. Each part file is written atomically.

    Returns:
        The dataset directory and its number of rows.
    """
    directory = Path(directory)
    merged = directory / MERGED_NAME
    merged.mkdir(parents=True, exist_ok=True)
    keep, n_rows = set(), 0
    for name, record in read_records(directory, fingerprint).items():
        catalog = directory / record["files"][0]
        if not catalog.exists():
            continue
        partition = merged / f"{_PARTITION_PREFIX}{quote(name, safe='')}"
        part = partition / PART_NAME
        keep.add(partition.name)
        n_rows += int(record["n_sources"])
        if part.exists() and part.stat().st_mtime_ns >= record["record_path"].stat().st_mtime_ns:
            continue
        write_table(QTable.read(catalog), part)
    for partition in merged.iterdir():
        if partition.name.startswith(_PARTITION_PREFIX) and partition.name not in keep:
            shutil.rmtree(partition)
    return merged, n_rows
