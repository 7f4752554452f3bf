"""Weak lensing in the forward model: exact against GalSim's ``lens``, fields, truth and bad input."""

import galsim
import numpy as np
import pytest
import torch

from bliss.catalog import GALAXY_KEYS, FullCatalog
from bliss.catalog.ellipticity import sersic_second_moment
from bliss.errors import BlissConfigError, BlissValueError
from bliss.simulator.lensing import (
    ConstantLensing,
    LensingGeometry,
    LensingPrior,
    check_lensing,
    galaxy_ellipticity,
    reduced_shear,
)
from bliss.simulator.render import GalsimRenderer, galaxy_profile, moffat_psf
from bliss.simulator.torch_render import TorchRenderer
from tests.unit.simulator.test_simulate import _simulator

SCALE = 0.2
SHAPE = (64, 64)
PLOC = (32.3, 31.6)
PARAMS = np.array([0.6, 0.7, 0.5, 0.8, 0.7, 0.4])  # disk + bulge, both elongated
LENSINGS = [(0.05, -0.03, 1.1), (-0.2, 0.15, 0.9)]


def galsim_lensed(lensing, flux=1e4):
    """GalSim's own drawing of the lensed galaxy (pixel (i, j) centre at (i + .5, j + .5))."""
    profile = galsim.Convolve(galaxy_profile(PARAMS, flux).lens(*lensing), moffat_psf(0.8))
    image = galsim.ImageD(SHAPE[1], SHAPE[0], scale=SCALE, xmin=0, ymin=0)
    centre = image.true_center
    profile.drawImage(
        image=image, offset=(PLOC[1] - 0.5 - centre.x, PLOC[0] - 0.5 - centre.y), method="auto"
    )
    return image.array


def bliss_lensed(lensing, flux=1e4, is_galaxy=True):
    return GalsimRenderer().render(
        plocs=np.array([PLOC]),
        flux_electrons=np.array([[flux]]),
        is_galaxy=np.array([is_galaxy]),
        galaxy_params=PARAMS[None],
        psfs=[moffat_psf(0.8)],
        image_shape=SHAPE,
        pixel_scale_arcsec=SCALE,
        lensing=np.array([lensing]),
    )[0]


def moments(image):
    """Flux, centroid and second moments (row-row, col-col, row-col) of an image."""
    rows, cols = np.indices(image.shape) + 0.5
    flux = image.sum()
    mean_row, mean_col = (image * rows).sum() / flux, (image * cols).sum() / flux
    d_row, d_col = rows - mean_row, cols - mean_col
    second = [
        (image * a * b).sum() / flux for a, b in ((d_row, d_row), (d_col, d_col), (d_row, d_col))
    ]
    return flux, np.array([mean_row, mean_col]), np.array(second)


@pytest.mark.parametrize("lensing", LENSINGS)
def test_lensed_galaxy_matches_galsim(lensing):
    ours, theirs = bliss_lensed(lensing), galsim_lensed(lensing)
    # the renderer's documented accuracy: ~2e-4 of the peak for a PSF of 4 px FWHM
    assert np.abs(ours - theirs).max() < 1e-3 * theirs.max()
    flux, centroid, _ = moments(ours)
    flux_ref, centroid_ref, _ = moments(theirs)
    assert flux == pytest.approx(1e4 * lensing[2], rel=1e-4)  # magnified as GalSim does
    assert flux_ref == pytest.approx(flux, rel=0.01)  # GalSim's stamp loses its folded light
    # the wings beyond a 64 px image move a centroid by a few thousandths of a pixel
    np.testing.assert_allclose(centroid, centroid_ref, atol=0.01)
    np.testing.assert_allclose(centroid, PLOC, atol=0.01)
    # second moments by HSM's adaptive (weighted) moments, which the wings do not dominate
    shape, shape_ref = (
        galsim.hsm.FindAdaptiveMom(galsim.Image(a, scale=SCALE)) for a in (ours, theirs)
    )
    assert shape.moments_sigma == pytest.approx(shape_ref.moments_sigma, rel=1e-3)
    assert shape.observed_shape.g1 == pytest.approx(shape_ref.observed_shape.g1, abs=1e-3)
    assert shape.observed_shape.g2 == pytest.approx(shape_ref.observed_shape.g2, abs=1e-3)


