"""Noise-free rendering of stars and bulge + disk galaxies; the only module that calls GalSim.

Profiles are GalSim's: a star is the band's PSF, a galaxy is a ``galsim.DeVaucouleurs`` bulge
(or a ``galsim.Sersic`` bulge of another index, for test sets off the training profile family)
plus a ``galsim.Exponential`` disk (see :func:`galaxy_profile`), convolved with the PSF and
integrated over square pixels. For speed, :class:`GalsimRenderer` does the convolution itself in
Fourier space: GalSim supplies the Fourier transforms (the PSF's once per PSF object and stamp
size, the bulge's once per process and Sersic index as a radial table; the exponential's is
analytic), and numpy multiplies them, applies the sub-pixel shift as a phase and transforms a whole
batch of stamps back at once. Frequencies above the pixel Nyquist limit are ignored, so pixels agree
with ``drawImage(method="auto")`` to ~2e-4 of a source's peak for a PSF FWHM of 3.3 px, 4e-3 at
2.5 px and 1e-2 at 2 px; a ``BlissWarning`` flags PSFs narrower than ~2.2 px.

Coordinates follow :mod:`bliss.catalog`: ``(row, col)`` pixels, pixel ``(i, j)`` covers
``[i, i+1) x [j, j+1)``. GalSim's ``x`` is our ``col`` and its ``y`` is our ``row``.
"""

__all__ = [
    "DEVAUCOULEURS_N",
    "GalsimRenderer",
    "check_sersic_n",
    "galaxy_profile",
    "image_psf",
    "moffat_psf",
]

import math
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import galsim
import numpy as np

from bliss.catalog.shapes import check_shape
from bliss.errors import BlissValueError, BlissWarning
from bliss.simulator._stamps import (
    checked_inputs,
    draw_stamps,
    frequencies,
    galaxy_radius,
    paste_stamps,
    pixel_response,
    stamp_size,
    stamp_sizes,
)
from bliss.simulator.lensing import check_lensing, lensing_matrix, stretch

#: ratio of half-light radius to scale radius of an exponential profile (as in GalSim)
_EXP_HLR_PER_SCALE_RADIUS = 1.6783469900166605
#: Sersic index of the de Vaucouleurs bulge that models are trained on
DEVAUCOULEURS_N = 4.0
#: Sersic indices GalSim draws
_SERSIC_N_RANGE = (0.3, 6.2)
#: per-galaxy Sersic indices are rounded to this step (one Fourier table per index)
_SERSIC_N_STEP = 0.05
#: bulge Fourier table: ``log1p(k * hlr)`` grid up to this ``k * hlr`` (value ~5e-7)
_DEV_TABLE_MAX_K = 1e4
_DEV_TABLE_SIZE = 4096
#: largest pixel-convolved PSF Fourier amplitude at the Nyquist frequency accepted silently
_MAX_NYQUIST_POWER = 1e-2
#: PSF objects whose Fourier images are kept between calls (cleared when full)
_PSF_CACHE_SIZE = 256


def moffat_psf(fwhm_arcsec: float, beta: float = 3.5) -> galsim.GSObject:
    """A circular Moffat PSF of unit flux.

    Args:
        fwhm_arcsec: full width at half maximum, arcsec.
        beta: Moffat index (larger is closer to a Gaussian) [default: 3.5].

    Returns:
        ``galsim.Moffat`` with flux 1, centred on the origin.

    Raises:
        BlissValueError: ``fwhm_arcsec`` is not positive or ``beta`` is not above 1.1.
    """
    if not fwhm_arcsec > 0:
        raise BlissValueError(f"fwhm_arcsec={fwhm_arcsec}; expected a positive width in arcsec.")
    if not beta > 1.1:
        raise BlissValueError(f"beta={beta}; GalSim needs beta > 1.1 (typical values are 2.5-4.5).")
    return galsim.Moffat(beta=beta, fwhm=fwhm_arcsec, flux=1.0)


