"""Fault injection: every row of issue 17's table (and issue 14's training guards), at a tiny size.

A kill is a real SIGKILL of a real ``bliss`` process; damaged files are real bit flips and
truncations; a full disk is a patched writer raising ENOSPC. Everything else runs in this
process (the killed process starts with the module, so that its start-up overlaps the other
tests), which keeps the module under a minute on two CPU cores.
"""

import csv
import errno
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch
from astropy.table import QTable
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from bliss.atomic import atomic_path
from bliss.cli.generate import build_simulator
from bliss.cli.main import MODES, report, run
from bliss.cli.train import build_encoder_module
from bliss.data.shards import load_shard, read_manifest
from bliss.encoder.checkpoint import read_checkpoint
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError, BlissWarning
from bliss.simulator.field import write_simulated_field
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.integration.fault_callbacks import STALL_AT, STALLED

REPO = Path(__file__).parents[2]
SHIPPED = REPO / "bliss" / "models" / "sdss_generalist.ckpt"
# no anomaly detection (debug preset) nor sanity validation: 5x faster tiny runs
DATA = [
    *TINY_OVERRIDES,
    "generate.n_shards=4",
    "generate.images_per_shard=4",
    "trainer.detect_anomaly=false",
    "+trainer.num_sanity_val_steps=0",
]
# 8 training images: 4 steps per epoch, no validation before step 1000, a CSV row every step
LONG_EPOCHS = [
    "trainer.limit_train_batches=null",
    "trainer.check_val_every_n_epoch=1000",
    "trainer.log_every_n_steps=1",
    "train.test_after_fit=false",
]
MODEL = ["mode=train", *DATA, "trainer.max_steps=1", "train.test_after_fit=false"]
CSV_LOGGER = [
    "++logger.csv._target_=bliss.encoder.callbacks.ResumableCSVLogger",
    "++logger.csv.save_dir=${paths.run_dir}",
    "++logger.csv.name=csv",
    "++logger.csv.version=''",
]
KILLED = [
    "mode=train",
    *DATA,
    *LONG_EPOCHS,
    *CSV_LOGGER,
    "trainer.max_steps=12",
    "callbacks.checkpoint.every_n_train_steps=5",
    "+callbacks.stall._target_=tests.integration.fault_callbacks.StallAt",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shards of 4 images, 16 x 16 px (train 2 shards, val 1, test 1)."""
    root = tmp_path_factory.mktemp("faults")
    run(compose_config(["mode=generate", *DATA], root))
    return root


def _cached(root: Path) -> Path:
    return root / "data" / "cached" / "sdss_16px"


def _hydra_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    """``bliss <args>`` through Hydra's real entry point, in this process; its exit status."""
    from bliss.cli.main import _hydra_entry

    quiet = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    monkeypatch.setattr(sys, "argv", ["bliss", *args, *quiet])
    # Hydra's logging config disables every existing logger; later tests read their records
    loggers = logging.Logger.manager.loggerDict.values()
    saved = [(lg, lg.disabled) for lg in loggers if isinstance(lg, logging.Logger)]
    root_level = logging.getLogger().level
    try:
        _hydra_entry()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        GlobalHydra.instance().clear()
        for logger, disabled in saved:
            logger.disabled = disabled
        logging.getLogger().setLevel(root_level)
    return 0


def _csv_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as stream:
        return [int(row["step"]) for row in csv.DictReader(stream) if row.get("train/loss")]


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


# ---- training: settings, divergence, Ctrl-C ---------------------------------------------


def test_a_resume_with_null_starts_afresh_and_keeps_the_old_run(
    root: Path, model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(model.parents[1], run_dir)
    overrides = [*MODEL, f"paths.run_dir={run_dir}", "train.resume=null"]
    run(compose_config(overrides, root))

    moved = list((run_dir / "previous").glob("*/checkpoints/last.ckpt"))
    assert len(moved) == 1 and _step(moved[0]) == 1
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 1  # from step 0 again
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()  # the run validated once


def test_divergence_names_its_step_and_the_last_good_checkpoint(root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        [
            "mode=train",
            *DATA,
            *LONG_EPOCHS,
            "encoder.optimizer.lr=1e6",
            "trainer.max_steps=30",
            "callbacks.checkpoint.every_n_train_steps=1",
            f"paths.run_dir={tmp_path}",
        ],
        root,
    )
    with pytest.raises(BlissValueError, match=r"diverged at global step \d+") as info:
        run(cfg)
    message = str(info.value)
    assert "tensor(" not in message and len(message) < 600  # no dump of torch's
    found = re.search(r"global step (\d+).*the last good checkpoint is (\S+): ", message)
    if found is None:  # diverged before two checkpoints existed: nothing good is claimed
        assert "no good checkpoint was written before it" in message
    else:  # the weights saved at the failing step are not offered
        assert _step(Path(found[2])) < int(found[1])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=-4", "data.batch_size=-4"),
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("encoder.optimizer.lr=nan", "encoder.optimizer.lr=nan"),
        ("data.batch_size=9", "fewer than one batch"),  # 8 training images
        ("prior.density_per_arcmin2=99", "prior.density_per_arcmin2 (shards 60.0, now 99"),
    ],
)
def test_bad_training_settings_are_one_bliss_error(root: Path, override: str, key: str) -> None:
    with pytest.raises(BlissConfigError) as info:
        run(compose_config(["mode=train", *DATA, override], root))
    assert key in str(info.value)


