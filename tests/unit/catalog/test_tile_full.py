"""TileCatalog <-> FullCatalog conversions, filters, crops and unit conversions."""

import math
import warnings

import pytest
import torch

from bliss.catalog import FullCatalog, TileCatalog
from bliss.catalog.convert import (
    electrons_to_nmgy,
    mag_to_nmgy,
    nmgy_per_electron,
    nmgy_to_electrons,
    nmgy_to_mag,
)
from bliss.catalog.full import concat_full_catalogs
from bliss.errors import BlissShapeError, BlissValueError, BlissWarning

SDSS_R_MAGZERO = 29.89


def _random_tile_catalog(
    batch: int, n_tiles: int, max_sources: int, tile_slen: int, seed: int
) -> TileCatalog:
    """Random occupancy, positions and fluxes; slots sorted by decreasing band-0 flux."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, n_tiles, n_tiles, max_sources)
    n_sources = torch.randint(0, max_sources + 1, shape[:3], generator=generator)
    on = (torch.arange(max_sources) < n_sources.unsqueeze(-1)).unsqueeze(-1)
    fluxes = torch.rand(*shape, 2, generator=generator) * 100 + 1
    # sort slots by decreasing reference (band 0) flux, as TileCatalog documents
    order = torch.argsort(-fluxes[..., 0], dim=-1)
    fluxes = torch.gather(fluxes, 3, order.unsqueeze(-1).expand_as(fluxes))
    data = {
        "n_sources": n_sources,
        "locs": torch.rand(*shape, 2, generator=generator),
        "fluxes": fluxes,
        "source_type": (torch.rand(*shape, 1, generator=generator) < 0.5).float(),
        "extra": torch.randn(*shape, 3, generator=generator),
    }
    data = {k: v if k == "n_sources" else torch.where(on, v, 0) for k, v in data.items()}
    return TileCatalog(tile_slen, data)


def _full(plocs: list[list[float]], fluxes: list[list[float]], size: int = 8) -> FullCatalog:
    """A one-image FullCatalog."""
    return FullCatalog(
        size,
        size,
        {
            "n_sources": torch.tensor([len(plocs)]),
            "plocs": torch.tensor([plocs], dtype=torch.float32),
            "fluxes": torch.tensor([fluxes], dtype=torch.float32),
        },
    )


@pytest.mark.parametrize("max_sources", [1, 3])
@pytest.mark.parametrize("tile_slen", [2, 3, 4])
def test_tile_full_tile_round_trip_is_lossless(max_sources, tile_slen):
    tiles = _random_tile_catalog(3, 5, max_sources, tile_slen, seed=max_sources * 10 + tile_slen)
    assert int(tiles["n_sources"].sum()) > 0  # the round trip has something to carry

    full = tiles.to_full_catalog()
    back = full.to_tile_catalog(tile_slen, max_sources)

    assert set(full.keys()) == {"n_sources", "plocs", "fluxes", "source_type", "extra"}
    assert set(back.keys()) == set(tiles.keys())
    assert torch.equal(full["n_sources"], tiles["n_sources"].sum((1, 2)))
    assert torch.equal(back["n_sources"], tiles["n_sources"])
    for key in tiles.keys():
        if key == "locs":
            # (corner + loc) * tile_slen / tile_slen - corner loses a few float32 ulps of a
            # number < n_tiles, i.e. < 1e-6
            torch.testing.assert_close(back[key], tiles[key], atol=1e-5, rtol=0)
        else:
            assert torch.equal(back[key], tiles[key]), key


def test_plocs_of_other_locs_are_those_of_a_catalog_holding_them():
    catalog = _random_tile_catalog(2, 3, 2, 4, seed=3)
    other = torch.rand_like(catalog["locs"])
    moved = TileCatalog(4, {**dict(catalog.items()), "locs": other})
    torch.testing.assert_close(catalog.plocs(other), moved.plocs())
    # tile (1, 2), slot 0: corner (4, 8) px plus 4 px per tile unit
    expected = (torch.tensor([1.0, 2.0]) + other[0, 1, 2, 0]) * 4
    torch.testing.assert_close(catalog.plocs(other)[0, 1, 2, 0], expected)
    assert not torch.allclose(catalog.plocs(other), catalog.plocs())


def test_full_tile_full_round_trip_keeps_every_source():
    full = _full([[1.0, 1.5], [6.2, 0.3], [3.9, 7.9], [4.0, 4.0]], [[1, 2], [3, 4], [5, 6], [7, 8]])
    back = full.to_tile_catalog(tile_slen=4, max_sources=2).to_full_catalog()

    assert back.height_px == full.height_px and back.width_px == full.width_px
    assert int(back["n_sources"][0]) == 4

    def as_rows(cat: FullCatalog) -> list[tuple[float, ...]]:
        rows = torch.cat([cat["plocs"][0], cat["fluxes"][0]], dim=-1)[: int(cat["n_sources"][0])]
        return sorted(tuple(round(v, 5) for v in row.tolist()) for row in rows)

    assert as_rows(back) == as_rows(full)


def test_to_tile_catalog_orders_slots_by_decreasing_reference_flux():
    # three sources in tile (0, 0); band 0 and band 1 rank them differently
    full = _full([[0.5, 0.5], [1.5, 1.5], [2.5, 2.5]], [[1.0, 30.0], [5.0, 10.0], [3.0, 20.0]])

    by_band0 = full.to_tile_catalog(tile_slen=4, max_sources=3, ref_band=0)
    by_band1 = full.to_tile_catalog(tile_slen=4, max_sources=3, ref_band=1)

    assert by_band0["fluxes"][0, 0, 0, :, 0].tolist() == [5.0, 3.0, 1.0]
    assert by_band1["fluxes"][0, 0, 0, :, 1].tolist() == [30.0, 20.0, 10.0]
    # the other keys follow the fluxes: the 5-nmgy source sits at (1.5, 1.5) px
    torch.testing.assert_close(by_band0["locs"][0, 0, 0, 0], torch.tensor([1.5 / 4, 1.5 / 4]))


def test_to_tile_catalog_drops_the_faintest_of_a_full_tile_with_a_warning():
    full = _full([[0.5, 0.5], [1.5, 1.5], [2.5, 2.5], [6.0, 6.0]], [[2.0], [9.0], [4.0], [1.0]])

    with pytest.warns(BlissWarning, match="max_sources=2"):
        tiles = full.to_tile_catalog(tile_slen=4, max_sources=2)

    assert tiles["n_sources"][0].tolist() == [[2, 0], [0, 1]]
    assert tiles["fluxes"][0, 0, 0, :, 0].tolist() == [9.0, 4.0]
    assert tiles["fluxes"][0, 1, 1, :, 0].tolist() == [1.0, 0.0]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = full.to_tile_catalog(tile_slen=4, max_sources=2, warn_on_drop=False)
    assert torch.equal(quiet["fluxes"], tiles["fluxes"])


def test_to_tile_catalog_drops_sources_outside_the_image():
    full = _full([[-0.5, 2.0], [2.0, 8.5], [2.0, 2.0]], [[1.0], [2.0], [3.0]])
    tiles = full.to_tile_catalog(tile_slen=4, max_sources=1)
    assert int(tiles["n_sources"].sum()) == 1
    assert float(tiles["fluxes"].sum()) == 3.0


def test_filter_by_flux_keeps_the_range_and_repacks_slots():
    full = _full([[0.5, 0.5], [1.5, 1.5], [2.5, 2.5]], [[5.0], [3.0], [1.0]])
    tiles = full.to_tile_catalog(tile_slen=4, max_sources=3)

    kept = tiles.filter_by_flux(min_flux=2.0, max_flux=4.0)

    assert kept["n_sources"][0].tolist() == [[1, 0], [0, 0]]
    assert kept["fluxes"][0, 0, 0, :, 0].tolist() == [3.0, 0.0, 0.0]
    torch.testing.assert_close(kept["locs"][0, 0, 0, 0], torch.tensor([1.5 / 4, 1.5 / 4]))
    assert float(kept["locs"][0, 0, 0, 1:].abs().sum()) == 0.0
    # min is inclusive, max exclusive
    assert int(tiles.filter_by_flux(min_flux=3.0, max_flux=5.0)["n_sources"].sum()) == 1


def test_filter_by_mag_keeps_sources_in_the_magnitude_range():
    mags = torch.tensor([18.0, 20.0, 22.0, 24.0])
    full = _full(
        [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 5.0]], mag_to_nmgy(mags).unsqueeze(-1).tolist()
    )

    kept = full.filter_by_mag(min_mag=19.0, max_mag=23.0)

    assert kept["n_sources"].tolist() == [2]
    torch.testing.assert_close(nmgy_to_mag(kept["fluxes"][0, :, 0]), torch.tensor([20.0, 22.0]))
    torch.testing.assert_close(kept["plocs"][0], torch.tensor([[2.0, 2.0], [3.0, 3.0]]))


def test_crop_keeps_inside_sources_and_shifts_them():
    full = _full([[1.0, 1.0], [5.0, 6.0], [7.0, 2.0], [4.0, 4.0]], [[1.0], [2.0], [3.0], [4.0]])

    cropped = full.crop(top=4, bottom=8, left=4, right=8)

    assert (cropped.height_px, cropped.width_px) == (4, 4)
    assert cropped["n_sources"].tolist() == [2]
    rows = sorted(
        zip(cropped["plocs"][0].tolist(), cropped["fluxes"][0, :, 0].tolist(), strict=True)
    )
    assert rows == [([0.0, 0.0], 4.0), ([1.0, 2.0], 2.0)]


def test_concat_full_catalogs_pads_to_the_longest():
    one = _full([[1.0, 1.0]], [[1.0]])
    three = _full([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], [[1.0], [2.0], [3.0]])

    both = concat_full_catalogs([one, three])

    assert both.batch_size == 2 and both.max_n_sources == 3
    assert both["n_sources"].tolist() == [1, 3]
    assert both["fluxes"][:, :, 0].tolist() == [[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]]
    assert both.is_on_mask.tolist() == [[True, False, False], [True, True, True]]
    with pytest.raises(BlissValueError, match="empty"):
        concat_full_catalogs([])


def test_tile_catalog_shape_errors_name_the_tensor():
    good = {"n_sources": torch.zeros(1, 2, 2), "locs": torch.zeros(1, 2, 2, 1, 2)}
    with pytest.raises(BlissShapeError, match="fluxes"):
        TileCatalog(4, {**good, "fluxes": torch.zeros(1, 2, 3, 1, 5)})
    with pytest.raises(BlissShapeError, match="locs"):
        TileCatalog(4, {**good, "locs": torch.zeros(1, 2, 2, 1, 3)})
    with pytest.raises(BlissShapeError, match="n_sources"):
        TileCatalog(4, {**good, "n_sources": torch.zeros(1, 2)})
    with pytest.raises(BlissValueError, match="locs"):
        TileCatalog(4, {"n_sources": good["n_sources"]})


def test_full_catalog_shape_errors_name_the_tensor():
    good = {"n_sources": torch.tensor([1]), "plocs": torch.zeros(1, 1, 2)}
    with pytest.raises(BlissShapeError, match="plocs"):
        FullCatalog(8, 8, {**good, "plocs": torch.zeros(1, 1, 3)})
    with pytest.raises(BlissShapeError, match="fluxes"):
        FullCatalog(8, 8, {**good, "fluxes": torch.zeros(2, 1, 5)})
    with pytest.raises(BlissShapeError, match="keep"):
        FullCatalog(8, 8, good).select(torch.ones(1, 4, dtype=torch.bool))


def test_mag_nmgy_round_trip():
    assert mag_to_nmgy(22.5) == pytest.approx(1.0, rel=1e-12)
    assert nmgy_to_mag(100.0) == pytest.approx(17.5, rel=1e-12)
    assert nmgy_to_mag(0.0) == math.inf
    mags = torch.linspace(12.0, 28.0, 33, dtype=torch.float64)
    torch.testing.assert_close(nmgy_to_mag(mag_to_nmgy(mags)), mags, rtol=0, atol=1e-12)


def test_electrons_nmgy_with_the_sdss_r_zero_point():
    electrons_per_nmgy = 10 ** (0.4 * (SDSS_R_MAGZERO - 22.5))
    assert nmgy_to_electrons(1.0, SDSS_R_MAGZERO) == pytest.approx(electrons_per_nmgy, rel=1e-12)
    assert nmgy_per_electron(SDSS_R_MAGZERO) == pytest.approx(1 / electrons_per_nmgy, rel=1e-12)
    assert electrons_to_nmgy(electrons_per_nmgy, SDSS_R_MAGZERO) == pytest.approx(1.0, rel=1e-12)

    fluxes = torch.tensor([0.5, 1.0, 250.0], dtype=torch.float64)
    magzero = torch.tensor(SDSS_R_MAGZERO, dtype=torch.float64)
    for zero_point in (SDSS_R_MAGZERO, magzero):  # float and tensor zero points agree
        electrons = nmgy_to_electrons(fluxes, zero_point)
        torch.testing.assert_close(electrons, fluxes * electrons_per_nmgy, rtol=1e-12, atol=0)
        torch.testing.assert_close(
            electrons_to_nmgy(electrons, zero_point), fluxes, rtol=1e-12, atol=0
        )
