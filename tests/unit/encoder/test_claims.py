"""Tile margins and self-conditioning: which true source each colour group must claim."""

import pytest
import torch
from hydra.errors import InstantiationException
from torch import Tensor

from bliss.catalog import FullCatalog, TileCatalog
from bliss.encoder.checkerboard import TilingSchedule
from bliss.encoder.claims import SourcePool
from bliss.encoder.encoder import catalog_from_batch
from bliss.errors import BlissConfigError
from tests.unit.encoder.test_encoder import _encoder, _random_batch, _random_catalog

SLEN = 4


def _truth(*stars: tuple[float, float, float]) -> TileCatalog:
    """One 16 x 16 px image with stars at ``(row, col, flux)``, tiled the usual way."""
    plocs = torch.tensor([[[r, c] for r, c, _ in stars]])
    fluxes = torch.tensor([[[f] for *_, f in stars]])
    full = FullCatalog(
        16, 16, {"n_sources": torch.tensor([len(stars)]), "plocs": plocs, "fluxes": fluxes}
    )
    return full.to_tile_catalog(SLEN, max_sources=1)


def _groups() -> tuple[Tensor, list[Tensor]]:
    colors = TilingSchedule(4).colors(4, 4)
    return colors, [colors == k for k in range(4)]


def test_without_margin_the_targets_are_the_truth_of_each_group() -> None:
    # slots in the simulator's order: brightest first
    truth = _random_catalog(3, 4, m=2).to_full_catalog().to_tile_catalog(SLEN, max_sources=2)
    pool = SourcePool(truth)
    colors, groups = _groups()
    for in_group in groups:
        target = pool.targets(in_group)
        expected = torch.where(in_group, truth["n_sources"], 0)
        assert torch.equal(target["n_sources"], expected)
        on = target.is_on_mask
        assert torch.allclose(target["locs"][on], truth["locs"][on])
        assert torch.allclose(target["fluxes"][on], truth["fluxes"][on])
        before = int(pool.claimed.sum())
        pool.claim(target, in_group, radius_px=1.0)  # teacher forcing claims its targets
        assert int(pool.claimed.sum()) - before == int(on.sum())
    assert bool(pool.claimed.all())


def test_a_batch_without_sources_has_empty_targets_and_claims_nothing() -> None:
    empty = _truth((8.0, 8.0, 40.0))
    empty = empty.replace(n_sources=torch.zeros_like(empty["n_sources"]))
    pool = SourcePool(empty, margin_px=0.5)
    _, groups = _groups()
    target = pool.targets(groups[0])
    assert int(target["n_sources"].sum()) == 0
    pool.claim(_truth((8.0, 8.0, 40.0)), groups[0], radius_px=1.0)  # a drawn source, no truth
    assert pool.claimed.numel() == 0


def test_a_corner_star_declined_by_every_earlier_group_is_the_last_groups_target() -> None:
    # a star exactly on the corner the tiles (1, 1), (1, 2), (2, 1), (2, 2) share; with a 0.5 px
    # margin each of them can hold it. Colours: (2, 2) -> 0, (2, 1) -> 1, (1, 2) -> 2, (1, 1) -> 3
    pool = SourcePool(_truth((8.0, 8.0, 40.0)), margin_px=0.5)
    _, groups = _groups()
    holders = [(2, 2), (2, 1), (1, 2), (1, 1)]
    for group, (row, col) in zip(range(4), holders, strict=True):
        target = pool.targets(groups[group])
        assert target["n_sources"].sum() == 1 and target["n_sources"][0, row, col] == 1
        expected = torch.tensor([8.0, 8.0]) / SLEN - torch.tensor([row, col])
        assert torch.allclose(target["locs"][0, row, col, 0], expected)
        declined = target.replace(n_sources=torch.zeros_like(target["n_sources"]))
        pool.claim(declined, groups[group], radius_px=1.0)
    assert not bool(pool.claimed[0, 0])


def test_a_claimed_star_is_nobody_elses_target() -> None:
    pool = SourcePool(_truth((8.0, 8.0, 40.0)), margin_px=0.5)
    _, groups = _groups()
    pool.claim(pool.targets(groups[0]), groups[0], radius_px=1.0)
    for in_group in groups[1:]:
        assert pool.targets(in_group)["n_sources"].sum() == 0


