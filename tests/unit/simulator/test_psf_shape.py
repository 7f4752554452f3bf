import galsim
import numpy as np
import pytest
import torch

from bliss.data.transforms import flip_cols, rotate90
from bliss.errors import BlissConfigError, BlissValueError
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.psf_shape import moffat_psf_shape, psf_shape
from bliss.surveys import ParametricSurvey

BANDS = ("g", "r")
SURVEY = ParametricSurvey(
    "toy",
    BANDS,
    "r",
    0.4,
    3.5,
    {"g": 1.4, "r": 1.3},
    {"g": 80.0, "r": 100.0},
    dict.fromkeys(BANDS, 28.0),
)


def _moffat(beta: float, e1: float = 0.0, e2: float = 0.0, fwhm: float = 1.4) -> np.ndarray:
    profile = galsim.Moffat(beta=beta, fwhm=fwhm).shear(e1=e1, e2=e2)
    return profile.drawImage(nx=51, ny=51, scale=0.4).array


def test_descriptors_of_known_profiles():
    # a Gaussian's rho4 is 2 by definition; the distortion is the one applied
    gauss = galsim.Gaussian(fwhm=1.4).shear(e1=0.08, e2=-0.05).drawImage(nx=41, ny=41, scale=0.2)
    np.testing.assert_allclose(psf_shape(gauss.array), [0.08, -0.05, 2.0], atol=2e-3)
    # wings: rho4 falls towards 2 as beta grows, and does not depend on the width
    rho4 = [float(psf_shape(_moffat(beta))[2]) for beta in (2.5, 3.5, 5.0)]
    assert rho4[0] > rho4[1] > rho4[2] > 2.0
    assert abs(float(psf_shape(_moffat(3.5, fwhm=2.0))[2]) - rho4[1]) < 0.01
    np.testing.assert_allclose(moffat_psf_shape(3.5), [0.0, 0.0, rho4[1]], atol=1e-3)


def test_descriptors_turn_with_the_augmentation():
    image = _moffat(3.0, e1=0.1, e2=0.04)
    item = {
        "images": torch.from_numpy(image).float()[None],
        "psf_shape": torch.from_numpy(psf_shape(image))[None],
    }
    for transform in (rotate90, flip_cols):
        turned = transform(item)
        measured = psf_shape(turned["images"][0].double().numpy())
        np.testing.assert_allclose(turned["psf_shape"][0].numpy(), measured, atol=2e-3)
    # a quarter turn flips the sign of both components (spin 2), not a no-op on this PSF
    assert float(item["psf_shape"][0, 0]) > 0.09
    torch.testing.assert_close(rotate90(item)["psf_shape"][0, :2], -item["psf_shape"][0, :2])


def test_bad_psf_images_are_refused():
    with pytest.raises(BlissValueError, match="non-finite"):
        psf_shape(np.full((5, 5), np.nan))
    with pytest.raises(BlissValueError, match="adaptive-moments fit failed"):
        psf_shape(np.zeros((9, 9)))


def test_parametric_psfs_span_their_ranges():
    spec = {"fwhm_arcsec": [0.8, 2.0], "beta": [2.5, 5.0], "max_ellipticity": 0.15, "stamp_px": 41}
    conditions = ObservingConditions(SURVEY, "r", sky_scale=[0.5, 2.0], parametric_psf=spec)
    drawn = conditions.sample(200, torch.Generator().manual_seed(0))
    assert drawn["psf_images"].shape == (200, 2, 41, 41)
    torch.testing.assert_close(
        drawn["psf_images"].sum(dim=(-2, -1)), torch.ones(200, 2, dtype=torch.float64)
    )
    assert (drawn["observed_row"] == -1).all() and (drawn["psf_dilation"] == 1).all()
    fwhm = drawn["psf_fwhm_arcsec"]
    assert fwhm[:, 1].min() >= 0.8 and fwhm[:, 1].max() <= 2.0 and fwhm[:, 1].std() > 0.25
    torch.testing.assert_close(fwhm[:, 0] / fwhm[:, 1], torch.full((200,), 1.4 / 1.3).double())
    shape = drawn["psf_shape"]
    # bands share the ellipticity (the atmosphere's): measured within a few thousandths
    assert (shape[:, 0, :2] - shape[:, 1, :2]).abs().max() < 0.01
    e = shape[:, 1, :2].norm(dim=-1)
    assert e.max() < 0.16 and e.median() > 0.07  # uniform in the disc: median 0.15 / sqrt 2
    # the beta range 2.5-5 spans rho4 ~2.10-2.21 (see test_descriptors_of_known_profiles)
    assert shape[:, 1, 2].min() > 2.07 and shape[:, 1, 2].max() < 2.25
    assert shape[:, 1, 2].std() > 0.02