def test_shear_stretches_along_columns_for_positive_g1():
    round_galaxy = np.array([1.0, 0.0, 1.0, 0.6, 1.0, 0.4])
    image = GalsimRenderer().render(
        np.array([PLOC]), np.array([[1e4]]), np.array([True]), round_galaxy[None],
        [moffat_psf(0.8)], SHAPE, SCALE, lensing=np.array([[0.2, 0.0, 1.0]]),
    )[0]  # fmt: skip
    _, _, (var_row, var_col, _) = moments(image)
    assert var_col > 1.3 * var_row


def test_stars_are_not_lensed():
    star = bliss_lensed((0.3, 0.2, 1.5), is_galaxy=False)
    unlensed = bliss_lensed((0.0, 0.0, 1.0), is_galaxy=False)
    np.testing.assert_array_equal(star, unlensed)


def test_torch_renderer_lenses_like_galsim_renderer():
    params = np.stack([PARAMS, [0.0, 2.0, 0.3, 0.5, 0.5, 0.6]])
    plocs = np.array([[20.3, 21.6], [44.2, 40.1]])
    lensing = np.array(LENSINGS)
    flux = np.array([[1000.0], [500.0]])
    expected = GalsimRenderer().render(
        plocs, flux, np.array([True, True]), params, [moffat_psf(0.8)], SHAPE, SCALE,
        lensing=lensing,
    )  # fmt: skip
    data = {
        "n_sources": torch.tensor([2]),
        "plocs": torch.tensor(plocs)[None].float(),
        "fluxes": torch.tensor(flux)[None].float(),
        "source_type": torch.ones(1, 2, 1),
    }
    for index, key in enumerate(GALAXY_KEYS):
        data[key] = torch.tensor(params[:, index : index + 1])[None].float()
    image = TorchRenderer().render(
        FullCatalog(*SHAPE, data),
        torch.tensor([[0.8]]),
        SCALE,
        lensing=torch.tensor(lensing)[None].float(),
    )[0]
    assert np.abs(image.numpy() - expected).max() < 1e-4 * expected.max()


def test_reduced_shear_and_magnification():
    g, mu = reduced_shear(np.array([0.03, -0.04]), np.array(0.1))
    np.testing.assert_allclose(g, [0.03 / 0.9, -0.04 / 0.9])
    assert mu == pytest.approx(1 / (0.81 - 0.0025))
    constant = ConstantLensing(0.03 / 0.9, -0.04 / 0.9, kappa=0.1)
    assert constant.mu == pytest.approx(mu)
    np.testing.assert_allclose(constant.at(np.zeros((3, 2)))[:, 2], mu)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ConstantLensing(0.8, 0.7), "|g| < 1"),
        (lambda: ConstantLensing(0.0, 0.0, kappa=1.0), "kappa < 1"),
        (lambda: reduced_shear(np.zeros(2), np.array(1.2)), "kappa < 1"),
        (lambda: check_lensing(np.array([[0.9, 0.5, 1.0]])), "g"),
        (lambda: check_lensing(np.array([[0.1, 0.0, -1.0]])), "mu > 0"),
        (lambda: LensingPrior(g_max=1.0), "g_max"),
        (lambda: LensingPrior(kind="spiral"), "kind"),
    ],
)
def test_bad_lensing_is_refused(call, match):
    with pytest.raises((BlissValueError, BlissConfigError), match=match):
        call()


