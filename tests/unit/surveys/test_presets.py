"""The LSST coadd preset is the sum of N single visits, and its depth is what that implies."""

import math

import galsim
import numpy as np
import pytest
import yaml

from bliss.conf import __file__ as conf_init
from bliss.metrics.photometry import flux_cramer_rao_std

SURVEYS = __import__("pathlib").Path(conf_init).parent / "survey"
#: ten-year visits per band (Ivezic et al. 2019, Table 1), as the preset's comment says
VISITS = {"u": 56, "g": 80, "r": 184, "i": 184, "z": 160, "y": 160}


def _preset(name: str) -> dict:
    return yaml.safe_load((SURVEYS / f"{name}.yaml").read_text())


def _depth(preset: dict, band: str) -> float:
    """5-sigma AB depth of a point source at the sky limit (the Cramer-Rao bound at zero flux)."""
    fwhm, scale = preset["psf_fwhm_arcsec"][band], preset["pixel_scale_arcsec"]
    psf = galsim.Moffat(preset["psf_beta"], fwhm=fwhm).drawImage(nx=81, ny=81, scale=scale).array
    sigma = flux_cramer_rao_std(np.clip(psf, 0, None), preset["sky_electrons"][band], 0.0)
    return preset["magzero"][band] - 2.5 * math.log10(5 * sigma)


@pytest.mark.parametrize("band", list(VISITS))
def test_coadd_is_the_sum_of_its_visits(band: str) -> None:
    visit, coadd = _preset("lsst"), _preset("lsst_coadd")
    n = VISITS[band]
    assert coadd["sky_electrons"][band] == pytest.approx(n * visit["sky_electrons"][band], rel=1e-3)
    assert coadd["magzero"][band] == pytest.approx(
        visit["magzero"][band] + 2.5 * math.log10(n), abs=1e-3
    )
    # at equal seeing the depth grows by 1.25 log10(N); the coadd's sharper PSF adds a little
    gain = _depth(coadd, band) - _depth(visit, band)
    seeing = 2.5 * math.log10(visit["psf_fwhm_arcsec"][band] / coadd["psf_fwhm_arcsec"][band])
    assert gain == pytest.approx(1.25 * math.log10(n) + seeing, abs=0.03)


def test_coadd_depth_is_near_the_published_ten_year_depth() -> None:
    # Ivezic et al. 2019, Table 1, ten-year m5: r 27.5, i 26.8 (within the presets' ~0.4 mag
    # approximations of zero points and sky brightness)
    coadd = _preset("lsst_coadd")
    assert _depth(coadd, "r") == pytest.approx(27.5, abs=0.5)
    assert _depth(coadd, "i") == pytest.approx(26.8, abs=0.5)
