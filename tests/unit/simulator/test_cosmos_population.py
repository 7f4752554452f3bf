"""Template colours and the COSMOS population with colours: known answers on synthetic catalogs.

The real COSMOS catalog ships in the optional fpfs wheel; the test on it skips without fpfs.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from hydra.utils import instantiate

from bliss.catalog import GALAXY_KEYS, SERSIC_KEY
from bliss.errors import BlissConfigError, BlissValueError
from bliss.simulator.cosmos import cosmos_catalog_path
from bliss.simulator.cosmos_population import CosmosPopulation
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.template_colors import TemplateColors
from tests.conftest import compose_config

LSST = ("u", "g", "r", "i", "z", "y")


@pytest.fixture(scope="module")
def colors() -> TemplateColors:
    return TemplateColors()


def _magnitudes(colors: TemplateColors, t: float, z: float) -> dict[str, float]:
    mags = colors.magnitudes(torch.tensor([t]), torch.tensor([z]))[0]
    return dict(zip(colors.bands, mags.tolist(), strict=True))


def test_ellipticals_are_red_and_their_break_moves_with_redshift(colors: TemplateColors) -> None:
    early, late = _magnitudes(colors, 0.0, 0.3), _magnitudes(colors, 3.0, 0.3)
    # an elliptical's g - r exceeds an irregular's by ~0.8 mag at z = 0.3 (CWW templates)
    assert (early["g"] - early["r"]) - (late["g"] - late["r"]) > 0.6
    # the 4000 A break leaves g-r for r-i as z goes from 0.2 to 0.8 (g: 400-550 nm)
    near, far = _magnitudes(colors, 0.0, 0.2), _magnitudes(colors, 0.0, 0.8)
    assert (far["r"] - far["i"]) - (near["r"] - near["i"]) > 0.4


def test_magnitudes_interpolate_the_grid_linearly(colors: TemplateColors) -> None:
    z0, z1 = colors.redshifts[25], colors.redshifts[26]
    at = colors.magnitudes(torch.tensor([1.0, 2.0, 1.5, 1.0]), torch.tensor([z0, z0, z0, 0.0]))
    torch.testing.assert_close(at[0].double(), colors.table[1, 25])
    torch.testing.assert_close(at[2], (at[0] + at[1]) / 2, rtol=0, atol=1e-5)
    mid = colors.magnitudes(torch.tensor([1.0]), torch.tensor([(z0 + z1) / 2]))[0]
    torch.testing.assert_close(
        mid.double(), (colors.table[1, 25] + colors.table[1, 26]) / 2, rtol=0, atol=1e-5
    )


def test_types_and_redshifts_off_the_grid_are_refused(colors: TemplateColors) -> None:
    with pytest.raises(BlissValueError, match="template types"):
        colors.magnitudes(torch.tensor([3.5]), torch.tensor([1.0]))
    with pytest.raises(BlissValueError, match="redshifts"):
        colors.magnitudes(torch.tensor([1.0]), torch.tensor([7.0]))


def test_a_bandpass_galsim_cannot_read_is_named() -> None:
    with pytest.raises(BlissConfigError, match="no_such_band.dat"):
        TemplateColors({"r": "no_such_band.dat"})
    with pytest.raises(BlissConfigError, match="z_step"):
        TemplateColors(z_step=0.0)


def _component(intensity: float, radius_px: float, q: float = 0.5) -> list[float]:
    return [intensity, radius_px, 1.0, q, 0.0, 100.0, 100.0, 0.3]


def _catalog(path: Path, rows: list[tuple[float, float, float]]) -> Path:
    """Galaxies ``(F814W mag, zphot, disk share)``; row ``i``'s disk is ``10 + i`` COSMOS px."""
    bulgefit = []
    for i, (_, _, disk) in enumerate(rows):
        # fluxes per component: 11.95 I r^2 q (disk), 22.67 I r^2 q (bulge); r = 10 + i, q = 0.5
        scale = 0.5 * (10.0 + i) ** 2
        bulge = 1.0 - disk
        disk_i = disk / (11.948494741464001 * scale) if disk > 0 else 0.0
        bulge_i = bulge / (22.665233723581743 * scale) if bulge > 0 else 0.0
        bulgefit.append(_component(disk_i, 10.0 + i) + _component(bulge_i, 10.0 + i))
    columns = [
        fits.Column("IDENT", "J", array=np.arange(len(rows))),
        fits.Column("mag_auto", "D", array=[r[0] for r in rows]),
        fits.Column("zphot", "D", array=[r[1] for r in rows]),
        fits.Column("sersicfit", "8D", array=np.array([_component(1.0, 10.0)] * len(rows))),
        fits.Column("bulgefit", "16D", array=np.array(bulgefit)),
        fits.Column("fit_status", "5J", array=np.ones((len(rows), 5), dtype=np.int32)),
        fits.Column("use_bulgefit", "J", array=[1] * len(rows)),
        fits.Column("viable_sersic", "J", array=[1] * len(rows)),
    ]
    fits.BinTableHDU.from_columns(columns).writeto(path)
    return path


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> CosmosPopulation:
    """A bulge at z = 0.4 (F814W 20), a disk at z = 1.0 (F814W 22), a mixed one at z = 2 (24)."""
    path = _catalog(
        tmp_path_factory.mktemp("cosmos") / "c.fits",
        [(20.0, 0.4, 0.0), (22.0, 1.0, 1.0), (24.0, 2.0, 0.5)],
    )
    return CosmosPopulation(
        LSST, "r", path=path, type_scatter=0.0, color_scatter=0.0, redshift_key="redshift"
    )


