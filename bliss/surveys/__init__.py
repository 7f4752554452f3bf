"""Survey descriptions: bands, pixel scale, PSF, sky and zero points."""

from bliss.surveys.base import ObservingSetup, PsfAndSky, PsfModel
from bliss.surveys.parametric import ParametricSurvey

__all__ = ["ObservingSetup", "ParametricSurvey", "PsfAndSky", "PsfModel"]
