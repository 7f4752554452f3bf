"""End-to-end training: generate -> train -> resume -> reload, and the DDP data split."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from bliss.cli.main import run
from bliss.data.samplers import ShardBlockSampler
from bliss.encoder.checkpoint import CONFIG_KEY, load_encoder
from bliss.errors import BlissConfigError
from tests.conftest import TINY_OVERRIDES, compose_config

TRAIN = ["mode=train", *TINY_OVERRIDES]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of the tiny config (3 shards of 2 images, 16 x 16 px), generated once."""
    root = tmp_path_factory.mktemp("bliss_train")
    manifest = run(compose_config(["mode=generate", *TINY_OVERRIDES], root))
    assert manifest["n_images"] == 6
    return root


@pytest.fixture(scope="module")
def trained(root: Path) -> tuple[Path, dict]:
    """A 2-step training run; returns its last checkpoint and the returned metrics."""
    metrics = run(compose_config(TRAIN, root))
    return root / "run" / "checkpoints" / "last.ckpt", metrics


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_train_writes_self_describing_checkpoint(trained: tuple[Path, dict]) -> None:
    last, metrics = trained
    assert last.is_file()
    checkpoint = _load(last)
    assert checkpoint["global_step"] == 2
    config = checkpoint[CONFIG_KEY]
    assert config["mode"] == "train"
    assert sorted(config["encoder"]["posterior"]["factors"]) == sorted(
        compose_config(TRAIN).encoder.posterior.factors
    )
    assert config["survey"]["bands"] == ["u", "g", "r", "i", "z"]
    # the run also validated and tested: losses are finite numbers
    for key in ("train/loss", "val/loss", "test/loss"):
        assert torch.isfinite(torch.tensor(metrics[key])), key


def test_resume_continues_global_step(
    root: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    last, _ = trained
    cfg = compose_config(
        [
            *TRAIN,
            f"train.resume={last}",
            "trainer.max_steps=4",
            "train.test_after_fit=false",
            f"paths.run_dir={tmp_path / 'resumed'}",
        ],
        root,
    )
    run(cfg)
    resumed = _load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 4
    # the weights moved on from the checkpoint they started from
    before, after = _load(last)["state_dict"], resumed["state_dict"]
    assert before.keys() == after.keys()
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )


