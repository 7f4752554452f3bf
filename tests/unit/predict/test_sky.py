import numpy as np
import torch

from bliss.catalog import FullCatalog
from bliss.predict.confusion import render_with_variance
from bliss.predict.psf_model import MoffatShape
from bliss.predict.sky import refit_sky
from bliss.protocols import SurveyImage
from bliss.surveys.fits_reader import estimate_background

SIZE = 256
SKY = 100.0
PSF = MoffatShape(3.0, 3.5, fitted=False)


def crowded_field(seed=0):
    """A sea of stars (0.03 per px², 200-20000 electrons) on a flat sky, and its catalog."""
    rng = np.random.default_rng(seed)
    n = 2000
    positions = rng.uniform(2, SIZE - 2, (n, 2))
    electrons = 200.0 * (1 - rng.random(n)) ** (-1 / 0.8)
    electrons = np.minimum(electrons, 2e4)
    stars, _ = render_with_variance(positions, electrons, np.zeros(n), PSF, (SIZE, SIZE))
    pixels = rng.poisson(SKY + stars).astype(np.float64)[None]
    image = SurveyImage(
        path=None,
        bands=("r",),
        images=pixels,
        background=estimate_background(pixels[0])[None],
        psf_fwhm_arcsec=np.array([1.2]),
        magzero=np.array([22.5]),  # one electron is one nanomaggy
        wcs=None,
    )
    catalog = FullCatalog(
        SIZE,
        SIZE,
        {
            "n_sources": torch.tensor([n]),
            "plocs": torch.tensor(positions)[None],
            "fluxes": torch.tensor(electrons).view(1, n, 1),
            "prob_galaxy": torch.zeros(1, n, 1),
        },
    )
    return image, catalog


def test_the_sky_without_the_stars_is_the_sky():
    # sep on the crowded pixels sits several electrons above the sky (the crowd's wings); with
    # the catalog's stars subtracted it reads the sky to within 1 e (measured -0.55: its mode
    # estimator on noise whose Poisson variance rises under the subtracted stars reads low)
    image, catalog = crowded_field()
    before = float(np.median(image.background)) - SKY
    everywhere = np.ones((SIZE, SIZE), dtype=bool)
    refitted = refit_sky(image, catalog, [PSF], everywhere, 0.4)
    after = float(np.median(refitted.background)) - SKY
    assert before > 3.0
    assert abs(after) < 1.0


def test_only_the_given_pixels_change():
    image, catalog = crowded_field()
    where = np.zeros((SIZE, SIZE), dtype=bool)
    where[:128] = True
    refitted = refit_sky(image, catalog, [PSF], where, 0.4)
    assert np.array_equal(refitted.background[0, 128:], image.background[0, 128:])
    assert np.median(refitted.background[0, :128]) < np.median(image.background[0, :128]) - 2.0
    # the pixels themselves are the image's
    assert refitted.images is image.images
