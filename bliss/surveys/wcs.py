"""The celestial WCS of an image header: one policy for every reader."""

import warnings

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = ["celestial_wcs"]


def celestial_wcs(header: fits.Header) -> WCS | None:
    """The 2-D celestial WCS of ``header``, or None when it has none or it is malformed.

    Callers decide what a missing WCS means: the FITS input reader warns (the catalog then has no
    RA/Dec), the SDSS frame reader refuses the frame (its bands cannot be aligned without one).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # astropy raises several types for malformed WCS keywords
            return None
    return wcs if wcs.has_celestial and wcs.naxis == 2 else None