def test_parametric_config_errors_name_the_key():
    with pytest.raises(BlissConfigError, match="parametric_psf.beta"):
        ObservingConditions(SURVEY, "r", parametric_psf={"fwhm_arcsec": [1, 2], "beta": [1.0, 3]})
    with pytest.raises(BlissConfigError, match="max_ellipticity"):
        ObservingConditions(
            SURVEY,
            "r",
            parametric_psf={"fwhm_arcsec": [1, 2], "beta": [3, 4], "max_ellipticity": 1.2},
        )
    with pytest.raises(BlissConfigError, match="unknown keys"):
        ObservingConditions(
            SURVEY, "r", parametric_psf={"fwhm_arcsec": [1, 2], "beta": [3, 4], "q": 0.5}
        )
    with pytest.raises(BlissConfigError, match="fwhm_arcsec is missing"):
        ObservingConditions(SURVEY, "r", parametric_psf={"beta": [3, 4]})
    with pytest.raises(BlissConfigError, match="observed_fraction"):
        ObservingConditions(
            SURVEY,
            "r",
            parametric_psf={"fwhm_arcsec": [1, 2], "beta": [3, 4]},
            observed_fraction=1.5,
        )


def test_a_psf_gradient_widens_stars_across_the_image():
    from bliss.catalog import FullCatalog
    from bliss.simulator.prior import CatalogPrior
    from bliss.simulator.render import GalsimRenderer
    from bliss.simulator.simulate import ImageSimulator
    from bliss.simulator.torch_render import TorchRenderer

    prior = CatalogPrior(BANDS, "r", 0.4, density_per_arcmin2=1.0)
    conditions = ObservingConditions(SURVEY, "r", fwhm_gradient=0.5)
    simulator = ImageSimulator(
        SURVEY, prior, GalsimRenderer(), conditions, image_size=64, noise="none", margin_px=0
    )
    drawn = conditions.sample(1, torch.Generator().manual_seed(0))
    drawn["psf_fwhm_gradient"] = torch.tensor([[0.0, 0.4]])  # 40 % wider from left to right
    plocs = torch.tensor([[[32.0, 16.0], [32.0, 48.0]]])
    catalog = FullCatalog(
        64,
        64,
        {
            "n_sources": torch.tensor([2]),
            "plocs": plocs,
            "fluxes": torch.full((1, 2, 2), 100.0),
            "source_type": torch.zeros(1, 2, 1),
            **{key: torch.full((1, 2, 1), 0.5) for key in ("disk_frac", "beta_rad", "disk_q")},
            **{key: torch.full((1, 2, 1), 0.5) for key in ("bulge_q", "disk_hlr_arcsec")},
            "bulge_hlr_arcsec": torch.full((1, 2, 1), 0.5),
        },
    )
    batch = simulator.observe(
        catalog.to_tile_catalog(4, 1), drawn, torch.zeros(1, 2, 2), noise_seed=0
    )
    image = (batch["images"][0, 1] - batch["background"][0, 1]).double().numpy()
    sigma = [
        galsim.hsm.FindAdaptiveMom(
            galsim.Image(np.ascontiguousarray(image[18:46, c - 14 : c + 14]))
        ).moments_sigma
        for c in (16, 48)
    ]
    # factors 1 + 0.4 * (16 / 64 - 0.5) = 0.9 and 1 + 0.4 * (48 / 64 - 0.5) = 1.1
    assert sigma[1] / sigma[0] == pytest.approx(1.1 / 0.9, rel=0.02)
    # the FWHM map says the same at those places
    fwhm = batch["psf_fwhm_arcsec"][0, 1]
    assert fwhm.shape == (64, 64)
    assert float(fwhm[32, 48] / fwhm[32, 16]) == pytest.approx(1.1 / 0.9, rel=0.01)
    assert float(fwhm[0, 30]) == pytest.approx(float(fwhm[63, 30]))  # no change along rows
    with pytest.raises(BlissConfigError, match="fwhm_gradient"):
        ImageSimulator(SURVEY, prior, TorchRenderer(), conditions, image_size=64)
    with pytest.raises(BlissConfigError, match="fwhm_gradient"):
        ObservingConditions(SURVEY, "r", fwhm_gradient=1.5)
    # a FWHM map turns with the image
    item = {"images": batch["images"][0], "psf_fwhm_arcsec": batch["psf_fwhm_arcsec"][0]}
    turned = rotate90(item)["psf_fwhm_arcsec"]
    torch.testing.assert_close(turned, torch.rot90(item["psf_fwhm_arcsec"], 1, dims=(-2, -1)))


