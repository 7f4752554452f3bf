"""The provenance every catalog records: bliss version, git commit, config and checkpoint hashes."""

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import bliss
from bliss.encoder.checkpoint import checkpoint_hash

__all__ = ["git_sha", "table_meta"]


def git_sha() -> str:
    """The git commit of the bliss source tree, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(bliss.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def table_meta(checkpoint: str | Path, config_yaml: str) -> dict[str, Any]:
    """``BLISSVER``, ``GITSHA``, ``CFGHASH`` (of ``config_yaml``), ``CKPT`` and ``CKPTHASH``."""
    return {
        "BLISSVER": bliss.__version__,
        "GITSHA": git_sha(),
        "CFGHASH": hashlib.sha256(config_yaml.encode()).hexdigest()[:16],
        "CKPT": Path(checkpoint).name,
        "CKPTHASH": checkpoint_hash(checkpoint),
    }