def image_psf(
    image: np.ndarray, pixel_scale_arcsec: float, *, pixel_convolved: bool = True
) -> galsim.GSObject:
    """A PSF profile interpolated from an image, normalised to unit flux.

    Args:
        image: the PSF sampled at pixel centres, centred on the image's true centre (the centre
            pixel for odd sizes). Shape: ``h w``.
        pixel_scale_arcsec: pixel size of ``image``, arcsec.
        pixel_convolved: whether ``image`` already includes the pixel response, as survey PSF
            models (SDSS psField, PSFEx) and ``drawImage(method="auto")`` outputs do. If so the
            pixel is divided out, so that rendering, which always integrates over pixels, does
            not apply it twice [default: True].

    Returns:
        A ``galsim.InterpolatedImage`` of flux 1 (wrapped in a pixel deconvolution when
        ``pixel_convolved``).

    Raises:
        BlissShapeError: ``image`` is not 2-D.
        BlissValueError: ``image`` holds non-finite values or sums to <= 0, or the scale is not
            positive.
    """
    array = np.asarray(image, dtype=np.float64)
    check_shape("image", array, "h w")
    if not np.all(np.isfinite(array)):
        raise BlissValueError("PSF image has non-finite pixels; replace NaN/inf (e.g. with 0).")
    total = float(array.sum())
    if not total > 0:
        raise BlissValueError(f"PSF image sums to {total}; expected a positive total flux.")
    if not pixel_scale_arcsec > 0:
        raise BlissValueError(f"pixel_scale_arcsec={pixel_scale_arcsec}; expected > 0.")
    profile = galsim.InterpolatedImage(galsim.Image(array / total, scale=pixel_scale_arcsec))
    if pixel_convolved:
        profile = galsim.Convolve(profile, galsim.Deconvolve(galsim.Pixel(pixel_scale_arcsec)))
    return profile


def galaxy_profile(
    params: Sequence[float],
    flux: float = 1.0,
    gsparams: galsim.GSParams | None = None,
    bulge_sersic_n: float = DEVAUCOULEURS_N,
) -> galsim.GSObject:
    """The GalSim bulge + disk profile of one galaxy, before the PSF.

    Each component is a circular profile of the given half-light radius, then sheared with
    GalSim's area-preserving ``shear(q=..., beta=...)``: the half-light radius is that of the
    circular profile, i.e. the geometric mean of the semi-axes (the major semi-axis of the
    half-light ellipse is ``hlr / sqrt(q)``).

    Args:
        params: the six values of :data:`bliss.catalog.tile.GALAXY_KEYS`, in that order:
            ``disk_frac`` (disk share of the flux, in [0, 1]), ``beta_rad`` (position angle of the
            major axes, counter-clockwise from +col towards +row), ``disk_q``, ``disk_hlr_arcsec``,
            ``bulge_q``, ``bulge_hlr_arcsec`` (axis ratios in (0, 1], radii in arcsec).
        flux: total flux, any unit [default: 1].
        gsparams: GalSim accuracy parameters [default: GalSim's].
        bulge_sersic_n: Sersic index of the bulge [default: 4, de Vaucouleurs].

    Returns:
        ``galsim.DeVaucouleurs`` (or ``galsim.Sersic``) bulge plus ``galsim.Exponential`` disk,
        centred on the origin.
    """
    disk_frac, beta_rad, disk_q, disk_hlr, bulge_q, bulge_hlr = (float(v) for v in params)
    beta = beta_rad * galsim.radians
    components = []
    if disk_frac > 0:
        disk = galsim.Exponential(disk_hlr, flux=flux * disk_frac, gsparams=gsparams)
        components.append(disk.shear(q=disk_q, beta=beta))
    if disk_frac < 1:
        bulge = _bulge(bulge_sersic_n, bulge_hlr, flux * (1 - disk_frac), gsparams)
        components.append(bulge.shear(q=bulge_q, beta=beta))
    return galsim.Add(components)


def _bulge(
    sersic_n: float, hlr: float, flux: float = 1.0, gsparams: galsim.GSParams | None = None
) -> galsim.GSObject:
    """A round Sersic bulge; GalSim's own de Vaucouleurs class for ``n = 4``."""
    if sersic_n == DEVAUCOULEURS_N:
        return galsim.DeVaucouleurs(hlr, flux=flux, gsparams=gsparams)
    return galsim.Sersic(sersic_n, half_light_radius=hlr, flux=flux, gsparams=gsparams)


