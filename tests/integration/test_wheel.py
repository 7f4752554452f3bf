"""The wheel of the ``bliss-toolkit`` distribution ships the models, sample data, configs and plugin."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    build = ROOT / "build"  # setuptools' scratch folder in the source tree
    had_build = build.exists()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if not had_build:
        shutil.rmtree(build, ignore_errors=True)
    wheels = sorted(out.glob("bliss_toolkit-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(
            f"cannot build a wheel here (setuptools / wheel missing?): {result.stderr[-500:]}"
        )
    with zipfile.ZipFile(wheels[0]) as archive:
        return set(archive.namelist())


def _shipped(pattern: str) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern))


@pytest.mark.parametrize(
    "pattern",
    [
        "bliss/models/*.ckpt",
        "bliss/models/*.ckpt.sha256",
        "bliss/sample_data/*.fits",
        "bliss/conf/**/*.yaml",
        "hydra_plugins/bliss_slurm/*.py",
    ],
)
def test_wheel_ships_the_package_data(wheel_names: set[str], pattern: str) -> None:
    files = _shipped(pattern)
    assert files, f"no {pattern} in the source tree"
    missing = [f for f in files if f not in wheel_names]
    assert not missing, f"not in the wheel: {missing}"


def test_wheel_names_the_distribution_and_the_command(wheel_names: set[str]) -> None:
    assert "bliss/cli/main.py" in wheel_names
    info = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    assert info and info[0].startswith("bliss_toolkit-"), info
    assert not any(n.startswith("tests/") for n in wheel_names)


def test_plain_install_pulls_no_dev_tools() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "bliss-toolkit"
    required = {
        d.split("[")[0].split(">")[0].split("=")[0].strip() for d in project["dependencies"]
    }
    dev_tools = {
        "pytest",
        "ruff",
        "pre-commit",
        "mkdocs",
        "mkdocstrings",
        "hydra-submitit-launcher",
    }
    assert not required & dev_tools, f"[project] dependencies hold {sorted(required & dev_tools)}"