@pytest.mark.parametrize("region_px", [24, 6, 0])
def test_region_size_must_divide_the_image_and_hold_whole_tiles(region_px):
    with pytest.raises(BlissConfigError, match="region_px"):
        LensingPrior(region_px=region_px).check_geometry(image_size=64, tile_slen=4)


def test_constant_prior_fills_the_disk():
    prior = LensingPrior("constant", g_max=0.05)
    geometry = LensingGeometry(64, 64, 8, SCALE)
    fields = prior.sample(2000, geometry, torch.Generator().manual_seed(0))
    g = np.array([field.g for field in fields])
    radius = np.hypot(*g.T)
    assert radius.max() <= 0.05
    # uniform in the disk: P(|g| < g_max / 2) = 1/4, binomial sd 0.01 with 2000 draws
    assert np.mean(radius < 0.025) == pytest.approx(0.25, abs=0.03)
    assert np.abs(g.mean(0)).max() < 0.003  # mean zero, sd of the mean ~0.0005


def test_power_spectrum_fields_scale_with_amplitude_and_average_consistently():
    geometry = LensingGeometry(64, 64, 8, SCALE)
    spreads = []
    for amplitude in (1e-4, 4e-4):
        prior = LensingPrior("power_spectrum", amplitude=amplitude, region_px=16)
        fields = prior.sample(20, geometry, torch.Generator().manual_seed(1))
        kappa_maps = np.stack([field.region_means(4, 4)[1] for field in fields])
        whole = np.stack([field.region_means(1, 1)[1] for field in fields])
        np.testing.assert_allclose(kappa_maps.mean(axis=(1, 2)), whole[:, 0, 0], atol=1e-9)
        spreads.append(kappa_maps.std())
    # a field four times as powerful has twice the spread (same seeds, so the same shapes)
    assert spreads[1] / spreads[0] == pytest.approx(2.0, rel=0.01)


def test_nfw_field_is_tangential_and_peaks_at_the_centre():
    prior = LensingPrior("nfw", mass_msun=(3e14, 3e14), grid_px=4)
    geometry = LensingGeometry(256, 256, 8, SCALE)
    field = prior.sample(1, geometry, torch.Generator().manual_seed(0))[0]
    right, above = field.at(np.array([[128.0, 200.0], [200.0, 128.0]]))
    assert right[0] < 0 < above[0]  # tangential: elongated across the radius
    assert abs(right[1]) < 0.1 * abs(right[0])
    kappa = field.region_means(4, 4)[1][..., 0]
    assert kappa[1:3, 1:3].min() > kappa[0, 0]


def test_simulated_batch_holds_the_truth_and_magnified_fluxes():
    simulator = _simulator(noise="none", density=800.0)
    plain = simulator.simulate(2, seed=3)
    simulator.lensing = LensingPrior("constant", g_max=0.1, kappa=0.05, region_px=16)
    lensed = simulator.simulate(2, seed=3)
    shear = lensed["fields/shear"]
    assert shear.shape == (2, 1, 1, 2) and lensed["fields/shear_map"].shape == (2, 2, 2, 2)
    torch.testing.assert_close(lensed["fields/shear_map"], shear.expand(-1, 2, 2, -1))
    torch.testing.assert_close(lensed["fields/convergence"], torch.full((2, 1, 1, 1), 0.05))
    catalog, truth = lensed["catalog"], plain["catalog"]
    ratio = catalog["fluxes"] / truth["fluxes"].clamp(min=1e-12)
    gamma2 = (shear[:, 0, 0] * 0.95).pow(2).sum(-1)
    mu = (1 / (0.95**2 - gamma2)).view(2, 1, 1, 1, 1)
    galaxy, star = (
        m.unsqueeze(-1).expand_as(ratio) for m in (catalog.galaxy_mask, catalog.star_mask)
    )
    assert galaxy.any() and star.any()
    torch.testing.assert_close(ratio[galaxy], mu.expand_as(ratio)[galaxy], rtol=1e-5, atol=0)
    torch.testing.assert_close(ratio[star], torch.ones_like(ratio[star]))
    assert not torch.equal(lensed["images"], plain["images"])


