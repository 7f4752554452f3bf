"""The ellipticity of a bulge + disk galaxy from its catalog shape parameters.

One definition serves the simulator (the truth of lensed galaxies), the predictor (the ``e1``,
``e2`` columns of models without an ellipticity factor) and the metrics: the flux-weighted
unweighted second moments ``Q`` of the profile before the PSF, each component contributing
``flux * <r^2> * R diag(1/q, q) R^T / 2``, and ``e = (Q11 - Q22, 2 Q12) / (Q11 + Q22 +
2 sqrt(det Q))`` in the ``(col, row)`` basis: the ellipticity of the same kind as the reduced
shear, so a round galaxy sheared by ``g`` has ``e = g``. Spin 2.
"""

import numpy as np
from scipy.special import gammaincinv, gammaln

__all__ = [
    "galaxy_ellipticity",
    "galaxy_second_moments",
    "moments_ellipticity",
    "sersic_second_moment",
]


def sersic_second_moment(sersic_n: float | np.ndarray) -> float | np.ndarray:
    """``<r^2> / hlr^2`` of a round Sersic profile: ``Gamma(4n) / (b^(2n) Gamma(2n))``.

    Elementwise for an array of indices.
    """
    n = np.asarray(sersic_n, dtype=np.float64)
    b = gammaincinv(2 * n, 0.5)
    value = np.exp(gammaln(4 * n) - gammaln(2 * n) - 2 * n * np.log(b))
    return float(value) if value.ndim == 0 else value


def galaxy_second_moments(
    params: np.ndarray, bulge_sersic_n: float | np.ndarray = 4.0
) -> np.ndarray:
    """Flux-weighted second moments ``Q`` (arcsec^2, per unit flux) before the PSF.

    Args:
        params: :data:`~bliss.catalog.GALAXY_KEYS` of each galaxy. Shape ``n 6``.
        bulge_sersic_n: the bulge's Sersic index, one for all or one per galaxy (``n``)
            [default: 4].

    Returns:
        Shape ``n 2 2``, in the ``(col, row)`` basis.
    """
    disk_frac, beta, disk_q, disk_hlr, bulge_q, bulge_hlr = np.asarray(params, np.float64).T
    cos, sin = np.cos(beta), np.sin(beta)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)

    def moments(
        q: np.ndarray, hlr: np.ndarray, weight: np.ndarray, n: float | np.ndarray
    ) -> np.ndarray:
        axes = np.zeros((len(q), 2, 2))
        axes[:, 0, 0], axes[:, 1, 1] = 1 / q, q
        size = weight * sersic_second_moment(n) * hlr**2 / 2
        return size[:, None, None] * (rotation @ axes @ np.swapaxes(rotation, -1, -2))

    total = moments(disk_q, disk_hlr, disk_frac, 1.0)
    return total + moments(bulge_q, bulge_hlr, 1 - disk_frac, bulge_sersic_n)


def moments_ellipticity(moments: np.ndarray) -> np.ndarray:
    """``(e1, e2)`` of second moments ``Q`` (``n 2 2``), reduced-shear kind. Shape ``n 2``."""
    q11, q22, q12 = moments[:, 0, 0], moments[:, 1, 1], moments[:, 0, 1]
    denominator = q11 + q22 + 2 * np.sqrt(np.clip(q11 * q22 - q12**2, 0, None))
    return np.stack([q11 - q22, 2 * q12], -1) / denominator[:, None]


def galaxy_ellipticity(params: np.ndarray, bulge_sersic_n: float | np.ndarray = 4.0) -> np.ndarray:
    """``(e1, e2)`` of bulge + disk galaxies before the PSF (``params``: ``n 6``). Shape ``n 2``.

    Example:
        >>> import math
        >>> e = galaxy_ellipticity([[1.0, 0.0, 0.5, 1.0, 1.0, 1.0]])  # a q = 0.5 disk along x
        >>> [round(float(v), 4) for v in e[0]]  # (1 - q) / (1 + q)
        [0.3333, 0.0]
    """
    return moments_ellipticity(galaxy_second_moments(params, bulge_sersic_n))