def check_sersic_n(sersic_n: float) -> float:
    """``sersic_n`` as a float, if GalSim can draw a Sersic profile of that index.

    Raises:
        BlissValueError: it is outside GalSim's range [0.3, 6.2].
    """
    if not _SERSIC_N_RANGE[0] <= sersic_n <= _SERSIC_N_RANGE[1]:
        raise BlissValueError(
            f"bulge_sersic_n={sersic_n}; expected a Sersic index in [{_SERSIC_N_RANGE[0]}, "
            f"{_SERSIC_N_RANGE[1]}] (GalSim's range; 4 is de Vaucouleurs, 1 exponential)."
        )
    return float(sersic_n)


@cache
def _bulge_ft_table(sersic_n: float) -> tuple[float, np.ndarray]:
    """Fourier transform of a unit-flux, unit-hlr Sersic bulge on a ``log1p(k)`` grid.

    Returns:
        The grid step and the (real) values at ``k = expm1(step * i)``, ``k`` in 1 / hlr.
    """
    profile = _bulge(sersic_n, 1.0)
    step = math.log1p(_DEV_TABLE_MAX_K) / (_DEV_TABLE_SIZE - 1)
    k_values = np.expm1(step * np.arange(_DEV_TABLE_SIZE))
    table = np.array([profile.kValue(float(k), 0.0).real for k in k_values])
    return step, table