def _normal_shears(g_sigma, g_max, n=2000, seed=0):
    prior = LensingPrior("constant", distribution="normal", g_sigma=g_sigma, g_max=g_max)
    fields = prior.sample(n, LensingGeometry(64, 64, 8, SCALE), torch.Generator().manual_seed(seed))
    return np.array([field.g for field in fields])


def test_normal_prior_has_the_configured_spread():
    # g_max = 6 g_sigma: redrawing beyond it removes exp(-18) ~ 2e-8 of the mass, negligible
    g_sigma, n = 0.05, 2000
    g = _normal_shears(g_sigma, g_max=0.3, n=n)
    assert np.hypot(*g.T).max() <= 0.3
    # a normal sample's standard deviation has relative standard error 1 / sqrt(2 n) = 1.6 %;
    # its mean has standard error g_sigma / sqrt(n)
    np.testing.assert_allclose(g.std(0, ddof=1), g_sigma, rtol=5 / np.sqrt(2 * n))
    assert np.abs(g.mean(0)).max() < 5 * g_sigma / np.sqrt(n)
    assert abs(np.corrcoef(g.T)[0, 1]) < 5 / np.sqrt(n)  # independent components


def test_normal_prior_is_truncated_at_g_max():
    g_sigma, g_max, n = 0.05, 0.06, 2000
    radius2 = (_normal_shears(g_sigma, g_max, n=n) ** 2).sum(-1)
    assert radius2.max() <= g_max**2
    assert radius2.max() > (0.95 * g_max) ** 2  # 7 % of the draws land that close to the edge
    # |g| is Rayleigh(g_sigma) cut at g_max: E|g|^2 = 2 s^2 - R^2 e^-t / (1 - e^-t), t = R^2 / 2 s^2
    t = g_max**2 / (2 * g_sigma**2)
    expected = 2 * g_sigma**2 - g_max**2 * np.exp(-t) / -np.expm1(-t)
    assert radius2.mean() == pytest.approx(expected, abs=5 * radius2.std() / np.sqrt(n))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"distribution": "uniform"}, r"simulator\.lensing\.distribution='uniform'"),
        ({"distribution": "normal", "g_sigma": 0.0}, r"g_sigma=0\.0"),
        ({"distribution": "normal", "g_sigma": -0.1}, r"g_sigma=-0\.1"),
        ({"distribution": "normal", "g_sigma": float("nan")}, r"g_sigma=nan"),
        # redrawing until |g| <= g_max would never stop, or take ~1e6 draws per image
        ({"distribution": "normal", "g_max": 0.0}, r"simulator\.lensing\.g_max=0\.0"),
        ({"distribution": "normal", "g_max": 1e-4}, r"simulator\.lensing\.g_max=0\.0001"),
    ],
)
def test_bad_normal_shear_settings_name_the_key(overrides, match):
    with pytest.raises(BlissConfigError, match=match):
        LensingPrior("constant", **overrides)


def test_a_zero_disk_is_no_shear():
    fields = LensingPrior("constant", g_max=0.0).sample(
        3, LensingGeometry(64, 64, 8, SCALE), torch.Generator().manual_seed(0)
    )
    assert all(np.array_equal(field.g, [0.0, 0.0]) for field in fields)


def test_a_round_galaxy_appears_with_the_shear_as_its_ellipticity():
    round_galaxies = np.array([[1.0, 0.3, 1.0, 0.8, 1.0, 0.3], [0.4, 2.0, 1.0, 0.5, 1.0, 0.2]])
    lensing = np.array([[0.05, -0.02, 1.0], [-0.1, 0.03, 1.2]])
    ellipticity = galaxy_ellipticity(round_galaxies, lensing)
    np.testing.assert_allclose(ellipticity, lensing[:, :2], atol=1e-12)  # magnification: no shape


