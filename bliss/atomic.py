"""Write files atomically: to a temporary name in the same directory, then rename.

A crash or an error while writing never leaves a partial file at the final path, and never
touches a file already there. A process killed mid-write (``kill -9``, a node lost) cannot
remove its temporary file; the name records the host and process that wrote it, so that the
next run's :func:`remove_stale_temporaries` deletes it, and only it, once that process is gone.
"""

import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "remove_stale_temporaries"]

#: ``.<stem>.<host>-<pid>-<random><suffix>.tmp``: whose temporary file it is
_TEMPORARY = re.compile(r"^\.(?P<stem>.*)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[^.]+.*\.tmp$")
#: a temporary file of another host is stale once this old (its process cannot be asked)
_FOREIGN_AGE_S = 24 * 3600.0


def _host() -> str:
    """This machine's short name, letters and digits only (it is part of a file name)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname().split(".")[0]) or "host"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (mode 0644).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=path.parent,
        prefix=f".{path.stem}.{_host()}-{os.getpid()}-",
        suffix=f"{path.suffix}.tmp",
    )
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(directory: str | Path, stem: str | None = None) -> list[Path]:
    """Delete the temporary files that killed writers left in ``directory``.

    A temporary file is stale when it was written on this host by a process that no longer runs,
    or on another host more than a day ago (SLURM array tasks share directories across nodes,
    and a live writer elsewhere cannot be asked). Files of live writers are kept, so concurrent
    jobs writing into one directory are safe.

    Args:
        directory: where to look (not recursively); a missing directory holds none.
        stem: only temporaries of files whose name starts with ``stem`` [default: all].

    Returns:
        The files removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host, now, removed = _host(), time.time(), []
    for path in directory.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match is None or (stem is not None and not match["stem"].startswith(stem)):
            continue
        try:
            if match["host"] == host:
                stale = not _alive(int(match["pid"]))
            else:
                stale = now - path.stat().st_mtime > _FOREIGN_AGE_S
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer finished (or another cleaner got there) first
            continue
    return removed
