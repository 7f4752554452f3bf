"""The ``bliss`` console command, run as a user runs it (a few seconds per call)."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bliss.data.shards import load_shard, read_manifest
from tests.conftest import TINY_OVERRIDES

TIMEOUT_S = 120


def _bliss_command() -> list[str]:
    script = Path(sys.executable).with_name("bliss")
    if script.exists():
        return [str(script)]
    found = shutil.which("bliss")
    if found is None:
        pytest.fail("the `bliss` console script is not installed; run `pip install -e .`")
    return [found]


def _bliss(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``bliss`` in ``tmp_path`` with every output under it."""
    command = [*_bliss_command(), *args]
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def _tiny(tmp_path: Path) -> list[str]:
    return [*TINY_OVERRIDES, f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/h"]


def _explanations(result: subprocess.CompletedProcess, word: str) -> list[str]:
    """Output lines naming ``word``, except Hydra's echo of the command-line overrides."""
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if word in line and "with overrides" not in line]


def _cached(tmp_path: Path) -> Path:
    return tmp_path / "data" / "cached" / "sdss_16px"  # paths.cached_data of the tiny config


def test_generate_writes_loadable_shards(tmp_path):
    result = _bliss(tmp_path, "mode=generate", *_tiny(tmp_path))

    assert result.returncode == 0, result.stderr
    manifest = read_manifest(_cached(tmp_path))
    assert manifest["n_shards"] == 3 and manifest["n_images"] == 6
    for shard in manifest["shards"]:
        assert load_shard(_cached(tmp_path) / shard["file"])["images"].shape == (2, 5, 16, 16)
    assert (tmp_path / "h" / ".hydra" / "config.yaml").exists()


def test_unknown_mode_lists_the_valid_modes(tmp_path):
    result = _bliss(
        tmp_path, "mode=nonsense", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/h"
    )

    assert result.returncode != 0
    explained = [line for line in _explanations(result, "nonsense") if "generate" in line]
    assert explained, result.stderr
    for mode in ("train", "predict", "evaluate"):
        assert mode in explained[0]


def test_missing_mode_is_named(tmp_path):
    result = _bliss(tmp_path, f"paths.root={tmp_path}")

    assert result.returncode != 0
    assert re.search(r"\bmode\b", result.stderr), result.stderr
    assert not (tmp_path / "data").exists()


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = _bliss(tmp_path, "--cfg", "job", "mode=generate")

    assert result.returncode == 0, result.stderr
    assert "survey:" in result.stdout
    assert "n_shards" in result.stdout
    assert list(tmp_path.iterdir()) == []  # printing the config runs nothing


def test_a_typo_in_a_key_is_named(tmp_path):
    result = _bliss(tmp_path, "mode=generate", "generate.n_shardz=3", *_tiny(tmp_path))

    assert result.returncode != 0
    assert _explanations(result, "n_shardz"), result.stderr
    assert not _cached(tmp_path).exists()


def test_a_bad_prior_value_fails_before_any_shard(tmp_path):
    result = _bliss(tmp_path, "mode=generate", "prior.density_per_arcmin2=-1", *_tiny(tmp_path))

    assert result.returncode != 0
    explained = _explanations(result, "prior.density_per_arcmin2")
    assert any("expected" in line for line in explained), result.stderr
    assert not _cached(tmp_path).exists()


SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None


@pytest.mark.parametrize(
    "launcher",
    [
        "basic",
        # submitit's local executor: the SLURM launcher's code path, in local processes
        pytest.param(
            "submitit_local",
            marks=pytest.mark.skipif(not SUBMITIT, reason="hydra-submitit-launcher missing"),
        ),
    ],
)
def test_multirun_runs_one_job_per_seed(tmp_path, launcher):
    # each seed gets its own shard directory: one directory holds one seed's shards
    result = _bliss(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        "mode=generate",
        "seed=1,2",
        *TINY_OVERRIDES,
        "generate.n_shards=1",
        f"paths.root={tmp_path}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "paths.cached_data=${paths.root}/cached_seed${seed}",
    )

    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    if launcher == "submitit_local":  # two submitit jobs ran, each with its own log
        assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
    seeds = []
    for seed in (1, 2):
        manifest = read_manifest(tmp_path / f"cached_seed{seed}")
        assert manifest["n_shards"] == 1
        seeds.append(manifest["shards"][0]["seed"])
    assert seeds[0] != seeds[1]