def test_ellipticity_composes_with_the_shear_as_reduced_shears_do():
    q, beta = 0.6, 0.3
    galaxy = np.array([[0.5, beta, q, 0.8, q, 0.3]])  # both components share their axes
    intrinsic = (1 - q) / (1 + q) * np.exp(2j * beta)
    np.testing.assert_allclose(galaxy_ellipticity(galaxy)[0], [intrinsic.real, intrinsic.imag])
    g = 0.05 - 0.02j
    lensed = (intrinsic + g) / (1 + np.conj(g) * intrinsic)
    ellipticity = galaxy_ellipticity(galaxy, np.array([[g.real, g.imag, 1.1]]))[0]
    np.testing.assert_allclose(ellipticity, [lensed.real, lensed.imag], atol=1e-12)


def test_ellipticity_matches_the_moments_of_galsims_drawing():
    # an exponential disk (finite moments inside a large stamp) sheared by GalSim
    galaxy = np.array([[1.0, 0.7, 0.5, 0.3, 1.0, 0.1]])
    profile = galaxy_profile(galaxy[0]).lens(0.04, 0.03, 1.0)
    image = profile.drawImage(nx=801, ny=801, scale=0.01, method="no_pixel").array
    rows, cols = np.indices(image.shape) - 400.0
    q_xx, q_yy = (image * cols**2).sum(), (image * rows**2).sum()
    q_xy = (image * rows * cols).sum()
    expected = np.array([q_xx - q_yy, 2 * q_xy]) / (
        q_xx + q_yy + 2 * np.sqrt(q_xx * q_yy - q_xy**2)
    )
    # the 8 arcsec stamp holds all but ~1e-4 of the moments of a 0.3 arcsec disk
    np.testing.assert_allclose(
        galaxy_ellipticity(galaxy, np.array([[0.04, 0.03, 1.0]]))[0], expected, atol=2e-3
    )


def test_second_moments_of_sersic_profiles():
    assert sersic_second_moment(1.0) == pytest.approx(2.1300, rel=1e-4)  # 6 (hlr / 1.678)^2
    assert sersic_second_moment(0.5) == pytest.approx(1 / np.log(2), rel=1e-6)  # a Gaussian


def test_the_simulator_records_the_ellipticity_the_galaxies_appear_with():
    simulator = _simulator(noise="none", density=800.0)
    simulator.ellipticity = True
    simulator.lensing = LensingPrior("constant", g_max=0.1)
    batch = simulator.simulate(2, seed=4)
    catalog = batch["catalog"]
    galaxy = catalog.galaxy_mask
    params = torch.cat([catalog[key][galaxy] for key in GALAXY_KEYS], -1).double().numpy()
    owner = torch.nonzero(galaxy)[:, 0]
    shear = batch["fields/shear"][owner, 0, 0].double().numpy()
    lensing = np.concatenate([shear, np.ones((len(shear), 1))], -1)
    np.testing.assert_allclose(
        catalog["ellipticity"][galaxy].double().numpy(),
        galaxy_ellipticity(params, lensing),
        atol=1e-6,
    )
    assert (catalog["ellipticity"][catalog.star_mask] == 0).all()


def test_a_simulated_field_records_its_shear_in_the_truth_header(tmp_path):
    from astropy.io import fits

    from bliss.simulator.field import write_simulated_field

    simulator = _simulator(noise="poisson", density=200.0)
    simulator.lensing = LensingPrior("constant", g_max=0.1)
    batch = write_simulated_field(simulator, 5, tmp_path / "field.fits", tmp_path / "truth.fits")
    header = fits.getheader(tmp_path / "truth.fits", 1)
    shear = batch["fields/shear"][0, 0, 0].tolist()
    assert (header["SHEAR1"], header["SHEAR2"]) == pytest.approx(shear)
    assert header["CONVER1"] == 0.0
