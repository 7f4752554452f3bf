"""Region factors: image-level and coarse-tile posteriors learn toy problems, and fail loudly."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from bliss.encoder.encoder import Encoder, catalog_from_batch
from bliss.errors import BlissValueError
from bliss.posterior.factors import NormalFactor
from bliss.posterior.regions import RegionFactor
from tests.conftest import compose_config
from tests.unit.encoder.test_encoder import IMAGE_PX, N_BANDS, _random_batch

SHEAR = (0.3, -0.2)


def _encoder(tmp_path, regions) -> Encoder:  # noqa: ANN001
    cfg = compose_config(["mode=train", "experiment=debug"], tmp_path)
    torch.manual_seed(0)
    return instantiate(cfg.encoder, regions=regions)


def _fit(encoder: Encoder, batches, steps: int) -> None:  # noqa: ANN001
    """Fit on the region loss alone: the toy catalogs are noise the tile loss would chase."""
    # at 3e-3 Adam overshoots once the posterior is sharp (sigma ~0.01): the median jumps ~0.1
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    encoder.train()
    for step in range(steps):
        batch = batches(step)
        loss = encoder.region_nll(encoder.tile_features(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()


def test_an_image_level_factor_recovers_a_known_constant(tmp_path) -> None:
    encoder = _encoder(tmp_path, {"shear": RegionFactor(NormalFactor("shear", dim=2))})

    def batch(step: int) -> dict:
        torch.manual_seed(step)
        return _random_batch(4) | {"fields/shear": torch.tensor(SHEAR).expand(4, 1, 1, 2)}

    _fit(encoder, batch, 200)
    with torch.no_grad():
        params = encoder.region_params(encoder.tile_features(batch(1000)))["shear"]
    region = encoder.regions["shear"]
    median = region.point_estimate(params)
    # measured: within 0.015 of the constant over steps 180-200, on images it never saw
    torch.testing.assert_close(median, torch.tensor(SHEAR).expand(4, 1, 1, 2), atol=0.03, rtol=0)
    width = region.quantile(params, 0.95) - region.quantile(params, 0.05)
    # the posterior narrows from its initial 90 % width of ~2.3 as the value is certain
    assert float(width.max()) < 0.5


def test_a_coarse_map_factor_tells_its_regions_apart(tmp_path) -> None:
    # the 16 px image has 2 x 2 regions of 8 px; the map is 1 where a bright blob is, else 0
    factor = RegionFactor(NormalFactor("blob_map", dim=1), region_px=8)
    encoder = _encoder(tmp_path, {"blob_map": factor})

    def batch(step: int) -> dict:
        generator = torch.Generator().manual_seed(step)
        out = _random_batch(8)
        out["images"] = out["background"][..., None, None] + 25 * torch.randn(
            8, N_BANDS, IMAGE_PX, IMAGE_PX, generator=generator
        )
        regions = torch.randint(0, 4, (8,), generator=generator)
        truth = torch.zeros(8, 2, 2, 1)
        for index, region in enumerate(regions.tolist()):
            row, col = divmod(region, 2)
            out["images"][index, :, 8 * row + 3 : 8 * row + 6, 8 * col + 3 : 8 * col + 6] += 2000
            truth[index, row, col] = 1.0
        return out | {"fields/blob_map": truth}

    _fit(encoder, batch, 200)
    test = batch(1000)
    with torch.no_grad():
        params = encoder.region_params(encoder.tile_features(test))["blob_map"]
    estimate = factor.point_estimate(params)
    # every region on the right side of 0.5: a map that ignored the image would be 0.25 flat
    assert bool(((estimate > 0.5) == (test["fields/blob_map"] > 0.5)).all())


def test_a_missing_truth_names_its_batch_key(tmp_path) -> None:
    encoder = _encoder(tmp_path, {"shear": RegionFactor(NormalFactor("shear", dim=2))})
    with pytest.raises(BlissValueError, match="fields/shear"):
        encoder.nll(_random_batch(2))


def test_a_region_that_does_not_divide_the_image_is_refused(tmp_path) -> None:
    encoder = _encoder(tmp_path, {"map": RegionFactor(NormalFactor("map"), region_px=12)})
    with pytest.raises(BlissValueError, match="region_px=12"):
        encoder.region_params(encoder.tile_features(_random_batch(1)))
    # hydra wraps errors raised while instantiating in its own exception
    with pytest.raises(Exception, match="region_px=6"):
        _encoder(tmp_path, {"map": RegionFactor(NormalFactor("map"), region_px=6)})
    with pytest.raises(Exception, match="RegionFactor"):
        _encoder(tmp_path, {"map": NormalFactor("map")})


def test_the_full_loss_includes_the_region_loss(tmp_path) -> None:
    encoder = _encoder(tmp_path, {"shear": RegionFactor(NormalFactor("shear", dim=2))}).eval()
    batch = _random_batch(2) | {"fields/shear": torch.zeros(2, 1, 1, 2)}
    features = encoder.tile_features(batch)
    tiles = encoder.nll_from_features(features, catalog_from_batch(batch, 4))
    expected = tiles + encoder.region_nll(features, batch)
    torch.testing.assert_close(encoder.nll(batch), expected)


def test_attention_pooling_weighs_tiles_within_each_region() -> None:
    from bliss.encoder.region_head import RegionHead

    head = RegionHead(feature_width=8, width=4, n_params=2, tiles_per_region=2)
    values = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    # equal logits: the plain mean of each 2 x 2 region, and log(4) of mass
    pooled, log_mass = head._attend(values, torch.zeros(1, 1, 4, 4))
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(values, 2))
    torch.testing.assert_close(log_mass, torch.full((1, 1, 2, 2), float(np.log(4))))
    # one dominant tile per region: its value, whatever the others hold
    logits = torch.full((1, 1, 4, 4), -30.0)
    logits[..., 0::2, 1::2] = 30.0
    pooled, log_mass = head._attend(values, logits)
    torch.testing.assert_close(pooled, values[..., 0::2, 1::2])
    torch.testing.assert_close(log_mass, torch.full((1, 1, 2, 2), 30.0), atol=1e-4, rtol=0)
    # the whole image: one region; a shift of every logit changes the mass, not the pool
    whole = RegionHead(feature_width=8, width=4, n_params=2, tiles_per_region=None)
    shifted = whole._attend(values, logits + 5.0)
    torch.testing.assert_close(shifted[0], whole._attend(values, logits)[0])
    torch.testing.assert_close(shifted[1], whole._attend(values, logits)[1] + 5.0)