def test_a_one_step_warm_up_is_scheduled(root: Path) -> None:
    encoder = build_encoder_module(compose_config(["mode=train", *DATA, "trainer.max_steps=20"]))
    with pytest.warns(BlissWarning, match="one-step warm-up"):
        scheduler = encoder.configure_optimizers()["lr_scheduler"]["scheduler"]
    for _ in range(20):
        scheduler.optimizer.step()
        scheduler.step()
    assert all(torch.isfinite(torch.tensor(lr)) for lr in scheduler.get_last_lr())


def test_ctrl_c_during_training_is_one_line(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_config(
        [
            "mode=train",
            *DATA,
            "+callbacks.interrupt._target_=tests.integration.fault_callbacks.InterruptAt",
            f"paths.run_dir={tmp_path}",
        ],
        root,
    )
    assert report(cfg) == 130
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("bliss: interrupted; rerun the same command to resume")
    )


def test_ctrl_c_in_any_mode_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(cfg: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(MODES, "generate", interrupted)
    assert report(compose_config(["mode=generate"])) == 130
    assert capsys.readouterr().err == "bliss: interrupted; rerun the same command to resume\n"


# ---- data: bit flips, NaN, nonsense catalogs, truncation ------------------------------------


def _copy_shards(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cached"
    shutil.copytree(_cached(root), copy)
    return copy


def _largest_record_offset(path: Path) -> int:
    """Where the bytes of the largest record of a torch zip file start (a shard's images)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as stream:
        stream.seek(info.header_offset)
        header = stream.read(30)
    return (
        info.header_offset
        + 30
        + int.from_bytes(header[26:28], "little")
        + int.from_bytes(header[28:30], "little")
    )


def _flip(path: Path, offset: int, n_bytes: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n_bytes):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite(directory: Path, name: str, edit: object) -> None:
    """Re-save a shard with ``edit`` applied and its checksum updated: a writer that bypasses
    bliss's checks, so that only the content check can catch it."""
    path = directory / name
    payload = load_shard(path, check=False)
    edit(payload)
    torch.save(payload, path)
    crc = f"{zlib.crc32(path.read_bytes()):08x}"
    manifest = read_manifest(directory)
    for entry in manifest["shards"]:
        if entry["file"] == name:
            entry.update(bytes=path.stat().st_size, crc32=crc)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _train_split(directory: Path) -> str:
    return json.loads((directory / "splits.json").read_text())["train"][0]


def test_flipped_bytes_in_a_shard_are_refused_before_training(root: Path, tmp_path: Path) -> None:
    cached = _copy_shards(root, tmp_path)
    shard = cached / "shard_000001.pt"
    _flip(shard, _largest_record_offset(shard) + 100, 64)
    cfg = compose_config(["mode=train", *DATA, f"paths.cached_data={cached}"], tmp_path)
    with pytest.raises(BlissIOError, match=r"shard_000001\.pt \(CRC-32 \w+, \w+ written"):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step


@pytest.mark.parametrize(
    ("key", "edit", "named"),
    [
        ("images", lambda p: p["images"].view(-1)[5].fill_(float("nan")), "`images` values"),
        ("fluxes", lambda p: p["catalog/fluxes"].zero_(), "`fluxes` values"),
        ("disk_q", lambda p: p["catalog/disk_q"].fill_(1.5), "`disk_q` values"),
    ],
)
def test_impossible_content_is_refused_with_the_shard_named(
    root: Path, tmp_path: Path, key: str, edit: object, named: str
) -> None:
    cached = _copy_shards(root, tmp_path)
    name = _train_split(cached)
    _rewrite(cached, name, edit)
    cfg = compose_config(["mode=train", *DATA, f"paths.cached_data={cached}"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup()  # the checksums match: the pre-flight pass cannot see it
    with pytest.raises(BlissValueError, match=named) as info:
        for index in range(len(datamodule.datasets["train"])):
            datamodule.datasets["train"][index]
    assert name in str(info.value)


def test_generate_regenerates_a_truncated_shard(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached = _copy_shards(root, tmp_path)
    shard = cached / "shard_000002.pt"
    size = shard.stat().st_size
    with open(shard, "r+b") as stream:
        stream.truncate(1000)
    cfg = compose_config(["mode=generate", *DATA, f"paths.cached_data={cached}"], tmp_path)
    with caplog.at_level("WARNING", logger="bliss.data.generate"):
        manifest = run(cfg)
    assert any("shard_000002.pt is damaged" in m for m in caplog.messages)
    assert shard.stat().st_size == size
    assert manifest["n_shards"] == 4
    assert [s["bytes"] for s in manifest["shards"]][2] == size
    load_shard(shard, manifest["shards"][2])


# ---- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_flipped_bytes_in_a_shipped_checkpoint_are_refused(
    tmp_path: Path, with_sidecar: bool
) -> None:
    damaged = tmp_path / SHIPPED.name
    shutil.copy(SHIPPED, damaged)
    if with_sidecar:
        shutil.copy(SHIPPED.with_name(SHIPPED.name + ".sha256"), tmp_path)
    _flip(damaged, _largest_record_offset(damaged) + 64, 512)
    with pytest.raises(BlissIOError, match="SHA-256" if with_sidecar else "Bad CRC-32"):
        read_checkpoint(damaged)
    cfg = compose_config(["mode=predict", f"predict.checkpoint={damaged}"], tmp_path)
    with pytest.raises(BlissIOError, match="damaged"):
        run(cfg)


def test_the_shipped_checkpoints_pass_their_checks() -> None:
    for model in SHIPPED.parent.glob("*.ckpt"):
        assert model.with_name(model.name + ".sha256").is_file()
        read_checkpoint(model)


# ---- predict: reruns, a full disk, Ctrl-C, leftovers ------------------------------------------


@pytest.fixture(scope="module")
def model(root: Path) -> Path:
    """A 1-step model, validated once (so it has a best.ckpt); its last.ckpt."""
    run_dir = root / "model"
    run(compose_config([*MODEL, f"paths.run_dir={run_dir}"], root))
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def fields(root: Path) -> Path:
    folder = root / "fields"
    simulator = build_simulator(compose_config(["mode=generate", *DATA]))
    for seed in range(3):
        write_simulated_field(simulator, seed, folder / f"f{seed}.fits", folder / f"f{seed}.truth")
    return folder


def _predict(root: Path, model: Path, *overrides: str) -> dict:
    options = [
        "mode=predict",
        *TINY_OVERRIDES,
        f"predict.checkpoint={model}",
        "predict.margin_px=4",  # 16 px windows (the model's image size): an 8 px core
        # these tests are about files, not fluxes: no PSF fit of the stars a 1-step model finds
        "++predict.psf_photometry=false",
        "predict.plot=false",
        "trainer.enable_progress_bar=false",
    ]
    return run(compose_config([*options, *overrides], root))


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every table write and every JSON record write fails with ENOSPC."""
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_table(*args: object, **kwargs: object) -> None:
        raise full

    write_text = pathlib.Path.write_text

    def no_json(self: Path, *args: object, **kwargs: object) -> int:
        if self.name.endswith(".json") or self.name.endswith(".json.tmp"):
            raise full
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(QTable, "write", no_table)
    monkeypatch.setattr(pathlib.Path, "write_text", no_json)


def test_a_refused_or_failed_rerun_never_shrinks_the_merged_catalog(
    root: Path,
    model: Path,
    fields: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "out"
    two = f"predict.input=[{fields}/f0.fits,{fields}/f1.fits]"
    first = _predict(root, model, two, f"predict.output={out}", "predict.threshold=0.5")
    n_rows = len(pd.read_parquet(out / "merged.parquet"))
    assert n_rows == first["n_sources"] > 0

    # another threshold: every input is refused, the merged catalog stays whole
    with pytest.raises(BlissIOError, match="2 of 2 inputs failed"):
        _predict(root, model, two, f"predict.output={out}", "predict.threshold=0.6")
    assert len(pd.read_parquet(out / "merged.parquet")) == n_rows

    # a full disk: the new input and the merge fail, the summary is printed, nothing shrinks
    _full_disk(monkeypatch)
    three = f"predict.input=[{fields}/f0.fits,{fields}/f1.fits,{fields}/f2.fits]"
    capsys.readouterr()
    with pytest.raises(BlissIOError, match="1 of 3 inputs failed and the merge failed") as info:
        _predict(root, model, three, f"predict.output={out}", "predict.threshold=0.5")
    assert "No space left on device" in str(info.value)
    assert "3 inputs: 0 cataloged, 2 already complete, 1 failed" in capsys.readouterr().out
    monkeypatch.undo()
    assert len(pd.read_parquet(out / "merged.parquet")) == n_rows
    assert not [p.name for p in out.rglob("*") if p.name.startswith(".")]


def test_a_full_disk_in_single_predict_is_one_bliss_error(
    root: Path, model: Path, fields: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", no_space)
    output = tmp_path / "cat.fits"
    with pytest.raises(BlissIOError, match="No space left on device"):
        _predict(
            root,
            model,
            f"predict.input={fields}/f0.fits",
            f"predict.output={output}",
            "predict.plot=true",
        )
    assert output.exists() and not output.with_suffix(".png").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(
    root: Path, model: Path, fields: Path, tmp_path: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    with atomic_path(tmp_path / "cat.png") as live:  # this process: alive, kept
        dead = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{gone.pid}-"))
        dead.touch()  # the 0-byte PNG of a killed writer
        _predict(
            root, model, f"predict.input={fields}/f0.fits", f"predict.output={tmp_path}/cat.fits"
        )
        assert live.exists() and not dead.exists()


# ---- a kill -9 and the same command again (last: the process started with the module) ------


@pytest.fixture(scope="module", autouse=True)
def training_process(root: Path) -> subprocess.Popen:
    """``bliss mode=train ...`` as a user runs it, set to stall at step 7.

    Started before the module's first test, so that its start-up (imports, ~10 s) overlaps the
    in-process tests; :func:`killed_run` kills it.
    """
    script = Path(sys.executable).with_name("bliss")
    command = [str(script) if script.exists() else shutil.which("bliss"), *KILLED]
    command.append(f"paths.root={root}")
    env = {**os.environ, "PYTHONPATH": str(REPO), STALL_AT: "7"}
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def killed_run(root: Path, training_process: subprocess.Popen) -> Path:
    """The training process, killed with SIGKILL at step 7; its run directory."""
    process = training_process
    latest = root / "outputs" / "train" / "latest"
    deadline = time.monotonic() + 120
    while not (latest / STALLED).exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended by itself: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run did not reach step 7 in 120 s")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return latest.resolve()


def test_a_checkpoint_exists_before_the_first_validation(killed_run: Path) -> None:
    # every_n_train_steps=5, killed at step 7, no validation yet: last.ckpt of step 5
    assert _step(killed_run / "checkpoints" / "last.ckpt") == 5
    assert not (killed_run / "checkpoints" / "best.ckpt").exists()
    # the rows up to the checkpoint were flushed with it
    assert _csv_steps(killed_run)[-1] >= 4


def test_the_same_command_resumes_the_killed_run_and_its_logs(
    root: Path, killed_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    before = _csv_steps(killed_run)
    status = _hydra_main(monkeypatch, [*KILLED, f"paths.root={root}"])

    assert status == 0
    err = capsys.readouterr().err
    assert f"continuing from {killed_run / 'checkpoints' / 'last.ckpt'} (step 5)" in err
    assert f"checkpoints in {killed_run / 'checkpoints'}" in err
    assert _step(killed_run / "checkpoints" / "last.ckpt") == 12
    after = _csv_steps(killed_run)
    assert after[: len(before)][:4] == before[:4]  # the history before the kill is kept
    assert sorted(set(after)) == after and after[-1] == 11  # each step once, to the end


def test_a_resume_with_another_learning_rate_is_refused_with_the_key(
    root: Path, killed_run: Path
) -> None:
    cfg = compose_config(
        [*KILLED, f"paths.run_dir={killed_run}", "encoder.optimizer.lr=1e-4"], root
    )
    with pytest.raises(BlissConfigError, match=r"encoder\.optimizer\.lr \(checkpoint 0\.002"):
        run(cfg)