class GalsimRenderer:
    """Render noise-free multi-band images of stars and galaxies with GalSim profiles.

    Each source is drawn on an odd square stamp large enough to hold all but about
    ``folding_threshold`` of its light (from GalSim's ``stepk``), capped at ``max_stamp_px``.
    Light beyond a capped stamp folds back into it, as in any FFT drawing, so a stamp always
    holds the source's full flux; the part of a stamp outside the image is dropped.

    Args:
        max_stamp_px: largest stamp side in pixels (rounded down to odd) [default: 64].
        min_stamp_px: smallest stamp side in pixels (rounded up to odd) [default: 15].
        folding_threshold: GalSim's ``folding_threshold``, the fraction of light allowed outside
            a stamp [default: 5e-3].
        maxk_threshold: GalSim's ``maxk_threshold`` [default: 1e-3].
        bulge_sersic_n: Sersic index of every bulge [default: 4, de Vaucouleurs, as in
            training]; another index renders a test set off the training profile family.

    PSF-dependent work is cached per PSF profile: GalSim profiles compare and hash by value, so
    equal PSFs built anew for every image (e.g. ``moffat_psf(1.3)``) share the work.

    Raises:
        BlissValueError: ``min_stamp_px`` is below 3, there is no odd size between the two stamp
            sizes, or a threshold is outside (0, 1).

    Example:
        >>> import numpy as np
        >>> renderer = GalsimRenderer()
        >>> image = renderer.render(
        ...     plocs=np.array([[16.0, 16.0]]), flux_electrons=np.array([[1000.0]]),
        ...     is_galaxy=np.array([False]), galaxy_params=np.zeros((1, 6)),
        ...     psfs=[moffat_psf(1.3)], image_shape=(32, 32), pixel_scale_arcsec=0.396)
        >>> image.shape, round(float(image.sum()))
        ((1, 32, 32), 1000)
    """

    def __init__(
        self,
        max_stamp_px: int = 64,
        min_stamp_px: int = 15,
        folding_threshold: float = 5e-3,
        maxk_threshold: float = 1e-3,
        bulge_sersic_n: float = DEVAUCOULEURS_N,
    ) -> None:
        if min_stamp_px < 3:
            raise BlissValueError(f"min_stamp_px={min_stamp_px}; expected at least 3 pixels.")
        if (max_stamp_px - 1) // 2 < min_stamp_px // 2:  # no odd size in [min, max]
            raise BlissValueError(
                f"max_stamp_px={max_stamp_px}, min_stamp_px={min_stamp_px}; expected an odd size "
                "between them: raise max_stamp_px."
            )
        for name, value in (
            ("folding_threshold", folding_threshold),
            ("maxk_threshold", maxk_threshold),
        ):
            if not 0 < value < 1:
                raise BlissValueError(f"{name}={value}; expected a fraction in (0, 1), e.g. 5e-3.")
        self.max_stamp_px = max_stamp_px
        self.min_stamp_px = min_stamp_px
        self.gsparams = galsim.GSParams(
            folding_threshold=folding_threshold, maxk_threshold=maxk_threshold
        )
        self._sizes = stamp_sizes(min_stamp_px, max_stamp_px)
        # light radius (arcsec) of unit-hlr components, holding 1 - folding_threshold of the flux
        self._disk_radius = math.pi / galsim.Exponential(1.0, gsparams=self.gsparams).stepk
        self.bulge_sersic_n = check_sersic_n(bulge_sersic_n)
        self._bulge_radii: dict[float, float] = {}
        # per PSF profile (by value; by identity for an unhashable one): radius, Fourier images
        self._psf_cache: dict[tuple, tuple[galsim.GSObject, Any]] = {}

    def render(
        self,
        plocs: np.ndarray,
        flux_electrons: np.ndarray,
        is_galaxy: np.ndarray,
        galaxy_params: np.ndarray,
        psfs: Sequence[galsim.GSObject],
        image_shape: tuple[int, int],
        pixel_scale_arcsec: float,
        band_offsets_px: np.ndarray | None = None,
        lensing: np.ndarray | None = None,
        bulge_sersic_n: np.ndarray | None = None,
    ) -> np.ndarray:
        """Draw all sources of one image in every band.

        Args:
            plocs: source positions, ``(row, col)`` pixels. Shape: ``n 2``.
            flux_electrons: total flux of each source in each band. Shape: ``n c``.
            is_galaxy: which sources are galaxies (the others are stars). Shape: ``n``.
            galaxy_params: galaxy shapes, columns in the order of
                :data:`bliss.catalog.tile.GALAXY_KEYS` (see :func:`galaxy_profile`); rows of stars
                are ignored. Shape: ``n 6``.
            psfs: one unit-flux PSF profile per band, e.g. from :func:`moffat_psf`.
            image_shape: ``(h, w)`` in pixels.
            pixel_scale_arcsec: pixel size, arcsec.
            band_offsets_px: a ``(row, col)`` shift added to every position in each band, e.g. a
                sub-pixel dither [default: none]. Shape: ``c 2``.
            lensing: reduced shear and magnification ``(g1, g2, mu)`` of each source, applied to
                galaxies as GalSim's ``lens(g1, g2, mu)`` does, flux included (see
                :mod:`bliss.simulator.lensing`); rows of stars are ignored [default: none].
                Shape: ``n 3``.
            bulge_sersic_n: each galaxy's bulge Sersic index, rounded to 0.05 [default: the
                renderer's ``bulge_sersic_n`` for all]; with ``disk_frac = 0`` a galaxy is a
                single Sersic profile. Rows of stars are ignored. Shape: ``n``.

        Returns:
            The noise-free, sky-free image. Shape: ``c h w`` (float32).

        Units:
            Fluxes and output pixels in electrons.

        Raises:
            BlissShapeError: an array does not have the shape above.
            BlissValueError: the number of PSFs is not ``c``, a value is non-finite, or a galaxy
                parameter is out of range.
        """
        plocs, flux, is_galaxy, params, offsets = checked_inputs(
            plocs, flux_electrons, is_galaxy, galaxy_params, band_offsets_px, len(psfs)
        )
        if lensing is not None:
            lensing = check_lensing(lensing)
            if len(lensing) != len(plocs):
                raise BlissValueError(
                    f"lensing has {len(lensing)} rows for {len(plocs)} sources; expected one "
                    "(g1, g2, mu) row per source."
                )
        sersic_n = self._sersic_indices(bulge_sersic_n, is_galaxy)
        scale = pixel_scale_arcsec
        if len(image_shape) != 2 or min(image_shape) < 1 or not scale > 0:
            raise BlissValueError(
                f"image_shape={image_shape}, pixel_scale_arcsec={scale}; expected two positive "
                "integers (h, w) and a positive pixel size in arcsec."
            )
        image = np.zeros((len(psfs), *image_shape), dtype=np.float32)
        psf_radius = max((self._psf_radius(psf) for psf in psfs), default=0.0)
        size_px = np.full(len(plocs), self._stamp_size(psf_radius, scale))
        galaxy_radii = self._galaxy_radius(params[is_galaxy], sersic_n[is_galaxy])
        if lensing is not None:
            galaxy_radii = galaxy_radii * stretch(lensing[is_galaxy])
        size_px[is_galaxy] = self._stamp_size(np.hypot(galaxy_radii, psf_radius), scale)
        # whole-pixel band offsets move stamps; only the fractional part goes into the phase
        offsets_int = np.round(offsets)
        corner = np.floor(plocs).astype(np.int64) - (size_px // 2)[:, None]
        low = corner + offsets_int.min(0)
        high = corner + offsets_int.max(0) + size_px[:, None]
        visible = np.all((high > 0) & (low < np.array(image_shape)), axis=1)
        for size in np.unique(size_px[visible]):
            chosen = np.flatnonzero(visible & (size_px == size))
            # position of each source in stamp pixel units (centre of stamp pixel 0 is 0)
            shift = (plocs[chosen] - corner[chosen] - 0.5)[:, None, :] + offsets - offsets_int
            profile = np.ones((len(chosen), size, size // 2 + 1), dtype=np.float32)
            galaxies = is_galaxy[chosen]
            if galaxies.any():
                lensed = None if lensing is None else lensing[chosen[galaxies]]
                profile[galaxies] = self._galaxy_fourier(
                    params[chosen[galaxies]], size, scale, lensed, sersic_n[chosen[galaxies]]
                )
            psf_fourier = np.stack([self._psf_fourier(psf, size, scale) for psf in psfs])
            stamps = draw_stamps(profile, flux[chosen], shift, psf_fourier)
            top_left = corner[chosen, None] + offsets_int.astype(np.int64)
            paste_stamps(image[None], stamps, np.zeros(len(chosen), np.int64), top_left)
        return image

    def _psf_cached(self, psf: galsim.GSObject, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` for this PSF profile and ``key``, remembered between calls."""
        cache_key = (psf, *key)
        try:
            cached = self._psf_cache.get(cache_key)
        except TypeError:  # unhashable: by identity (the entry keeps the object, and its id, alive)
            cache_key = (id(psf), *key)
            cached = self._psf_cache.get(cache_key)
        if cached is None:
            if len(self._psf_cache) >= _PSF_CACHE_SIZE:
                self._psf_cache.clear()
            cached = self._psf_cache[cache_key] = (psf, compute())
        return cached[1]

    def _psf_radius(self, psf: galsim.GSObject) -> float:
        """Radius (arcsec) holding all but ``folding_threshold`` of the PSF's light."""
        return self._psf_cached(
            psf, ("radius",), lambda: math.pi / psf.withGSParams(self.gsparams).stepk
        )

    def _sersic_indices(
        self, bulge_sersic_n: np.ndarray | None, is_galaxy: np.ndarray
    ) -> np.ndarray:
        """Each source's bulge Sersic index (``n``), on the 0.05 grid the Fourier tables use."""
        if bulge_sersic_n is None:
            return np.full(len(is_galaxy), self.bulge_sersic_n)
        values = np.asarray(bulge_sersic_n, dtype=np.float64).reshape(-1)
        if len(values) != len(is_galaxy):
            raise BlissValueError(
                f"bulge_sersic_n has {len(values)} values for {len(is_galaxy)} sources; expected "
                "one Sersic index per source (rows of stars are ignored)."
            )
        values = np.where(is_galaxy, values, self.bulge_sersic_n)
        for n in np.unique(values):
            check_sersic_n(n)
        return np.round(values / _SERSIC_N_STEP) * _SERSIC_N_STEP

    def _galaxy_radius(self, params: np.ndarray, sersic_n: np.ndarray) -> np.ndarray:
        """Radius (arcsec) holding all but about ``folding_threshold`` of each galaxy's light."""
        indices, which = np.unique(sersic_n, return_inverse=True)
        bulge_radius = np.array([self._bulge_unit_radius(float(n)) for n in indices])[which]
        return galaxy_radius(params, self._disk_radius, bulge_radius)

    def _bulge_unit_radius(self, sersic_n: float) -> float:
        """Radius, in half-light radii, holding all but ``folding_threshold`` of a Sersic bulge."""
        if sersic_n not in self._bulge_radii:
            bulge = _bulge(sersic_n, 1.0, gsparams=self.gsparams)
            self._bulge_radii[sersic_n] = math.pi / bulge.stepk
        return self._bulge_radii[sersic_n]

    def _stamp_size(self, radius_arcsec: float | np.ndarray, scale: float) -> np.ndarray:
        """Smallest allowed stamp side (odd, px) holding a disk of ``radius_arcsec`` plus margin."""
        return stamp_size(self._sizes, np.asarray(radius_arcsec) / scale)

    def _psf_fourier(self, psf: galsim.GSObject, size: int, scale: float) -> np.ndarray:
        """Fourier transform of the pixel-convolved PSF on a real-FFT grid. Shape: ``size m``."""

        def compute() -> np.ndarray:
            # the half plane k_col >= 0 that a real FFT uses, rows in numpy's FFT order
            half = galsim.BoundsI(0, size // 2, -(size // 2), size // 2)
            dk = 2 * math.pi / (size * scale)
            kimage = psf.drawKImage(bounds=half, scale=dk, recenter=False)
            values = np.fft.ifftshift(kimage.array, axes=0) * pixel_response(size)
            aliased = max(abs(values[size // 2]).max(), abs(values[:, -1]).max())
            if aliased > _MAX_NYQUIST_POWER:
                warnings.warn(
                    f"PSF {repr(psf)[:50]}... keeps {aliased:.1e} of its power at the Nyquist "
                    f"frequency of {scale} arcsec pixels (FWHM below ~2.2 px), which rendering "
                    f"ignores: pixels will be off by ~{aliased / 2:.0e} of a source's peak. Use a "
                    "finer pixel scale or a wider PSF for accurate images.",
                    BlissWarning,
                    stacklevel=4,
                )
            return values.astype(np.complex64)

        return self._psf_cached(psf, ("fourier", int(size), float(scale)), compute)

    def _galaxy_fourier(
        self,
        params: np.ndarray,
        size: int,
        scale: float,
        lensing: np.ndarray | None,
        sersic_n: np.ndarray,
    ) -> np.ndarray:
        """Fourier transform of galaxies before the PSF (unit flux unless lensed). Shape: ``g size m``."""
        freq_row, freq_col = frequencies(size)
        k_row = (2 * np.pi / scale) * freq_row[None, :, None]
        k_col = (2 * np.pi / scale) * freq_col[None, None, :]
        amplitude = 1.0
        if lensing is not None:  # the lensed transform is mu * F(M k)
            matrix = lensing_matrix(lensing)[:, :, :, None, None]
            k_col, k_row = (
                matrix[:, 0, 0] * k_col + matrix[:, 0, 1] * k_row,
                matrix[:, 1, 0] * k_col + matrix[:, 1, 1] * k_row,
            )
            amplitude = lensing[:, 2, None, None]
        disk_frac, beta, disk_q, disk_hlr, bulge_q, bulge_hlr = (
            column[:, None, None] for column in params.T
        )
        # wave vector along (major) and across (minor) the galaxy's axes
        k_major = k_col * np.cos(beta) + k_row * np.sin(beta)
        k_minor = k_row * np.cos(beta) - k_col * np.sin(beta)
        k_major2, k_minor2 = k_major**2, k_minor**2
        disk_k2 = (k_major2 / disk_q + k_minor2 * disk_q) * disk_hlr**2
        disk = (1 + disk_k2 / _EXP_HLR_PER_SCALE_RADIUS**2) ** -1.5
        bulge_k = np.sqrt((k_major2 / bulge_q + k_minor2 * bulge_q) * bulge_hlr**2)
        bulge = np.empty_like(bulge_k)
        for n in np.unique(sersic_n):
            step, table = _bulge_ft_table(float(n))
            rows = sersic_n == n
            bulge[rows] = np.interp(
                np.log1p(bulge_k[rows]) / step, np.arange(len(table)), table, right=0.0
            )
        return amplitude * (disk_frac * disk + (1 - disk_frac) * bulge)
