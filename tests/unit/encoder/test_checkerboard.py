"""Tiling schedules and the catalog context of already-inferred tiles."""

import pytest
import torch
from torch import nn

from bliss.catalog import TileCatalog
from bliss.encoder.checkerboard import (
    SCHEDULES,
    CatalogContext,
    ContextHead,
    TilingSchedule,
    tile_light,
)
from bliss.errors import BlissConfigError

EDGE = [(-1, 0), (1, 0), (0, -1), (0, 1)]
CORNER = [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def _neighbour_pairs(n_h: int, n_w: int, offsets: list[tuple[int, int]]):
    for row in range(n_h):
        for col in range(n_w):
            for d_row, d_col in offsets:
                other = (row + d_row, col + d_col)
                if 0 <= other[0] < n_h and 0 <= other[1] < n_w:
                    yield (row, col), other


@pytest.mark.parametrize(("n_h", "n_w"), [(4, 4), (5, 7), (1, 3)])
def test_one_color_is_a_single_group(n_h: int, n_w: int) -> None:
    colors = TilingSchedule(1).colors(n_h, n_w)
    assert colors.shape == (n_h, n_w) and colors.dtype == torch.long
    assert (colors == 0).all()
    assert TilingSchedule(1).name == "independent"


@pytest.mark.parametrize(("n_h", "n_w"), [(4, 4), (5, 7)])
def test_two_colors_edge_neighbours_differ(n_h: int, n_w: int) -> None:
    colors = TilingSchedule(2).colors(n_h, n_w)
    assert set(colors.unique().tolist()) == {0, 1}
    for (r, c), (r2, c2) in _neighbour_pairs(n_h, n_w, EDGE):
        assert colors[r, c] != colors[r2, c2]
    # diagonal neighbours share a colour: that is what K = 4 fixes
    assert colors[0, 0] == colors[1, 1]


@pytest.mark.parametrize(("n_h", "n_w"), [(4, 4), (5, 7), (6, 3)])
def test_four_colors_all_eight_neighbours_differ(n_h: int, n_w: int) -> None:
    colors = TilingSchedule(4).colors(n_h, n_w)
    assert set(colors.unique().tolist()) == {0, 1, 2, 3}
    for (r, c), (r2, c2) in _neighbour_pairs(n_h, n_w, EDGE + CORNER):
        assert colors[r, c] != colors[r2, c2]
    # every 2 x 2 block holds each colour once
    for row in range(n_h - 1):
        for col in range(n_w - 1):
            assert sorted(colors[row : row + 2, col : col + 2].flatten().tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [0, 3, 5, 8])
def test_bad_color_count_lists_valid_schedules(bad: int) -> None:
    with pytest.raises(BlissConfigError) as info:
        TilingSchedule(bad)
    message = str(info.value)
    assert f"n_colors={bad}" in message
    for k, name in SCHEDULES.items():
        assert f"{k} = {name}" in message


def test_order_fixed_in_eval_and_random_when_asked() -> None:
    fixed = TilingSchedule(4, randomize_order=False)
    assert fixed.order(training=True) == [0, 1, 2, 3]
    shuffled = TilingSchedule(4, randomize_order=True)
    assert shuffled.order(training=False) == [0, 1, 2, 3]
    orders = {tuple(shuffled.order(True, torch.Generator().manual_seed(s))) for s in range(20)}
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(orders) > 1  # 20 draws of 24 permutations all equal: probability 24^-19


def _catalog() -> TileCatalog:
    n_sources = torch.tensor([[[0, 1], [1, 1]]])
    locs = torch.tensor([0.25, 0.75]).expand(1, 2, 2, 1, 2) * n_sources[..., None, None]
    fluxes = torch.full((1, 2, 2, 1, 3), 2.0) * n_sources[..., None, None]
    source_type = torch.tensor([[[[0.0], [1.0]], [[0.0], [1.0]]]]).unsqueeze(-1)
    return TileCatalog(
        4, {"n_sources": n_sources, "locs": locs, "fluxes": fluxes, "source_type": source_type}
    )


def test_context_zero_on_unknown_tiles() -> None:
    context = CatalogContext(n_bands=3)
    assert context.n_channels == 8
    known = torch.tensor([[True, False], [True, True]])
    maps = context(_catalog(), known)
    assert maps.shape == (1, 8, 2, 2)
    assert (maps[0, :, 0, 1] == 0).all()
    # known flag, counts, galaxies, mean (row, col), asinh flux per band
    torch.testing.assert_close(
        maps[0, :, 1, 1],
        torch.tensor([1.0, 1.0, 1.0, 0.25, 0.75, *[torch.asinh(torch.tensor(2.0)).item()] * 3]),
    )
    # an empty known tile is marked known with zero sources
    torch.testing.assert_close(maps[0, :2, 0, 0], torch.tensor([1.0, 0.0]))


def _one_star(row: float, col: float, flux: float, n_tiles: int = 5, slen: int = 4) -> TileCatalog:
    """One source at pixel ``(row, col)`` of an ``n_tiles`` x ``n_tiles`` grid, one band."""
    tile_row, tile_col = int(row // slen), int(col // slen)
    locs = torch.zeros(1, n_tiles, n_tiles, 1, 2)
    locs[0, tile_row, tile_col, 0] = torch.tensor([row / slen - tile_row, col / slen - tile_col])
    fluxes = torch.zeros(1, n_tiles, n_tiles, 1, 1)
    fluxes[0, tile_row, tile_col, 0, 0] = flux
    n_sources = torch.zeros(1, n_tiles, n_tiles, dtype=torch.long)
    n_sources[0, tile_row, tile_col] = 1
    return TileCatalog(slen, {"n_sources": n_sources, "locs": locs, "fluxes": fluxes})


@pytest.mark.parametrize(("row", "col"), [(10.0, 10.0), (8.0, 8.0), (9.3, 11.9), (8.0, 10.0)])
def test_tile_light_matches_a_finely_sampled_gaussian(row: float, col: float) -> None:
    fwhm, slen, n_tiles, flux = 3.5, 4, 5, 100.0
    catalog = _one_star(row, col, flux, n_tiles, slen)
    light = tile_light(catalog, catalog.is_on_mask.float(), fwhm)[0, ..., 0]
    # brute force: the Gaussian on a 0.05 px grid, summed per tile
    sigma = fwhm / 2.3548
    step = 0.05
    grid = (torch.arange(0, n_tiles * slen, step, dtype=torch.float64) + step / 2).view(-1, 1)
    density = torch.exp(-((grid - row) ** 2 + (grid.T - col) ** 2) / (2 * sigma**2))
    density = density / (2 * torch.pi * sigma**2) * step**2 * flux
    k = int(slen / step)
    expected = density.view(n_tiles, k, n_tiles, k).sum((1, 3)).float()
    torch.testing.assert_close(light, expected, atol=2e-3 * flux, rtol=0)
    # the star is far from the grid's edge: the tiles hold all of its light
    assert abs(light.sum().item() - flux) < 1e-3 * flux


def test_light_channels_tell_a_later_tile_what_its_neighbour_holds() -> None:
    # a star on the corner four tiles share, held by the known tile above-left
    catalog = _one_star(7.999, 7.999, 40.0)
    context = CatalogContext(n_bands=1, spill_fwhm_px=3.5)
    assert context.n_channels == 7
    nothing_known = context(catalog, torch.zeros(5, 5, dtype=torch.bool))
    assert (nothing_known == 0).all()
    known = torch.zeros(5, 5, dtype=torch.bool)
    known[1, 1] = True
    maps = context(catalog, known)[0, -1]
    # each of the four tiles at the corner gets about a quarter of the light, unknown or not
    quarter = torch.asinh(torch.tensor(40.0 * 0.24))
    for tile in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        assert abs(maps[tile] - quarter) < 0.05
    # the summary channels stay zero on the unknown tiles
    assert (context(catalog, known)[0, :-1, 2, 2] == 0).all()


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_light_channels_need_a_positive_fwhm(bad: float) -> None:
    with pytest.raises(BlissConfigError, match="context_spill_fwhm_px"):
        CatalogContext(n_bands=1, spill_fwhm_px=bad)


def test_context_head_shapes() -> None:
    head = ContextHead(feature_width=8, context_channels=5, width=4, n_params=7)
    features, context = torch.randn(2, 8, 3, 5), torch.randn(2, 5, 3, 5)
    current = torch.zeros(3, 5, dtype=torch.bool)
    out = head(features, context, current)
    assert out.shape == (2, 3, 5, 7)
    # the marker starts switched off (zero weights, so fine-tuning from a model without it
    # starts from the same function) and is learnable
    assert torch.equal(head(features, context, ~current), out)
    torch.nn.init.normal_(head.current.weight)
    assert not torch.equal(head(features, context, ~current), head(features, context, current))


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_head_fast_path_matches_the_full_computation_on_the_current_tiles(norm):
    torch.manual_seed(0)
    head = ContextHead(12, 5, 16, 7, norm=norm)
    nn.init.normal_(head.current.weight)  # make the group marker matter
    head.eval()
    features, context = torch.randn(2, 12, 9, 10), torch.randn(2, 5, 9, 10)
    colors = TilingSchedule(4).colors(9, 10)
    for group in range(4):
        current = colors == group
        with torch.no_grad():
            fast = head(features, context, current)
            head.training = True  # the full path (its layers stay in eval mode)
            full = head(features, context, current)
            head.training = False
        assert torch.allclose(fast[:, current], full[:, current], atol=1e-5)
        assert torch.all(fast[:, ~current] == 0)
    # a K = 2 group is no lattice of every other row and column: computed in full
    checker = TilingSchedule(2).colors(9, 10) == 1
    with torch.no_grad():
        assert torch.all(head(features, context, checker)[:, ~checker] != 0)
