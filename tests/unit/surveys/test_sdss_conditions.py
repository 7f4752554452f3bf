import numpy as np
import pytest
import torch

from bliss.errors import BlissConfigError, BlissIOError
from bliss.simulator.conditions import ObservingConditions
from bliss.surveys import ParametricSurvey
from bliss.surveys.moffat import add_halo
from bliss.surveys.sdss.conditions import sdss_observed_conditions
from bliss.surveys.sdss.psf import SdssPsf
from tests.unit.surveys.conftest import CAMCOL, FIELD, RUN, SDSS_CUTOUTS

BANDS = ("g", "r", "i")
SURVEY = ParametricSurvey(
    "toy",
    BANDS,
    "r",
    0.396,
    3.5,
    dict.fromkeys(BANDS, 1.3),
    dict.fromkeys(BANDS, 100.0),
    dict.fromkeys(BANDS, 28.0),
)


@pytest.fixture(scope="module")
def observed():
    return sdss_observed_conditions(SDSS_CUTOUTS, [[RUN, CAMCOL, FIELD]], BANDS, grid=2)


def test_table_holds_the_psfield_psf_and_frame_sky(observed):
    assert observed.psf_images.shape[:2] == (4, 3)
    np.testing.assert_allclose(observed.psf_images.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    # the cut-out starts at full-frame pixel (CUTROW0, CUTCOL0); the label gives the place used
    row, col = (float(v.split("=")[1]) for v in observed.labels[0].split()[1:])
    psf = SdssPsf.from_psfield(
        SDSS_CUTOUTS / "94/1/12/psField-000094-1-0012.fit", "r", run=RUN, camcol=CAMCOL, field=FIELD
    )
    np.testing.assert_allclose(observed.psf_images[0, 1], psf.image(row, col), atol=1e-6)
    # Moffat-equivalent FWHM: smaller than the psField width, and plausible SDSS seeing
    assert np.all(observed.psf_fwhm_arcsec[:, 1] < psf.fwhm_arcsec(row, col))
    assert np.all((observed.psf_fwhm_arcsec > 0.8) & (observed.psf_fwhm_arcsec < 2.0))
    # sky in electrons per pixel: r-band SDSS skies are hundreds of electrons
    assert np.all((observed.sky_electrons[:, 1] > 100) & (observed.sky_electrons[:, 1] < 2000))


def test_conditions_draw_rows_of_the_table(observed):
    conditions = ObservingConditions(SURVEY, "r", fwhm_scale=[0.9, 1.1], observed=observed)
    drawn = conditions.sample(64, torch.Generator().manual_seed(0))
    assert drawn["psf_images"].shape == (64, 3, *observed.psf_images.shape[-2:])
    dilation = drawn["psf_dilation"]
    assert torch.all((dilation >= 0.9) & (dilation <= 1.1)) and dilation.std() > 0.03
    # every image's FWHM is one table row's, widened by its own dilation
    base = drawn["psf_fwhm_arcsec"] / dilation[:, None]
    table = torch.from_numpy(observed.psf_fwhm_arcsec)
    assert all(torch.isclose(table, b, rtol=1e-5).all(dim=1).any() for b in base)
    assert len({tuple(b.tolist()) for b in base}) > 1  # several places drawn


def test_bad_arguments():
    with pytest.raises(BlissConfigError, match="at least one"):
        sdss_observed_conditions(SDSS_CUTOUTS, [], BANDS)
    with pytest.raises(BlissIOError, match="psField"):
        sdss_observed_conditions(SDSS_CUTOUTS, [[RUN, CAMCOL, FIELD + 1]], BANDS)


def _simulator(observed, renderer):
    from bliss.simulator.prior import CatalogPrior
    from bliss.simulator.simulate import ImageSimulator

    prior = CatalogPrior(BANDS, "r", 0.396, density_per_arcmin2=200.0)
    conditions = ObservingConditions(SURVEY, "r", observed=observed)
    return ImageSimulator(SURVEY, prior, renderer, conditions, image_size=32, noise="none")


def test_simulated_images_use_the_observed_psf(observed):
    from bliss.simulator.render import GalsimRenderer

    simulator = _simulator(observed, GalsimRenderer())
    drawn = simulator.conditions.sample(2, torch.Generator().manual_seed(1))
    for band, profile in enumerate(simulator._image_psfs(drawn, 0)):
        image = profile.drawImage(nx=51, ny=51, scale=0.396).array
        # within 1 % of the peak (~0.05): GalSim interpolates the image and divides out the pixel
        np.testing.assert_allclose(image, drawn["psf_images"][0, band].numpy(), atol=5e-4)
    batch = simulator.simulate(3, seed=5)
    assert batch["images"].shape == (3, 3, 32, 32) and torch.isfinite(batch["images"]).all()
    rows = torch.from_numpy(observed.psf_fwhm_arcsec)
    assert all(torch.isclose(rows, f).all(dim=1).any() for f in batch["psf_fwhm_arcsec"])


def test_torch_renderer_draws_the_observed_psfs_as_galsim_does(observed):
    from bliss.simulator.render import GalsimRenderer
    from bliss.simulator.torch_render import TorchRenderer

    images = []
    for renderer in (GalsimRenderer(), TorchRenderer()):
        simulator = _simulator(observed, renderer)
        simulator.conditions = ObservingConditions(
            SURVEY, "r", fwhm_scale=[0.8, 1.3], observed=observed
        )
        images.append(simulator.simulate(4, seed=3)["images"])
    galsim, torch_images = images
    flux = galsim.sum(dim=(-2, -1))
    # GalSim interpolates the PSF image (quintic), the torch renderer band-limits it (sinc):
    # measured 2e-4 in total flux and 0.5 % in summed |residual| over ~6 sources per image
    assert torch.allclose(torch_images.sum(dim=(-2, -1)), flux, rtol=1e-3)
    assert torch.all((torch_images - galsim).abs().sum(dim=(-2, -1)) < 0.01 * flux)


def test_a_halo_widens_the_psfs_but_not_their_fwhm_labels(observed):
    halo = {"fraction": 0.06, "fwhm_arcsec": 12.0, "beta": 2.0}
    haloed = sdss_observed_conditions(
        SDSS_CUTOUTS, [[RUN, CAMCOL, FIELD]], BANDS, grid=2, halo=halo
    )
    np.testing.assert_array_equal(haloed.psf_fwhm_arcsec, observed.psf_fwhm_arcsec)
    np.testing.assert_allclose(haloed.psf_images.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    expected = add_halo(observed.psf_images[0, 1], pixel_scale_arcsec=0.396, **halo)
    np.testing.assert_allclose(haloed.psf_images[0, 1], expected, atol=1e-7)
    # 6 % of the light moves from the core to the wings
    center = observed.psf_images.shape[-1] // 2
    peak_ratio = haloed.psf_images[..., center, center] / observed.psf_images[..., center, center]
    assert np.all((peak_ratio > 0.93) & (peak_ratio < 0.95))


def test_a_mixed_pool_takes_observed_rows_and_parametric_psfs(observed):
    from bliss.simulator.psf_shape import psf_shape

    spec = {"fwhm_arcsec": [0.8, 2.0], "beta": [2.5, 5.0], "max_ellipticity": 0.15}
    conditions = ObservingConditions(
        SURVEY,
        "r",
        fwhm_scale=[1.0, 1.2],
        observed=observed,
        parametric_psf=spec,
        observed_fraction=0.25,
    )
    drawn = conditions.sample(200, torch.Generator().manual_seed(2))
    rows = drawn["observed_row"]
    on_table = rows >= 0
    # binomial(200, 0.25): 50 +- 6
    assert 30 < int(on_table.sum()) < 70
    # observed images hold their row's PSF and shape; parametric ones are undilated Moffats
    images = drawn["psf_images"]
    assert images.shape[-2:] == observed.psf_images.shape[-2:]
    table = torch.from_numpy(observed.psf_images)
    torch.testing.assert_close(images[on_table], table[rows[on_table]])
    torch.testing.assert_close(
        drawn["psf_shape"][on_table], torch.from_numpy(psf_shape(table[rows[on_table]].numpy()))
    )
    assert (drawn["psf_dilation"][~on_table] == 1).all()
    assert drawn["psf_dilation"][on_table].std() > 0.03
    measured = torch.from_numpy(psf_shape(images[~on_table].numpy()))
    torch.testing.assert_close(drawn["psf_shape"][~on_table], measured)


def test_observed_only_draws_are_those_of_earlier_versions(observed):
    # no parametric pool: the same rows and dilations as before psf_shape existed
    conditions = ObservingConditions(SURVEY, "r", fwhm_scale=[0.9, 1.1], observed=observed)
    generator = torch.Generator().manual_seed(7)
    drawn = conditions.sample(16, generator)
    replay = torch.Generator().manual_seed(7)
    factor = 0.9 + 0.2 * torch.rand(16, 2, generator=replay)[:, 0]
    rows = torch.randint(len(observed.labels), (16,), generator=replay)
    torch.testing.assert_close(drawn["observed_row"], rows)
    torch.testing.assert_close(drawn["psf_dilation"], factor)


def test_simulated_batches_carry_the_psf_shape(observed):
    from bliss.simulator.psf_shape import moffat_psf_shape
    from bliss.simulator.torch_render import TorchRenderer

    simulator = _simulator(observed, TorchRenderer())
    batch = simulator.simulate(3, seed=4)
    assert batch["psf_shape"].shape == (3, 3, 3)
    assert batch["psf_shape"][..., :2].abs().max() > 0.01  # psField PSFs are not round
    simulator.conditions = ObservingConditions(SURVEY, "r")  # the survey's round Moffat
    nominal = simulator.simulate(2, seed=4)["psf_shape"]
    expected = torch.from_numpy(moffat_psf_shape(3.5, 1.3, 0.396)).expand(2, 3, 3)
    torch.testing.assert_close(nominal, expected)