def test_each_galaxy_takes_its_templates_colours_at_its_redshift(
    population: CosmosPopulation, colors: TemplateColors
) -> None:
    # without type scatter: t = 3 disk_frac, so E, Im and the Sbc-Scd midpoint
    for row, (t, z) in enumerate(((0.0, 0.4), (3.0, 1.0), (1.5, 2.0))):
        mags = _magnitudes(colors, t, z)
        expected_ref = population.mag[row]  # sorted by r: the synthetic rows stay in order
        draw = population.sample(expected_ref[None].float(), torch.Generator().manual_seed(0))
        assert float(draw["redshift"][0, 0]) == pytest.approx(z)
        want = torch.tensor([mags[b] - mags["r"] for b in LSST])
        torch.testing.assert_close(draw["colors"][0], want, rtol=0, atol=1e-4)
        # the match is on r: F814W plus the template's r - F814W
        assert float(expected_ref) == pytest.approx(
            (20.0, 22.0, 24.0)[row] + mags["r"] - mags["F814W"], abs=1e-4
        )


def test_galaxies_fainter_than_the_catalog_shrink_with_the_size_luminosity_slope(
    population: CosmosPopulation,
) -> None:
    faintest = population.mag[-1]
    target = float(faintest) + 2.0
    assert target > population.complete_mag
    draw = population.sample(torch.tensor([target]), torch.Generator().manual_seed(0))
    # row 2 (disk 12 px = 0.36 arcsec before the q = 0.5 circularisation: 0.36 sqrt(0.5))
    hlr = 0.03 * 12.0 * math.sqrt(0.5)
    shrink = 10 ** (-0.4 * 0.3 * (target - float(faintest)))
    assert float(draw["disk_hlr_arcsec"][0, 0]) == pytest.approx(hlr * shrink, rel=1e-4)
    assert float(draw["redshift"][0, 0]) == pytest.approx(2.0)


def test_a_prior_with_the_population_uses_its_colours_for_galaxies_only(
    population: CosmosPopulation,
) -> None:
    star_colors = {
        "mean": {"u": 1.0, "g": 0.5, "i": -0.2, "z": -0.3, "y": -0.35},
        "slope": {b: 0.0 for b in LSST},
        "scatter": {b: 0.0 for b in LSST},
    }
    prior = CatalogPrior(
        list(LSST),
        "r",
        0.2,
        max_sources=2,
        density_per_arcmin2=3e4,
        prob_galaxy=0.5,
        star_flux={"min_nmgy": 0.1, "max_nmgy": 100.0, "alpha": 0.5},
        galaxy_flux={"min_nmgy": 0.1, "max_nmgy": 100.0, "alpha": 0.5},
        star_colors=star_colors,
        galaxy_colors=star_colors,
        galaxy_shape_catalog=population,
    )
    catalog = prior.sample(4, 8, 8, torch.Generator().manual_seed(1))
    on = torch.arange(2) < catalog["n_sources"][..., None]
    galaxy = on & (catalog["source_type"][..., 0] > 0.5)
    star = on & ~galaxy
    assert int(galaxy.sum()) > 50 and int(star.sum()) > 50
    fluxes = catalog["fluxes"]
    color = -2.5 * torch.log10(fluxes / fluxes[..., 2:3])
    torch.testing.assert_close(
        color[star],
        torch.tensor([1.0, 0.5, 0.0, -0.2, -0.3, -0.35]).expand_as(color[star]),
        rtol=0,
        atol=1e-4,
    )
    # every galaxy's colours are one of the three catalog galaxies'
    distances = torch.cdist(color[galaxy], population.colors.float())
    assert float(distances.min(dim=1).values.max()) < 1e-3
    assert bool((catalog["redshift"][galaxy] > 0).all())
    assert bool((catalog["redshift"][star] == 0).all())
    assert set(GALAXY_KEYS) <= set(catalog.keys())


def test_a_band_without_a_bandpass_is_named(tmp_path: Path) -> None:
    path = _catalog(tmp_path / "c.fits", [(20.0, 0.4, 0.0)])
    with pytest.raises(BlissConfigError, match=r"bandpasses has no file for bands \['Y'\]"):
        CosmosPopulation(["r", "Y"], "r", path=path)
    with pytest.raises(BlissConfigError, match="mag_window"):
        CosmosPopulation(LSST, "r", path=path, mag_window=0.0)


