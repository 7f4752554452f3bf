"""The ``flags`` bit mask of a catalog: warnings about each source, from positions and the image.

Each bit is a heuristic that says where a measurement may be worse than its posterior claims,
as the tags of :mod:`bliss.evaluate.disagreements` do for evaluation (``edge`` and
``near_bright`` use the same definitions): :data:`FLAG_BITS` names and explains them, and the
column reference (``docs/columns.md``) is rendered from it. A saturated source gets both
``saturated`` (its own bit, where the image says which pixels saturated) and ``masked`` (SDSS
frames and FITS inputs with a ``SATURATE`` level set saturated pixels to NaN).
"""

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from bliss.errors import BlissValueError

__all__ = [
    "BRIGHT_MAG",
    "EDGE_PX",
    "FLAG_BITS",
    "LOW_PROB",
    "bright_radius_px",
    "flag_value",
    "source_flags",
]

#: a source whose centre is closer than this to the image border is flagged ``edge``, pixels
EDGE_PX = 8.0
#: sources brighter than this (AB mag, reference band) make their neighbours ``near_bright``
BRIGHT_MAG = 16.0
#: below this ``prob_source`` a source is flagged ``low_prob``
LOW_PROB = 0.8
#: missing pixels within max(this, 1 FWHM) of the centre make a source ``masked``, pixels
_MIN_FOOTPRINT_PX = 2.0
#: another detection within this many PSF FWHMs makes a source ``blended``
_BLEND_FWHM = 2.0

#: flag name -> (bit, meaning); ``flags & (1 << bit)`` is set when the meaning holds
FLAG_BITS: dict[str, tuple[int, str]] = {
    "masked": (
        0,
        "a missing (NaN) pixel in any band within max(2 px, 1 PSF FWHM) of the centre, where "
        "about 90 % of a star's light falls: masked, saturated (SDSS `SATUR`), interpolated or "
        "cosmic-ray pixels, or outside a band's footprint",
    ),
    "edge": (1, f"the centre is within {EDGE_PX:g} px of the image border"),
    "near_bright": (
        2,
        f"within min(150, 30 x 10**(0.2 (16 - m))) px of another source of this catalog with "
        f"reference-band magnitude m < {BRIGHT_MAG:g} (its wings and artefacts)",
    ),
    "blended": (
        3,
        f"another source of this catalog within {_BLEND_FWHM:g} PSF FWHM (reference band) of "
        "the centre: their fluxes and shapes are shared out by the model",
    ),
    "low_prob": (4, f"`prob_source` < {LOW_PROB:g}: the detection itself is uncertain"),
    "crowded": (
        5,
        "cataloged by the crowded-field model (`predict.crowded`; stars only, so `prob_galaxy` "
        "is 0 and the galaxy shapes are NaN) because the image block it lies in is crowded",
    ),
    "saturated": (
        6,
        "a saturated pixel in any band within max(2 px, 1 PSF FWHM) of the centre (SDSS fpM "
        "`SATUR`, or at or above a FITS band's `SATURATE` level): its core is missing, so its "
        "flux rests on its wings",
    ),
}


def flag_value(*names: str) -> int:
    """The bit mask of the named flags: ``flag_value("edge", "blended") == 10``.

    Raises:
        BlissValueError: a name is not one of :data:`FLAG_BITS`.
    """
    value = 0
    for name in names:
        if name not in FLAG_BITS:
            raise BlissValueError(f"flag {name!r}; expected one of {list(FLAG_BITS)}.")
        value |= 1 << FLAG_BITS[name][0]
    return value


def bright_radius_px(mag: np.ndarray) -> np.ndarray:
    """Radius around a source of AB magnitude ``mag`` within which it affects others, pixels.

    ``min(150, 30 * 10**(0.2 * (16 - mag)))``: 30 px at magnitude 16, growing with the square
    root of the flux (the size at which a Moffat wing falls to a fixed surface brightness).
    """
    return np.minimum(150.0, 30.0 * 10 ** (0.2 * (BRIGHT_MAG - np.asarray(mag, dtype=float))))


