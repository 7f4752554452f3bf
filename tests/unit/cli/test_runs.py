"""Run directories: the same training command names the same directory; `latest` links; exits."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bliss.cli.main import MODES, report
from bliss.cli.runs import link_latest
from bliss.errors import BlissIOError
from tests.conftest import compose_config


def _run_dir(overrides: list[str]) -> str:
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return str(cfg.hydra.run.dir)


def test_the_same_training_command_names_the_same_directory() -> None:
    first = _run_dir(["mode=train", "experiment=debug", "trainer.max_steps=3"])
    assert re.search(r"/outputs/train/debug-[0-9a-f]{8}$", first), first
    assert _run_dir(["trainer.max_steps=3", "experiment=debug", "mode=train"]) == first
    # train.resume=null restarts the command's own run, in its directory
    assert (
        _run_dir(["mode=train", "experiment=debug", "trainer.max_steps=3", "train.resume=null"])
        == first
    )
    assert _run_dir(["mode=train", "experiment=debug", "trainer.max_steps=4"]) != first
    assert "/train/train-" in _run_dir(["mode=train"])
    # other modes: a new directory per run
    assert "/predict/20" in _run_dir(["mode=predict"])


def test_latest_points_at_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    cfg = compose_config(
        ["mode=train", f"paths.run_dir={tmp_path}/outputs/train/debug-1"], tmp_path
    )
    link = link_latest(cfg)
    assert link == tmp_path / "outputs" / "train" / "latest"
    assert str(link.readlink()) == "debug-1"  # relative: the tree can move
    cfg.paths.run_dir = f"{tmp_path}/outputs/train/debug-2"
    link_latest(cfg)
    assert str(link.readlink()) == "debug-2"
    # elsewhere than <output>/<mode>/, or not the first process: no link
    assert link_latest(compose_config(["mode=train"], tmp_path)) is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg.paths.run_dir = f"{tmp_path}/outputs/train/debug-3"
    assert link_latest(cfg) is None and str(link.readlink()) == "debug-2"


def test_every_end_is_one_line_and_an_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cfg = OmegaConf.create({"mode": "generate"})

    def fails(cfg: object) -> None:
        raise BlissIOError("shard_000001.pt is damaged")

    def interrupted(cfg: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(MODES, "generate", fails)
    assert report(cfg) == 1
    assert capsys.readouterr().err == "bliss: error: BlissIOError: shard_000001.pt is damaged\n"
    monkeypatch.setitem(MODES, "generate", interrupted)
    assert report(cfg) == 130
    assert capsys.readouterr().err == "bliss: interrupted; rerun the same command to resume\n"
    monkeypatch.setitem(MODES, "generate", lambda cfg: None)
    assert report(cfg) == 0
