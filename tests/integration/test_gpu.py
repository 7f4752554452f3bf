"""CUDA checks, run with ``pytest --gpu`` (skipped otherwise)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from bliss.cli.generate import build_simulator
from bliss.cli.main import run
from bliss.encoder.checkpoint import load_encoder
from bliss.predict.predictor import Predictor
from bliss.surveys.fits_reader import read_fits_image
from tests.conftest import TINY_OVERRIDES, catalog_columns, compose_config
from tests.integration.test_shipped_model import MODEL, SAMPLE, SDSS

pytestmark = pytest.mark.gpu

N_BANDS = 5


def _batch(device: torch.device, n_images: int = 2, size_px: int = 16) -> dict[str, torch.Tensor]:
    background = torch.full((n_images, N_BANDS), 500.0, device=device)
    images = background[..., None, None] + 25 * torch.randn(
        n_images, N_BANDS, size_px, size_px, device=device
    )
    n_tiles = size_px // 4
    on = torch.zeros(n_images, n_tiles, n_tiles, dtype=torch.long, device=device)
    on[:, 1, 2] = 1
    shape = (n_images, n_tiles, n_tiles, 1)
    mask = on[..., None, None].float()
    catalog = {
        "n_sources": on,
        "locs": torch.full((*shape, 2), 0.5, device=device) * mask,
        "fluxes": torch.full((*shape, N_BANDS), 10.0, device=device) * mask,
        "source_type": torch.ones(*shape, 1, device=device) * mask,
        "beta_rad": torch.full((*shape, 1), 1.0, device=device) * mask,
        **{
            k: torch.full((*shape, 1), 0.5, device=device) * mask
            for k in ("disk_frac", "disk_q", "bulge_q", "disk_hlr_arcsec", "bulge_hlr_arcsec")
        },
    }
    return {
        "images": images,
        "background": background,
        "psf_fwhm_arcsec": torch.full((n_images, N_BANDS), 1.3, device=device),
        **{f"catalog/{k}": v for k, v in catalog.items()},
    }


def _encoder(tmp_path: Path, device: torch.device):  # noqa: ANN202
    cfg = compose_config(["mode=train", "experiment=debug"], tmp_path)
    torch.manual_seed(0)
    return instantiate(cfg.encoder).to(device)


def test_forward_backward_on_cuda(tmp_path: Path) -> None:
    device = torch.device("cuda")
    encoder = _encoder(tmp_path, device).train()
    loss = encoder.nll(_batch(device))
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    encoder.eval()
    catalog, params = encoder.infer(_batch(device), sample=True)
    assert params.is_cuda and catalog["locs"].is_cuda


def test_bf16_autocast_forward_is_finite(tmp_path: Path) -> None:
    device = torch.device("cuda")
    encoder = _encoder(tmp_path, device).eval()
    batch = _batch(device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = encoder.nll(batch)
        _, params = encoder.infer(batch)
    assert torch.isfinite(loss)
    assert torch.isfinite(params).all()


def _train_three_steps_on_the_gpu(tmp_path: Path, overrides: list[str]) -> dict:
    """``bliss mode=train`` for 3 steps on the GPU; returns the last checkpoint."""
    cfg = compose_config(
        [
            "mode=train",
            *TINY_OVERRIDES,
            "trainer.accelerator=gpu",
            "trainer.devices=1",
            "trainer.max_steps=3",
            "train.test_after_fit=false",
            *overrides,
        ],
        tmp_path,
    )
    run(cfg)
    checkpoint = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] == 3
    return checkpoint


def test_few_training_steps_on_gpu(tmp_path: Path) -> None:
    run(compose_config(["mode=generate", *TINY_OVERRIDES], tmp_path))
    checkpoint = _train_three_steps_on_the_gpu(tmp_path, ["trainer.precision=bf16-mixed"])
    assert all(
        torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point()
    )


def test_cuda_renderer_batches_stay_on_the_gpu_only_when_asked(tmp_path: Path) -> None:
    overrides = ["mode=train", *TINY_OVERRIDES, "simulator=torch"]
    cpu = build_simulator(compose_config(overrides, tmp_path))
    simulator = build_simulator(
        compose_config([*overrides, "simulator.renderer.device=cuda"], tmp_path)
    )
    assert simulator.render_device.type == "cuda"
    batch = simulator.simulate(2, seed=0, on_device=True)
    assert batch["images"].is_cuda and batch["catalog"]["locs"].is_cuda
    assert batch["background"].is_cuda
    shard_batch = simulator.simulate(2, seed=0)  # what generation writes
    assert not shard_batch["images"].is_cuda
    # the same catalog; CUDA and CPU draw different noise, so compare the light only
    reference = cpu.simulate(2, seed=0)
    assert torch.equal(shard_batch["catalog"]["n_sources"], reference["catalog"]["n_sources"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_on_the_fly_training_with_the_cuda_renderer(tmp_path: Path, num_workers: int) -> None:
    _train_three_steps_on_the_gpu(
        tmp_path,
        [
            "simulator=torch",
            "simulator.renderer.device=cuda",
            "train.data=simulate",
            "train.simulate.batches_per_epoch=2",
            "train.simulate.val_batches=1",
            f"train.simulate.num_workers={num_workers}",  # 1: a spawned worker renders on CUDA
        ],
    )


def test_channels_last_survives_the_move_to_cuda(tmp_path: Path) -> None:
    cfg = compose_config(["mode=train", "experiment=debug", "encoder.channels_last=true"], tmp_path)
    encoder = instantiate(cfg.encoder).to("cuda").train()
    weight = encoder.features.net[0][0].weight
    assert weight.is_cuda and weight.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = encoder.nll(_batch(torch.device("cuda")))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_bf16_prediction_on_cuda_agrees_with_float32_on_the_cpu() -> None:
    image = read_fits_image(SAMPLE, SDSS)
    results = {}
    for device, precision in (("cpu", "32-true"), ("cuda", "bf16-mixed")):
        encoder, config = load_encoder(MODEL)
        window = config["simulator"]["image_size"]
        predictor = Predictor(
            encoder, window_px=window, device=device, precision=precision, progress=False
        )
        results[device] = catalog_columns(predictor.predict(image))
    cpu, cuda = results["cpu"], results["cuda"]
    assert len(cpu["row"]) == len(cuda["row"]) >= 20
    np.testing.assert_allclose(cuda["row"], cpu["row"], atol=0.05)
    np.testing.assert_allclose(cuda["fluxes"][:, 2], cpu["fluxes"][:, 2], rtol=0.02)