def source_flags(
    plocs: np.ndarray,
    missing: np.ndarray,
    fwhm_px: float,
    *,
    ref_mag: np.ndarray | None = None,
    prob_source: np.ndarray | None = None,
    crowded: np.ndarray | None = None,
    saturated: np.ndarray | None = None,
) -> np.ndarray:
    """The ``flags`` of each source (see :data:`FLAG_BITS`).

    Args:
        plocs: source centres, ``(row, col)`` pixels with the origin at the image corner (the
            internal convention of :mod:`bliss.catalog`). Shape ``n 2``.
        missing: which pixels are missing data in any band. Shape ``h w`` (bool).
        fwhm_px: PSF FWHM of the reference band, pixels.
        ref_mag: reference-band AB magnitudes (``near_bright``; not set without). Shape ``n``.
        prob_source: detection probabilities (``low_prob``; not set without). Shape ``n``.
        crowded: which sources the crowded-field model reported (``crowded``). Shape ``n``.
        saturated: which pixels saturated in any band (``saturated``; not set without). Shape
            ``h w`` (bool).

    Returns:
        The bit masks. Shape ``n`` (int32).

    Raises:
        BlissValueError: ``fwhm_px`` is not positive or a shape disagrees.
    """
    plocs = np.asarray(plocs, dtype=float).reshape(-1, 2)
    n = len(plocs)
    missing = np.asarray(missing, dtype=bool)
    if not fwhm_px > 0 or missing.ndim != 2:
        raise BlissValueError(
            f"source_flags got fwhm_px={fwhm_px} and a mask of shape {missing.shape}; expected "
            "a positive PSF FWHM in pixels and an h w mask."
        )
    for name, values in (("ref_mag", ref_mag), ("prob_source", prob_source), ("crowded", crowded)):
        if values is not None and np.shape(values) != (n,):
            raise BlissValueError(f"{name} has shape {np.shape(values)}; expected ({n},).")
    flags = np.zeros(n, dtype=np.int32)
    if not n:
        return flags
    height, width = missing.shape
    rows, cols = plocs[:, 0], plocs[:, 1]

    radius = max(_MIN_FOOTPRINT_PX, fwhm_px)
    span = int(np.ceil(radius))
    offsets = np.arange(-span, span + 1)
    disk = np.hypot(*np.meshgrid(offsets, offsets, indexing="ij")) <= radius
    pixel_row, pixel_col = np.floor(rows).astype(int), np.floor(cols).astype(int)
    inside = (pixel_row >= 0) & (pixel_row < height) & (pixel_col >= 0) & (pixel_col < width)

    def near(pixels: np.ndarray) -> np.ndarray:
        """Sources with one of ``pixels`` (``h w``) within the footprint radius."""
        found = np.zeros(n, dtype=bool)
        if pixels.any():
            dilated = ndimage.binary_dilation(pixels, structure=disk)
            found[inside] = dilated[pixel_row[inside], pixel_col[inside]]
        return found

    flags[near(missing) | ~inside] |= flag_value("masked")
    if saturated is not None:
        saturated = np.asarray(saturated, dtype=bool)
        if saturated.shape != missing.shape:
            raise BlissValueError(
                f"saturated has shape {saturated.shape}; expected the mask's {missing.shape}."
            )
        flags[near(saturated)] |= flag_value("saturated")

    border = np.minimum.reduce([rows, cols, height - rows, width - cols])
    flags[border < EDGE_PX] |= flag_value("edge")

    if ref_mag is not None:
        ref_mag = np.asarray(ref_mag, dtype=float)
        for index in np.flatnonzero(np.isfinite(ref_mag) & (ref_mag < BRIGHT_MAG)):
            distance = np.hypot(rows - rows[index], cols - cols[index])
            near = distance <= bright_radius_px(ref_mag[index])
            near[index] = False
            flags[near] |= flag_value("near_bright")

    pairs = cKDTree(plocs).query_pairs(_BLEND_FWHM * fwhm_px, output_type="ndarray")
    flags[np.unique(pairs)] |= flag_value("blended")

    if prob_source is not None:
        flags[np.asarray(prob_source) < LOW_PROB] |= flag_value("low_prob")
    if crowded is not None:
        flags[np.asarray(crowded, dtype=bool)] |= flag_value("crowded")
    return flags
