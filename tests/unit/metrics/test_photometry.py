"""The Cramer-Rao bound on a star's flux against a brute-force Fisher information."""

import numpy as np
import pytest
from scipy import stats

from bliss.errors import BlissValueError
from bliss.metrics.photometry import flux_cramer_rao_std
from bliss.predict.psf_model import moffat_stamp


def _brute_force_fisher(psf, sky, flux, step=1e-3):
    """E[-d2/df2 log L] by finite differences of the Poisson log-likelihood, summed per pixel
    over every count with non-negligible probability (no formula shared with the function)."""
    info = 0.0
    for p, s in zip(psf.ravel(), np.broadcast_to(sky, psf.shape).ravel(), strict=True):
        mean = s + flux * p
        counts = np.arange(
            max(0, int(mean - 12 * np.sqrt(mean)) - 5), int(mean + 12 * np.sqrt(mean)) + 10
        )
        weights = stats.poisson.pmf(counts, mean)

        def loglike(f, p=p, s=s, counts=counts):
            return stats.poisson.logpmf(counts, s + f * p)

        second = (loglike(flux + step) - 2 * loglike(flux) + loglike(flux - step)) / step**2
        info -= float((weights * second).sum())
    return info


@pytest.mark.parametrize(("flux", "sky"), [(500.0, 20.0), (5000.0, 5.0), (50.0, 50.0)])
def test_bound_equals_brute_force_fisher(flux, sky):
    psf = moffat_stamp(2.5, 3.5, 0.2, -0.3, half=3)
    expected = 1 / np.sqrt(_brute_force_fisher(psf, sky, flux))
    assert flux_cramer_rao_std(psf, sky, flux) == pytest.approx(expected, rel=2e-3)


def test_bright_star_bound_tends_to_poisson_and_faint_to_sky_limited():
    psf = moffat_stamp(3.0, 3.5, 0.0, 0.0, half=12)
    bright = 1e8
    # all the light in the stamp, no sky: the bound is sqrt(flux * captured fraction) / fraction
    assert flux_cramer_rao_std(psf, 1e-9, bright) == pytest.approx(
        np.sqrt(bright / psf.sum()), rel=1e-3
    )
    sky = 100.0  # sky-limited: sigma = sqrt(sky / sum(psf^2))
    assert flux_cramer_rao_std(psf, sky, 0.0) == pytest.approx(
        np.sqrt(sky / (psf**2).sum()), rel=1e-9
    )


@pytest.mark.parametrize("bad", [{"flux_electrons": -1.0}, {"sky_electrons": 0.0}])
def test_bad_input_is_refused(bad):
    args = {"psf": np.full((3, 3), 1 / 9), "sky_electrons": 1.0, "flux_electrons": 1.0} | bad
    with pytest.raises(BlissValueError):
        flux_cramer_rao_std(**args)
