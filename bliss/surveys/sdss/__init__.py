"""SDSS: read calibrated frames, masks and PSFs of a field, and download them from the SAS."""

from bliss.surveys.sdss.download import download_sdss_field, sdss_file_urls
from bliss.surveys.sdss.frames import SDSS_BANDS, SdssField, SdssFrame, read_sdss_field
from bliss.surveys.sdss.masks import DEFAULT_MASK_PLANES, read_fpm_mask
from bliss.surveys.sdss.psf import SDSS_PIXEL_SCALE_ARCSEC, SdssPsf

__all__ = [
    "DEFAULT_MASK_PLANES",
    "SDSS_BANDS",
    "SDSS_PIXEL_SCALE_ARCSEC",
    "SdssField",
    "SdssFrame",
    "SdssPsf",
    "download_sdss_field",
    "read_fpm_mask",
    "read_sdss_field",
    "sdss_file_urls",
]
