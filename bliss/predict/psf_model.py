"""The PSF models of star photometry: stamps of a star at any sub-pixel position.

Two kinds, with one method, ``stamp(row, col, offset_row, offset_col, half)``:

- :class:`MoffatShape`: a pixel-integrated Moffat whose shape (FWHM and beta) is fitted to the
  image's bright isolated stars, as DAOPHOT builds its PSF from the frame, and replaces the
  nominal one (the header's FWHM, the survey's beta) only when the stars reject the nominal one
  (:func:`fit_moffat_shape`);
- :class:`ImagePsf`: the image's own PSF model (``SurveyImage.psf``, e.g. an SDSS psField PSF
  with the model's halo), evaluated where the star is and resampled to its sub-pixel position.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize

from bliss.errors import BlissValueError

__all__ = [
    "MAX_BETA",
    "MIN_SHAPE_STARS",
    "STAMP_HALF_PX",
    "ImagePsf",
    "MoffatShape",
    "fit_moffat_shape",
    "moffat_stamp",
    "stamp_slices",
]

#: stamp half-width, pixels: the fit uses pixels within this of a star
STAMP_HALF_PX = 7
#: largest Moffat beta fitted: the profile is then within 1 % of a Gaussian of the same FWHM
MAX_BETA = 30.0
#: log(beta - 1) at which the shape search stops growing beta ...
_LOG_BETA_CAP = math.log(1e4)
#: ... and stops shrinking it: below 1.2 the fit is rejected anyway, and 1 + exp(x) rounds to
#: exactly 1 (no Moffat) for x < -37, where a Nelder-Mead search on a flat chi-square can wander
_LOG_BETA_FLOOR = math.log(0.05)
#: the search's FWHM stays within this factor of the guess (a fit beyond 3x is rejected)
_FWHM_REACH = 10.0
#: stars needed to fit the PSF shape of a band; fewer: the header FWHM and the default beta
MIN_SHAPE_STARS = 5
#: the brightest isolated stars used for the shape (more only cost time)
MAX_SHAPE_STARS = 40
#: chi-square improvement (2 parameters) needed to prefer a fitted PSF shape over the nominal
#: one: p = 0.001, so a correct nominal PSF is replaced in 1 band of 1000
SHAPE_CHI2_GAIN = 13.8
#: ... and by this fraction of the nominal chi-square: bright stars have so many counts that a
#: renderer's 1e-3 profile errors alone pass the test above; a wrong PSF family fails both
SHAPE_CHI2_FRACTION = 0.02
#: Gauss-Legendre nodes per pixel side: 3 x 3 integrate the profile over a pixel ten times more
#: accurately than a 5 x 5 grid of sub-pixel midpoints (peak-relative error ~3e-4 against
#: GalSim's exact pixel integration, against ~4e-3) with 2.8x fewer evaluations
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(3)


@dataclass(frozen=True)
class MoffatShape:
    """A Moffat PSF: FWHM in pixels and beta; ``fitted`` says whether it came from the image."""

    fwhm_px: float
    beta: float
    fitted: bool

    def stamp(
        self, row: float, col: float, offset_row: float, offset_col: float, half: int
    ) -> np.ndarray:
        """:func:`moffat_stamp` of this shape (the same everywhere: ``row``, ``col`` unused)."""
        return moffat_stamp(self.fwhm_px, self.beta, offset_row, offset_col, half)


@dataclass
class ImagePsf:
    """A PSF model given as images: stamps of it at any position and sub-pixel offset.

    A star's position is its light's centroid (adaptive moments, as survey catalogs measure
    it), not the model image's middle pixel: SDSS psField reconstructions sit up to 0.07 px off
    theirs (i and z), which a fitted position would otherwise carry.

    Args:
        psf_at: ``(row, col) ->`` the pixel-integrated PSF at that 0-indexed pixel, sum 1,
            centred near its middle pixel (odd side), e.g. one band of ``SurveyImage.psf``.
        cell_px: the PSF is evaluated once per cell of this side (survey PSF models vary over
            hundreds of pixels) and resampled with a cubic spline.
        centroid_cell_px: its centroid once per cell of this side (it varies more slowly).
    """

    psf_at: Callable[[float, float], np.ndarray]
    cell_px: float = 4.0
    centroid_cell_px: float = 128.0
    _splines: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _centroids: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict, repr=False)

    def clear_cache(self) -> None:
        """Drop the evaluated PSFs (about 20 kB per star): the next stamps evaluate them again."""
        self._splines.clear()
        self._centroids.clear()

    def _centroid(self, row: float, col: float, image: np.ndarray | None) -> tuple[float, float]:
        """Offset of the PSF's centroid from its image's middle pixel (row, col), pixels.

        ``image``: the PSF there if already evaluated.
        """
        key = (int(row // self.centroid_cell_px), int(col // self.centroid_cell_px))
        if key not in self._centroids:
            import galsim  # only images with their own PSF model need it: start-up stays fast

            if image is None:
                image = np.asarray(self.psf_at(row - 0.5, col - 0.5), dtype=np.float64)
            middle = image.shape[0] // 2 + 1  # GalSim's pixel indices start at 1
            try:
                centre = galsim.hsm.FindAdaptiveMom(galsim.Image(image)).moments_centroid
                self._centroids[key] = (centre.y - middle, centre.x - middle)
            except galsim.GalSimHSMError as err:
                raise BlissValueError(
                    f"the image's PSF model at row {row:.0f}, col {col:.0f} has no measurable "
                    f"centroid ({err}); expected a PSF image with one peak."
                ) from err
        return self._centroids[key]

    def stamp(
        self, row: float, col: float, offset_row: float, offset_col: float, half: int
    ) -> np.ndarray:
        """The PSF of a star on a stamp of side ``2 half + 1``. Shape ``h w``.

        The star is at internal position ``(row, col)`` (pixel centres at +0.5), ``offset``
        away from the stamp's central pixel centre. Pixels beyond the model's own stamp are 0.
        """
        key = (int(row // self.cell_px), int(col // self.cell_px))
        spline, image = self._splines.get(key), None
        if spline is None:
            image = np.asarray(self.psf_at(row - 0.5, col - 0.5), dtype=np.float64)
            spline = self._splines[key] = ndimage.spline_filter(image, order=3)
        centroid = self._centroid(row, col, image)
        offset_row, offset_col = offset_row - centroid[0], offset_col - centroid[1]
        first = spline.shape[0] // 2 - half
        size = 2 * half + 1
        row_base, col_base = math.floor(first - offset_row), math.floor(first - offset_col)
        inside = min(row_base, col_base) >= 1 and max(row_base, col_base) + size + 2 <= min(
            spline.shape
        )
        if inside:  # the common case, a stamp within the model: four shifted slices per axis
            row_taps = _cubic_bspline_taps(first - offset_row - row_base)
            col_taps = _cubic_bspline_taps(first - offset_col - col_base)
            rows = sum(
                tap * spline[row_base - 1 + s : row_base - 1 + s + size]
                for s, tap in enumerate(row_taps)
            )
            return sum(
                tap * rows[:, col_base - 1 + s : col_base - 1 + s + size]
                for s, tap in enumerate(col_taps)
            )
        # a cubic B-spline on a shifted regular grid is separable: (n x m) @ (m x m) @ (m x n)
        rows = _cubic_bspline_weights(first - offset_row, size, spline.shape[0])
        cols = _cubic_bspline_weights(first - offset_col, size, spline.shape[1])
        return rows @ spline @ cols.T


def _cubic_bspline_weights(first: float, k: int, n: int) -> np.ndarray:
    """Weights of cubic B-spline coefficients ``0..n-1`` at ``k`` points. Shape ``k n``.

    The points are ``first, first + 1, ...``, all with the same fractional part; coefficients
    beyond ``0..n-1`` count 0. What ``ndimage.map_coordinates(order=3, prefilter=False,
    mode="constant")`` sums: a band of four diagonals.
    """
    base = math.floor(first)
    weights = np.zeros((k, n))
    for shift, tap in enumerate(_cubic_bspline_taps(first - base)):
        weights += tap * np.eye(k, n, base - 1 + shift)
    return weights


def _cubic_bspline_taps(t: float) -> tuple[float, float, float, float]:
    """The four cubic B-spline weights at fraction ``t`` past a knot (coefficients -1..2)."""
    return (
        (1 - t) ** 3 / 6,
        (3 * t**3 - 6 * t**2 + 4) / 6,
        (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
        t**3 / 6,
    )


def moffat_stamp(
    fwhm_px: float, beta: float, offset_row: float, offset_col: float, half: int = STAMP_HALF_PX
) -> np.ndarray:
    """A pixel-integrated Moffat profile of total flux 1 (over the whole plane) on a stamp.

    Args:
        fwhm_px: full width at half maximum, pixels.
        beta: Moffat beta (> 1).
        offset_row: position of the centre relative to the stamp's central pixel centre.
        offset_col: the same for columns.
        half: stamp half-width; the stamp is ``2 * half + 1`` pixels square.

    Returns:
        The stamp. Shape ``h w``; it sums to slightly less than 1 (the wings outside).

    Example:
        >>> stamp = moffat_stamp(3.0, 3.5, 0.0, 0.0, half=10)
        >>> bool(0.98 < stamp.sum() < 1.0)
        True
    """
    if not (fwhm_px > 0 and beta > 1):
        raise BlissValueError(f"Moffat fwhm_px={fwhm_px}, beta={beta}; expected > 0 and > 1.")
    # expm1: 2**(1/beta) - 1 without cancellation, still > 0 for the huge beta of a Gaussian
    alpha = fwhm_px / (2 * math.sqrt(math.expm1(math.log(2) / beta)))
    nodes, weights = _pixel_quadrature(half)
    rows = (nodes - offset_row) / alpha
    cols = (nodes - offset_col) / alpha
    profile = np.power(1 + rows[:, None] ** 2 + cols[None, :] ** 2, -beta)
    # the pixel integrals are separable sums over the nodes: (n x k) @ (k x k) @ (k x n)
    return (weights.T @ profile @ weights) * (beta - 1) / (math.pi * alpha**2)


@functools.lru_cache(maxsize=8)
def _pixel_quadrature(half: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes of every pixel of a stamp, and the matrix summing them per pixel.

    Returns:
        The nodes' offsets from the stamp centre (shape ``k``, ``k = 3 (2 half + 1)``) and the
        weights (shape ``k n``, ``n = 2 half + 1``; column ``j`` holds pixel ``j``'s weights).
    """
    n = 2 * half + 1
    centres = np.arange(-half, half + 1, dtype=np.float64)
    nodes = (centres[:, None] + _GAUSS_NODES[None, :] / 2).reshape(-1)
    weights = np.kron(np.eye(n), (_GAUSS_WEIGHTS / 2)[:, None])
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def stamp_slices(
    row: float, col: float, shape: tuple[int, int], half: int
) -> tuple[slice, slice, slice, slice, float, float] | None:
    """Image and stamp slices of a stamp centred on the pixel holding ``(row, col)``."""
    centre_row, centre_col = int(math.floor(row)), int(math.floor(col))
    top, left = centre_row - half, centre_col - half
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + 2 * half + 1, shape[0]), min(left + 2 * half + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    # internal (row, col) has pixel centres at +0.5: the offset from the central pixel's centre
    offset_row, offset_col = row - (centre_row + 0.5), col - (centre_col + 0.5)
    return (
        slice(r0, r1),
        slice(c0, c1),
        slice(r0 - top, r1 - top),
        slice(c0 - left, c1 - left),
        offset_row,
        offset_col,
    )


def fit_moffat_shape(
    data: np.ndarray,
    variance: np.ndarray,
    positions: np.ndarray,
    fwhm_guess_px: float,
    default_beta: float,
    half: int = STAMP_HALF_PX,
) -> MoffatShape:
    """Fit one Moffat FWHM and beta to isolated stars of a band; each star's flux is free.

    Args:
        data: the sky-subtracted band, electrons (NaN: missing). Shape ``h w``.
        variance: per-pixel variance, electrons². Shape ``h w``.
        positions: ``(row, col)`` of bright isolated stars, brightest first. Shape ``n 2``.
        fwhm_guess_px: starting FWHM (the header's), pixels.
        default_beta: the beta used when there are too few stars.
        half: stamp half-width.

    Returns:
        The fitted shape, or the guess with ``fitted=False`` when fewer than
        :data:`MIN_SHAPE_STARS` stamps are complete or the fit fails.
    """
    stamps = []
    for row, col in positions[:MAX_SHAPE_STARS]:
        cut = stamp_slices(row, col, data.shape, half)
        if cut is None:
            continue
        rows, cols, s_rows, s_cols, offset_row, offset_col = cut
        pixels, var = data[rows, cols], variance[rows, cols]
        full = pixels.shape == (2 * half + 1, 2 * half + 1)
        if full and np.isfinite(pixels).all() and (var > 0).all():
            stamps.append((pixels.ravel(), 1 / var.ravel(), offset_row, offset_col))
    fallback = MoffatShape(fwhm_guess_px, default_beta, fitted=False)
    if len(stamps) < MIN_SHAPE_STARS:
        return fallback

    def star_chi2(stamp: tuple, fwhm: float, beta: float) -> float:
        """Chi-square of one star with its flux and a local sky level free (linear)."""
        pixels, weight, offset_row, offset_col = stamp
        model = moffat_stamp(fwhm, beta, offset_row, offset_col, half).ravel()
        design = np.stack([model, np.ones_like(model)], -1)
        normal = design.T @ (design * weight[:, None])
        amplitudes = np.linalg.solve(normal, design.T @ (pixels * weight))
        return float((weight * (pixels - design @ amplitudes) ** 2).sum())

    # stamps a neighbour or a galaxy's light spoils would pull the shape: drop the outliers
    # (relative to the other stars, since a wrong nominal PSF misfits every star alike)
    misfit = np.array([star_chi2(st, fwhm_guess_px, default_beta) for st in stamps])
    stamps = [st for st, chi in zip(stamps, misfit, strict=True) if chi < 3 * np.median(misfit)]
    if len(stamps) < MIN_SHAPE_STARS:
        return fallback

    def shape_of(params: np.ndarray) -> tuple[float, float]:
        """FWHM and beta of search coordinates ``(log fwhm, log(beta - 1))``, held in bounds.

        The search may run beta off to a Gaussian's infinity (held at 1e4, a Gaussian to 1e-4)
        or down to 1, and the width off to 0 or infinity, where no Moffat is drawn.
        """
        reach = math.log(_FWHM_REACH)
        log_fwhm = min(
            max(params[0], math.log(fwhm_guess_px) - reach), math.log(fwhm_guess_px) + reach
        )
        return math.exp(log_fwhm), 1 + math.exp(min(max(params[1], _LOG_BETA_FLOOR), _LOG_BETA_CAP))

    def chi2(params: np.ndarray) -> float:
        return sum(star_chi2(stamp, *shape_of(params)) for stamp in stamps)

    start = np.array([math.log(fwhm_guess_px), math.log(default_beta - 1)])
    result = optimize.minimize(chi2, start, method="Nelder-Mead", options={"xatol": 1e-3})
    fwhm, beta = shape_of(result.x)
    # beyond beta ~ 30 a Moffat is a Gaussian already (the fit drifts on): cap it there; a
    # beta this small or a width this far off is a plateau the data did not ask for
    beta = min(beta, MAX_BETA)
    if not (1.2 < beta) or not (0.3 < fwhm / fwhm_guess_px < 3):
        return fallback
    result.fun = chi2(np.array([math.log(fwhm), math.log(beta - 1)]))
    # keep the nominal PSF unless the stars reject it: a fitted shape carries its own noise
    nominal = chi2(start)
    if nominal - result.fun < max(SHAPE_CHI2_GAIN, SHAPE_CHI2_FRACTION * nominal):
        return fallback
    return MoffatShape(fwhm, beta, fitted=True)