def test_the_real_catalog_gives_fainter_galaxies_higher_redshifts_and_bluer_colours() -> None:
    try:
        cosmos_catalog_path()
    except BlissConfigError:
        pytest.skip("fpfs (pip install 'bliss-toolkit[weak_lensing]') is not installed")
    population = CosmosPopulation(LSST, "r", redshift_key="redshift")
    generator = torch.Generator().manual_seed(0)
    bright = population.sample(torch.full((4000,), 20.0), generator)
    faint = population.sample(torch.full((4000,), 25.0), generator)
    # COSMOS: median photo-z ~0.3 at r = 20 and ~1.1 at r = 25
    assert float(bright["redshift"].median()) < 0.5 < 0.9 < float(faint["redshift"].median())
    # faint galaxies are star-forming: bluer g - r by more than 0.2 mag in the median
    assert float(bright["colors"][:, 1].median() - faint["colors"][:, 1].median()) > 0.2
    assert float(faint["disk_hlr_arcsec"].median()) < float(bright["disk_hlr_arcsec"].median())


def test_the_dc2_like_preset_composes_and_draws_its_density(tmp_path: Path) -> None:
    path = _catalog(tmp_path / "c.fits", [(20.0, 0.4, 0.0), (22.0, 1.0, 1.0), (24.0, 2.0, 0.5)])
    cfg = compose_config(
        ["survey=lsst_coadd", "prior=dc2_like", f"prior.galaxy_shape_catalog.path={path}"]
    )
    prior = instantiate(cfg.prior)
    assert isinstance(prior.galaxy_shape_catalog, CosmosPopulation)
    assert prior.bands == LSST and prior.max_sources == 3
    catalog = prior.sample(8, 64, 64, torch.Generator().manual_seed(0))
    # 8 x 64 x 64 tiles of 0.8 arcsec: 5.8 arcmin^2 at 103 per arcmin^2, ~600 sources (Poisson
    # sd 25; the cap of 3 per tile removes ~1e-6 of them)
    area = 8 * (64 * 0.8 / 60) ** 2
    assert int(catalog["n_sources"].sum()) == pytest.approx(103.0 * area, abs=5 * 25)


def test_the_sersic_profile_takes_the_single_sersic_fit(tmp_path: Path) -> None:
    path = _catalog(tmp_path / "c.fits", [(20.0, 0.4, 0.0), (22.0, 1.0, 1.0)])
    population = CosmosPopulation(LSST, "r", path=path, profile="sersic", color_scatter=0.0)
    draw = population.sample(torch.tensor([20.0, 22.0]), torch.Generator().manual_seed(0))
    # every synthetic Sersic fit: n = 1, q = 0.5, 10 COSMOS px along the major axis, phi = 0.3
    torch.testing.assert_close(draw[SERSIC_KEY][:, 0], torch.tensor([1.0, 1.0]))
    assert bool((draw["disk_frac"] == 0).all())
    hlr = 0.03 * 10.0 * math.sqrt(0.5)
    shrink = torch.pow(10.0, -0.4 * 0.3 * (torch.tensor([20.0, 22.0]) - population.mag[:2]))
    torch.testing.assert_close(
        draw["bulge_hlr_arcsec"][:, 0], hlr * shrink.float(), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(draw["bulge_q"][:, 0], torch.tensor([0.5, 0.5]))
    with pytest.raises(BlissConfigError, match="profile"):
        CosmosPopulation(LSST, "r", path=path, profile="moffat")


def test_sersic_galaxies_render_with_galsim_only(tmp_path: Path) -> None:
    from bliss.cli.generate import build_simulator

    path = _catalog(tmp_path / "c.fits", [(20.0, 0.4, 0.0), (21.0, 1.0, 1.0)])
    overrides = [
        "survey=lsst_coadd",
        "prior=dc2_like",
        f"prior.galaxy_shape_catalog.path={path}",
        "prior.galaxy_shape_catalog.profile=sersic",
        "prior.density_per_arcmin2=2000",
        "simulator.image_size=32",
    ]
    simulator = build_simulator(compose_config([*overrides, "simulator=galsim"]))
    batch = simulator.simulate(2, seed=0)
    catalog = batch["catalog"]
    galaxy = catalog.galaxy_mask
    assert int(galaxy.sum()) > 3
    assert bool((catalog[SERSIC_KEY][galaxy] == 1.0).all())
    assert bool(torch.isfinite(batch["images"]).all())
    torch_simulator = build_simulator(compose_config([*overrides, "simulator=torch"]))
    with pytest.raises(BlissConfigError, match="simulator=galsim"):
        torch_simulator.simulate(2, seed=0)
