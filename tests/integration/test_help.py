"""``bliss --help`` explains the modes and how to configure a run, without dumping the config."""

import subprocess
import sys
from pathlib import Path

import pytest

MODES = ("generate", "simulate", "train", "predict", "evaluate", "download")


@pytest.fixture(scope="module")
def help_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    # the console script beside this interpreter, wherever its entry point lives
    script = Path(sys.executable).parent / "bliss"
    if not script.exists():
        pytest.fail(f"no `bliss` console script at {script}; run `pip install -e .`")
    return subprocess.run(
        [str(script), "--help"],
        cwd=tmp_path_factory.mktemp("help"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_exits_zero(help_run: subprocess.CompletedProcess) -> None:
    assert help_run.returncode == 0, help_run.stderr[-2000:]


def test_help_names_every_mode_with_an_example(help_run: subprocess.CompletedProcess) -> None:
    for mode in MODES:
        assert f"mode={mode}" in help_run.stdout, mode


def test_help_says_how_to_see_and_change_the_config(
    help_run: subprocess.CompletedProcess,
) -> None:
    assert "--cfg job" in help_run.stdout
    assert "key=value" in help_run.stdout
    assert "experiment:" in help_run.stdout  # the config groups and their options


def test_help_is_short_and_prints_no_config(help_run: subprocess.CompletedProcess) -> None:
    lines = help_run.stdout.splitlines()
    assert len(lines) < 80, len(lines)
    assert "_target_" not in help_run.stdout
    assert "n_shards" not in help_run.stdout  # a key of the composed config