def test_auto_resume_continues_a_job_rerun_in_its_run_dir(
    root: Path, trained: tuple[Path, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A requeued SLURM job runs again with the same overrides and run directory."""
    last, _ = trained
    run_dir = tmp_path / "requeued"
    overrides = [*TRAIN, "train.test_after_fit=false", f"paths.run_dir={run_dir}"]

    def restored() -> bool:  # Lightning's own record of loading a checkpoint
        found = any("Restored all states" in r.getMessage() for r in caplog.records)
        caplog.clear()
        return found

    caplog.set_level("INFO")
    run(compose_config(overrides, root))  # train.resume=auto is the default: a fresh start
    assert not restored()
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    run(compose_config([*overrides, "trainer.max_steps=4"], root))  # the job runs again
    assert restored()
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    # a fine-tune that was requeued continues too, rather than starting over from init_weights
    run(compose_config([*overrides, "trainer.max_steps=6", f"train.init_weights={last}"], root))
    assert restored()
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    # train.resume=null starts afresh even where a run left its checkpoints
    run(compose_config([*overrides, "train.resume=null"], root))
    assert not restored()
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_resume_with_other_factor_set_fails(root: Path, trained: tuple[Path, dict]) -> None:
    last, _ = trained
    cfg = compose_config(
        [*TRAIN, f"train.resume={last}", "~encoder.posterior.factors.bulge_q"], root
    )
    with pytest.raises(BlissConfigError, match="bulge_q"):
        run(cfg)


def test_resume_with_other_bands_fails(root: Path, trained: tuple[Path, dict]) -> None:
    last, _ = trained
    cfg = compose_config([*TRAIN, "survey=des", f"train.resume={last}"], root)
    with pytest.raises(BlissConfigError, match="bands"):
        run(cfg)


def test_load_encoder_gives_identical_outputs(root: Path, trained: tuple[Path, dict]) -> None:
    last, _ = trained
    loaded, config = load_encoder(last)
    assert not loaded.training
    assert config["encoder"]["features"]["width"] == 16
    cfg = compose_config(TRAIN, root)
    torch.manual_seed(123)
    reference = instantiate(cfg.encoder)
    fresh_outputs = None
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    reference.eval()
    with torch.no_grad():
        fresh_outputs = reference.infer(batch)[1]
    reference.load_state_dict(_load(last)["state_dict"])
    reference.eval()
    with torch.no_grad():
        expected_catalog, expected_params = reference.infer(batch)
        catalog, params = loaded.infer(batch)
        assert torch.equal(loaded.nll(batch), reference.nll(batch))
    assert torch.equal(params, expected_params)
    for key in expected_catalog.keys():
        assert torch.equal(catalog[key], expected_catalog[key]), key
    # control: an encoder that did not load the weights answers differently
    assert not torch.allclose(fresh_outputs, params)


# ---- distributed data ------------------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3])
def test_shard_sampler_ranks_are_disjoint(world: int) -> None:
    sizes = [5, 3, 4, 6]
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            sampler = ShardBlockSampler(sizes, shuffle=True, seed=7, num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            indices = list(sampler)
            assert len(indices) == len(sampler) == sum(sizes) // world
            assert indices == list(sampler)  # the order depends only on seed and epoch
            per_rank.append(set(indices))
        union = set().union(*per_rank)
        assert len(union) == world * (sum(sizes) // world)  # no image on two ranks
        assert union <= set(range(sum(sizes)))
    first = ShardBlockSampler(sizes, seed=7)
    second = ShardBlockSampler(sizes, seed=7)
    second.set_epoch(1)
    assert list(first) != list(second)


def test_datamodule_splits_shards_by_trainer_rank(root: Path) -> None:
    cfg = compose_config([*TRAIN, "data.batch_size=1"], root)
    seen = []
    for rank in range(2):
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        datamodule.trainer = SimpleNamespace(
            world_size=2,
            global_rank=rank,
            strategy=SimpleNamespace(root_device=torch.device("cpu")),
        )
        for split in ("train", "val", "test"):
            sampler = getattr(datamodule, f"{split}_dataloader")().sampler
            assert isinstance(sampler, ShardBlockSampler)
            assert (sampler.num_replicas, sampler.rank) == (2, rank)
        seen.append(set(datamodule.train_dataloader().sampler))
    assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.slow
def test_ddp_sim_two_cpu_processes(root: Path, tmp_path: Path) -> None:
    """``trainer=ddp_sim``: two gloo processes launched by Lightning from the CLI."""
    script = Path(sys.executable).parent / "bliss"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bliss.cli.main"]
    run_dir = tmp_path / "ddp"
    command += [
        "mode=train",
        *TINY_OVERRIDES,
        "trainer=ddp_sim",
        # debug/default.yaml pins devices=1 and is applied after the trainer group
        "trainer.devices=2",
        "data.batch_size=1",  # 2 training images -> one per rank
        "trainer.max_steps=1",
        "train.test_after_fit=false",
        f"paths.root={root}",
        f"paths.run_dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = _load(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 1
    assert CONFIG_KEY in checkpoint
    assert checkpoint[CONFIG_KEY]["trainer"]["strategy"] == "ddp"


def test_train_on_the_fly_simulation_needs_no_shards(tmp_path: Path) -> None:
    cfg = compose_config(
        [
            *TRAIN,
            "train.data=simulate",
            "train.simulate.batches_per_epoch=2",
            "train.simulate.val_batches=1",
            "trainer.max_steps=2",
        ],
        tmp_path,
    )
    metrics = run(cfg)
    assert not (tmp_path / "data").exists()  # no cache written
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_init_weights_starts_a_new_run_from_trained_weights(
    root: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    last, _ = trained
    overrides = [*TRAIN, "train.test_after_fit=false", f"paths.run_dir={tmp_path / 'tuned'}"]
    run(compose_config([*overrides, f"train.init_weights={last}"], root))
    tuned = _load(tmp_path / "tuned" / "checkpoints" / "last.ckpt")
    assert tuned["global_step"] == 2  # a fresh run: the step count restarts
    with pytest.raises(BlissConfigError, match="both set"):
        run(
            compose_config([*overrides, f"train.init_weights={last}", f"train.resume={last}"], root)
        )


def test_fine_tune_with_a_tiling_margin_and_self_conditioning(
    root: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    last, _ = trained
    margin = [
        "encoder.tiling.margin_px=0.5",
        "encoder.tiling.self_conditioning=1.0",
        "encoder.posterior.factors.locs.low=-0.125",
        "encoder.posterior.factors.locs.high=1.125",
    ]
    run_dir = tmp_path / "margin"
    overrides = [*TRAIN, *margin, f"paths.run_dir={run_dir}", f"train.init_weights={last}"]
    metrics = run(compose_config(overrides, root))
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    # the checkpoint rebuilds the widened tiles, and their location posterior spans the margin
    encoder, _ = load_encoder(run_dir / "checkpoints" / "last.ckpt")
    assert encoder.tiling.margin_px == 0.5 and encoder.tiling.self_conditioning == 1.0
    locs = encoder.posterior.slot_factors["locs"]
    assert (locs.low, locs.high) == (-0.125, 1.125)