def test_a_drawn_source_claims_a_true_one_just_past_its_tiles_reach() -> None:
    # the star is 0.6 px inside tile (1, 1) (colour 3), beyond the 0.5 px margin of tile (2, 2)
    # (colour 0); tile (2, 2) draws a source 0.55 px out of its corner. That draw holds the star
    # (0.07 px away), so the later groups must not hold it too; one 1.5 px away does not.
    _, groups = _groups()
    for draw_at, claimed in ((7.45, True), (6.0, False)):
        pool = SourcePool(_truth((7.4, 7.4, 40.0)), margin_px=0.5)
        assert pool.targets(groups[0])["n_sources"].sum() == 0
        drawn = _truth((8.0, 8.0, 40.0))
        drawn = drawn.replace(locs=drawn["locs"] + (draw_at - 8.0) / SLEN)
        pool.claim(drawn, groups[0], radius_px=1.0)
        assert bool(pool.claimed[0, 0]) == claimed
        assert int(pool.targets(groups[3])["n_sources"].sum()) == (0 if claimed else 1)


def test_a_tile_holds_its_own_source_before_one_in_its_margin() -> None:
    # tile (1, 1) (colour 3) holds a faint star; a bright one sits 0.3 px inside tile (1, 2)
    # (colour 2), in the margin of (1, 1). Visiting (1, 1) first, it takes its own star and leaves
    # the bright one to its own tile.
    pool = SourcePool(_truth((5.0, 5.0, 2.0), (5.0, 8.3, 50.0)), margin_px=0.5)
    _, groups = _groups()
    target = pool.targets(groups[3])
    assert target["n_sources"].sum() == 1
    assert torch.isclose(target["fluxes"][0, 1, 1, 0, 0], torch.tensor(2.0))
    pool.claim(target, groups[3], radius_px=1.0)
    target = pool.targets(groups[2])
    assert target["n_sources"][0, 1, 2] == 1
    assert torch.isclose(target["locs"][0, 1, 2, 0, 1], torch.tensor(8.3 / SLEN - 2))


def test_claims_loss_without_margin_is_the_teacher_forced_loss(tmp_path) -> None:  # noqa: ANN001
    encoder = _encoder(tmp_path)  # in eval mode
    batch = _random_batch()
    reference = encoder.nll(batch)
    features = encoder.tile_features(batch)
    truth = catalog_from_batch(batch, encoder.tile_slen)
    colors = encoder.tiling.colors(truth.n_tiles_h, truth.n_tiles_w)
    masks = encoder._known_masks(encoder.tiling.order(False), colors)
    claims = encoder._nll_of_claims(features, truth, colors, masks, sample=False)
    assert torch.allclose(reference, claims, rtol=1e-5)


def test_self_conditioned_training_steps_give_a_finite_loss_with_gradients(tmp_path) -> None:  # noqa: ANN001
    margin = [
        "encoder.tiling.margin_px=0.5",
        "encoder.tiling.self_conditioning=1.0",
        "encoder.posterior.factors.locs.low=-0.125",
        "encoder.posterior.factors.locs.high=1.125",
    ]
    encoder = _encoder(tmp_path, *margin).train()
    loss = encoder.nll(_random_batch())
    loss.backward()
    assert bool(torch.isfinite(loss))
    assert all(p.grad is not None for p in encoder.head.parameters())


def test_margin_outside_the_locs_bounds_names_both_keys(tmp_path) -> None:  # noqa: ANN001
    # Hydra wraps the encoder's BlissConfigError; its message survives
    with pytest.raises(InstantiationException, match="margin_px=0.5.*factors.locs.*low=-0.125"):
        _encoder(tmp_path, "encoder.tiling.margin_px=0.5")


@pytest.mark.parametrize(("key", "value"), [("margin_px", -1.0), ("self_conditioning", 1.5)])
def test_bad_tiling_options_name_the_key(key: str, value: float) -> None:
    with pytest.raises(BlissConfigError, match=f"encoder.tiling.{key}"):
        TilingSchedule(4, **{key: value})