def test_a_simulated_field_with_a_varying_psf_writes_its_fwhm_map(tmp_path):
    from bliss.simulator.field import write_simulated_field
    from bliss.simulator.prior import CatalogPrior
    from bliss.simulator.render import GalsimRenderer
    from bliss.simulator.simulate import ImageSimulator
    from bliss.surveys.fits_reader import read_fits_image

    prior = CatalogPrior(BANDS, "r", 0.4, density_per_arcmin2=200.0)
    conditions = ObservingConditions(SURVEY, "r", fwhm_gradient=0.5)
    simulator = ImageSimulator(SURVEY, prior, GalsimRenderer(), conditions, image_size=32)
    batch = write_simulated_field(simulator, 4, tmp_path / "f.fits", tmp_path / "t.fits")
    image = read_fits_image(tmp_path / "f.fits", SURVEY)
    # the reader hands the encoder the same map the simulator drew with
    np.testing.assert_allclose(image.psf_fwhm_map, batch["psf_fwhm_arcsec"][0].numpy(), rtol=1e-6)
    assert float(image.psf_fwhm_map[1].max() / image.psf_fwhm_map[1].min()) > 1.01
    median = np.median(batch["psf_fwhm_arcsec"][0].numpy().reshape(2, -1), axis=1)
    # PSF_FWHM is torch's median (the lower middle value of an even count): within 1e-3
    np.testing.assert_allclose(image.psf_fwhm_arcsec, median, rtol=1e-3)


def test_a_simulated_field_records_its_psf_shape_for_the_reader(tmp_path):
    from astropy.io import fits

    from bliss.errors import BlissIOError
    from bliss.predict.predictor import image_psf_shape
    from bliss.simulator.field import write_simulated_field
    from bliss.simulator.prior import CatalogPrior
    from bliss.simulator.simulate import ImageSimulator
    from bliss.simulator.torch_render import TorchRenderer
    from bliss.surveys.fits_reader import read_fits_image

    spec = {"fwhm_arcsec": [1.0, 1.5], "beta": [2.5, 4.0], "max_ellipticity": 0.15}
    prior = CatalogPrior(BANDS, "r", 0.4, density_per_arcmin2=200.0)
    conditions = ObservingConditions(SURVEY, "r", parametric_psf=spec)
    simulator = ImageSimulator(SURVEY, prior, TorchRenderer(), conditions, image_size=32)
    batch = write_simulated_field(simulator, 2, tmp_path / "f.fits", tmp_path / "t.fits")
    image = read_fits_image(tmp_path / "f.fits", SURVEY)
    np.testing.assert_allclose(image.psf_shape, batch["psf_shape"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(image_psf_shape(image), image.psf_shape)  # the cards win
    # cards on one band only are refused, naming the file
    with fits.open(tmp_path / "f.fits", mode="update") as hdus:
        del hdus["g"].header["PSF_RHO4"]
    with pytest.raises(BlissIOError, match="PSF_RHO4"):
        read_fits_image(tmp_path / "f.fits", SURVEY)
