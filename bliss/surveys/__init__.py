"""Survey descriptions (bands, pixel scale, PSF, sky, zero points), PSF models and image readers."""

from bliss.surveys.base import psf_images_at
from bliss.surveys.fits_reader import read_fits_image
from bliss.surveys.parametric import ParametricSurvey
from bliss.surveys.psfex import PsfexPsf

__all__ = ["ParametricSurvey", "PsfexPsf", "psf_images_at", "read_fits_image"]
