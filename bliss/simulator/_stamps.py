"""Numpy helpers of the renderer: stamp sizes, Fourier grids, drawing and pasting stamps."""

from functools import cache

import numpy as np
import scipy.fft

from bliss.catalog.shapes import check_shape
from bliss.catalog.tile import GALAXY_KEYS
from bliss.errors import BlissValueError

__all__ = [
    "checked_inputs",
    "draw_stamps",
    "frequencies",
    "galaxy_radius",
    "paste_stamps",
    "pixel_response",
    "stamp_size",
    "stamp_sizes",
]


def stamp_sizes(min_stamp_px: int, max_stamp_px: int) -> np.ndarray:
    """Odd stamp sizes in ``[min, max]`` that FFT fast (factors 3, 5, 7), plus both ends."""
    low = min_stamp_px | 1
    high = max_stamp_px if max_stamp_px % 2 else max_stamp_px - 1
    smooth = {3**i * 5**j * 7**k for i in range(8) for j in range(6) for k in range(5)}
    return np.array(sorted({low, high} | {size for size in smooth if low <= size <= high}))


def stamp_size(sizes: np.ndarray, radius_px: float | np.ndarray) -> np.ndarray:
    """The smallest of ``sizes`` holding a disk of ``radius_px`` plus a pixel margin (else the largest)."""
    index = np.searchsorted(sizes, 2 * np.asarray(radius_px) + 2)
    return sizes[np.minimum(index, len(sizes) - 1)]


def galaxy_radius(params: np.ndarray, disk_radius: float, bulge_radius: float) -> np.ndarray:
    """Radius (arcsec) holding all but a small fraction of each galaxy's light.

    ``params`` holds the :data:`~bliss.catalog.tile.GALAXY_KEYS` of each galaxy (``n 6``);
    ``disk_radius`` and ``bulge_radius`` are the radii, in half-light radii, of a round exponential
    and de Vaucouleurs profile holding all but that fraction. Returns shape ``n``.
    """
    disk_frac, _, disk_q, disk_hlr, bulge_q, bulge_hlr = params.T
    disk = np.where(disk_frac > 0, disk_radius * disk_hlr / np.sqrt(disk_q), 0.0)
    bulge = np.where(disk_frac < 1, bulge_radius * bulge_hlr / np.sqrt(bulge_q), 0.0)
    return np.maximum(disk, bulge)


@cache
def pixel_response(size: int) -> np.ndarray:
    """Fourier transform of a square pixel on a real-FFT grid. Shape: ``size m``."""
    return np.outer(*(np.sinc(freq) for freq in frequencies(size)))


def frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column frequencies (cycles per pixel) of a real FFT of a ``size`` square."""
    return np.fft.fftfreq(size), np.fft.rfftfreq(size)


def draw_stamps(
    profile: np.ndarray, flux: np.ndarray, shift: np.ndarray, psf: np.ndarray
) -> np.ndarray:
    """Stamps from Fourier profiles (``g s m``, 1 for point sources) and PSFs (``c s m``).

    ``flux`` (``g c``) scales each stamp and ``shift`` (``g c 2``) places each source, in stamp
    pixels from the centre of stamp pixel ``(0, 0)``. Returns stamps of shape ``g c s s``.
    """
    size = psf.shape[1]
    freq_row, freq_col = frequencies(size)
    # single precision halves the cost; the output is float32 anyway
    phase_row = np.exp(-2j * np.pi * shift[..., 0, None] * freq_row).astype(np.complex64)
    phase_col = flux[..., None] * np.exp(-2j * np.pi * shift[..., 1, None] * freq_col)
    fourier = phase_row[..., :, None] * phase_col.astype(np.complex64)[..., None, :]
    fourier *= psf
    fourier *= profile[:, None]
    return scipy.fft.irfft2(fourier, s=(size, size))  # ~1.5x numpy's on small batched stamps


def checked_inputs(
    plocs: np.ndarray,
    flux: np.ndarray,
    is_galaxy: np.ndarray,
    params: np.ndarray,
    offsets: np.ndarray | None,
    n_psfs: int,
) -> tuple[np.ndarray, ...]:
    """The arrays of :meth:`bliss.simulator.render.GalsimRenderer.render` as numpy, after checking shapes and values.

    ``n_psfs`` is the number of PSFs given, one per band.
    """
    plocs = np.asarray(plocs, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    is_galaxy = np.asarray(is_galaxy, dtype=bool)
    params = np.asarray(params, dtype=np.float64)
    sizes = check_shape("plocs", plocs, "n 2")
    sizes = check_shape("flux_electrons", flux, "n c", sizes)
    check_shape("is_galaxy", is_galaxy, "n", sizes)
    check_shape("galaxy_params", params, f"n {len(GALAXY_KEYS)}", sizes)
    offsets = np.zeros((sizes["c"], 2)) if offsets is None else np.asarray(offsets, dtype=float)
    check_shape("band_offsets_px", offsets, "c 2", sizes)
    if n_psfs != sizes["c"]:
        raise BlissValueError(
            f"got {n_psfs} PSFs for flux_electrons with c={sizes['c']} bands; pass one PSF "
            "per band, in band order."
        )
    for name, values in (("plocs", plocs), ("flux_electrons", flux), ("offsets", offsets)):
        if not np.all(np.isfinite(values)):
            raise BlissValueError(f"{name} holds non-finite values; drop or fix those sources.")
    if np.any(flux < 0):
        raise BlissValueError(f"flux_electrons has minimum {flux.min()}; expected fluxes >= 0.")
    disk_frac, beta, disk_q, disk_hlr, bulge_q, bulge_hlr = params[is_galaxy].T
    checks = {
        "disk_frac": (disk_frac, (disk_frac >= 0) & (disk_frac <= 1), "in [0, 1]"),
        "beta_rad": (beta, np.isfinite(beta), "finite"),
        "disk_q": (disk_q, (disk_q > 0) & (disk_q <= 1), "in (0, 1]"),
        "bulge_q": (bulge_q, (bulge_q > 0) & (bulge_q <= 1), "in (0, 1]"),
        "disk_hlr_arcsec": (disk_hlr, (disk_hlr > 0) | (disk_frac == 0), "> 0 with a disk"),
        "bulge_hlr_arcsec": (bulge_hlr, (bulge_hlr > 0) | (disk_frac == 1), "> 0 with a bulge"),
    }
    for key, (values, good, expected) in checks.items():
        if not good.all():
            raise BlissValueError(
                f"galaxy_params column {key} is {values[~good][0]!r} for {int((~good).sum())} "
                f"galaxies; expected {expected}. Fix the prior or the catalog."
            )
    return plocs, flux, is_galaxy, params, offsets


def paste_stamps(
    images: np.ndarray, stamps: np.ndarray, owner: np.ndarray, top_left: np.ndarray
) -> None:
    """Add stamps (``g c s s``) of images ``owner`` (``g``) at ``top_left`` (``g c 2``) to ``images``.

    ``images`` is ``b c h w``; the parts of stamps outside it are dropped. A stamp whose bands all
    share one corner is added with one slice, else band by band.
    """
    height, width = images.shape[2:]
    size = stamps.shape[-1]
    one_corner = np.all(top_left == top_left[:, :1], axis=(1, 2))
    for index, (image, stamp) in enumerate(zip(owner.tolist(), stamps, strict=True)):
        if one_corner[index]:
            corners = [(slice(None), *top_left[index, 0].tolist())]
        else:
            corners = [(slice(b, b + 1), *tl) for b, tl in enumerate(top_left[index].tolist())]
        for band, top, left in corners:
            row_lo, row_hi = max(top, 0), min(top + size, height)
            col_lo, col_hi = max(left, 0), min(left + size, width)
            if row_lo >= row_hi or col_lo >= col_hi:
                continue
            images[image, band, row_lo:row_hi, col_lo:col_hi] += stamp[
                band, row_lo - top : row_hi - top, col_lo - left : col_hi - left
            ]
