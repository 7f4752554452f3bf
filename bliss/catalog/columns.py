"""The column reference of the catalogs bliss writes: one table for the files and the docs.

:data:`COLUMNS` names every column of a ``mode=predict`` catalog and of its posterior sample
catalogs, with its unit (the FITS ``TUNIT`` string), type, a one-line description (the FITS
``TCOMM`` and the astropy column description) and notes for the docs. :mod:`bliss.catalog.io`
takes units and descriptions from it when it builds a table, and ``docs/columns.md`` is rendered
from it (:func:`update_markdown`; run ``python docs/_ext/columns.py`` after changing it, a test
checks that the page is current).

The uncertainty columns are defined here once, from the posterior's 16 % and 84 % quantiles
(:data:`ERROR_QUANTILES`, the +-1 sigma points of a Gaussian): an error is half their distance
(:func:`half_width`), the signal-to-noise ratio is the flux over that half-width
(:func:`flux_snr`), and the magnitude error is half the width of the same interval in magnitudes
(:func:`mag_err`).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bliss.catalog.flags import FLAG_BITS
from bliss.errors import BlissValueError

__all__ = [
    "COLUMNS",
    "ERROR_QUANTILES",
    "NJY_PER_NMGY",
    "Column",
    "column_description",
    "describe",
    "flux_snr",
    "half_width",
    "mag_err",
    "render_markdown",
    "update_markdown",
]

#: posterior quantiles whose half-distance is a "1 sigma" error (x_err, y_err, mag_err, snr)
ERROR_QUANTILES = (0.16, 0.84)
#: nanojansky per nanomaggy: 1 nmgy is AB magnitude 22.5, i.e. 3631 Jy * 10**-9
NJY_PER_NMGY = 3631.0
#: the catalogs a column can be in: the point-estimate catalog and the joint posterior samples
KINDS = ("catalog", "samples")
_BOTH = frozenset(KINDS)
_CATALOG = frozenset({"catalog"})
_SAMPLES = frozenset({"samples"})


@dataclass(frozen=True)
class Column:
    """One column (or one per band: ``<band>`` in ``name``) of the catalogs bliss writes.

    Attributes:
        name: column name; ``<band>`` stands for each band name.
        unit: the FITS ``TUNIT`` string, astropy-parsable; ``""`` for a dimensionless number.
        dtype: numpy type of the values.
        description: one line of at most 68 characters (fits one FITS ``TCOMM`` card).
        details: more for the docs (Markdown), or ``""``.
        kinds: which catalogs hold it: ``catalog`` (point estimates) and / or ``samples``.
    """

    name: str
    unit: str
    dtype: str
    description: str
    details: str = ""
    kinds: frozenset[str] = _BOTH

    def pattern(self) -> re.Pattern:
        """The names this entry covers: ``flux_<band>`` matches ``flux_r``."""
        band = r"(?P<band>[A-Za-z0-9]+)"
        return re.compile("^" + re.escape(self.name).replace(re.escape("<band>"), band) + "$")


_SHAPE_NOTE = "NaN for stars (`prob_galaxy` < 0.5; in samples, `source_type` 0)."

#: every column bliss writes, in table order
COLUMNS: tuple[Column, ...] = (
    Column(
        "id",
        "",
        "int32",
        "source number in this catalog, 1-based, in row order",
        "Stable within one catalog file (rows are never reordered), not an identifier across "
        "catalogs. Sample catalogs number each draw's sources from 1.",
    ),
    Column(
        "x",
        "pix",
        "float32",
        "column of the centre, 0-indexed, pixel centres on integers",
        "Posterior median. The numpy and astropy convention: add 1 for FITS and DS9 pixel "
        "coordinates (see [Pixel convention](#pixel-convention)).",
    ),
    Column("y", "pix", "float32", "row of the centre, same convention as x"),
    Column(
        "x_err",
        "pix",
        "float32",
        "x uncertainty: half the 16-84 % posterior interval",
        "From the location posterior's marginal quantiles: a normal fitted to the source's "
        "position in its tile (4 x 4 px for the SDSS models). For sdss_generalist and sdss_real "
        "it is not cut at the tile's border, because a faint source near a border is found as "
        "often by the neighbouring tile; the other models' is (docs/tiling.md). Stars the PSF fit "
        "measures at S/N >= 20 in the reference band, outside crowded tangles, take the fit's "
        "position and error instead (docs/photometry.md).",
        _CATALOG,
    ),
    Column("y_err", "pix", "float32", "y uncertainty, likewise", kinds=_CATALOG),
    Column(
        "ra",
        "deg",
        "float64",
        "right ascension at (x, y); NaN when the input has no WCS",
        "From the reference band's celestial WCS (`wcs.pixel_to_world_values(x, y)`, 0-based). "
        "Always present, so that every catalog has the same columns.",
    ),
    Column("dec", "deg", "float64", "declination at (x, y); NaN when the input has no WCS"),
    Column(
        "prob_source",
        "",
        "float32",
        "posterior probability that the tile holds this source",
        "See [Threshold](#threshold-and-checkerboard-groups).",
        _CATALOG,
    ),
    Column(
        "prob_source_marginal",
        "",
        "float32",
        "share of joint posterior samples with a source within 1 px",
        "Only with `predict.marginal_samples` > 0. Unlike `prob_source` it does not depend on "
        "`predict.threshold`: it is estimated from that many joint samples of the whole "
        "catalog, each matched one-to-one with the reported sources (within 1 px), so its "
        "standard error is at most 0.5 / sqrt(marginal_samples). "
        "See [Threshold](#threshold-and-checkerboard-groups).",
        _CATALOG,
    ),
    Column(
        "prob_galaxy",
        "",
        "float32",
        "posterior probability that the source is a galaxy, not a star",
        "0 where a PSF fit with the image's own PSF model (an SDSS frame's psField) explains, "
        "at S/N >= 100, a source the model called a galaxy "
        "([photometry](photometry.md), star photometry step 2).",
        kinds=_CATALOG,
    ),
    Column("source_type", "", "int16", "0 star, 1 galaxy (drawn)", kinds=_SAMPLES),
    Column(
        "flags",
        "",
        "int32",
        "bit mask of warnings, 0 for none (see the flag table)",
        "See [Flags](#flags).",
        _CATALOG,
    ),
    Column(
        "flux_<band>",
        "nmgy",
        "float32",
        "<band>-band flux in nanomaggies (posterior median)",
        "On the input's own zero point (`MAGZERO`), aperture-corrected for real SDSS frames (see "
        "`APCOR_<BAND>`). Stars the network is sure of take a PSF fit's flux, and bright "
        "galaxies a bulge + disk model fit's, where the fit measures them better "
        "([photometry](photometry.md)). "
        "`nmgy` is not a FITS-standard unit: 1 nmgy = 3631 nJy = AB mag 22.5.",
    ),
    Column(
        "flux_<band>_lo",
        "nmgy",
        "float32",
        "5 % posterior quantile of the <band>-band flux",
        kinds=_CATALOG,
    ),
    Column(
        "flux_<band>_hi",
        "nmgy",
        "float32",
        "95 % posterior quantile of the <band>-band flux",
        "`[lo, hi]` is a 90 % interval.",
        _CATALOG,
    ),
    Column("flux_<band>_njy", "nJy", "float32", "flux_<band> in nanojansky (x 3631)"),
    Column(
        "mag_<band>",
        "mag",
        "float64",
        "AB magnitude of flux_<band>: 22.5 - 2.5 log10(flux)",
        "`inf` where the flux is not positive.",
    ),
    Column(
        "mag_<band>_err",
        "mag",
        "float32",
        "mag_<band> error: half its 16-84 % posterior interval",
        "`1.25 log10(q84 / q16)` of the flux quantiles: for the log-normal flux posterior, "
        "`2.5 / ln(10)` times its sigma, about `1.086 / snr_<band>`.",
        _CATALOG,
    ),
    Column(
        "snr_<band>",
        "",
        "float32",
        "<band>-band S/N: flux / half the 16-84 % flux interval",
        "`flux_<band> / ((q84 - q16) / 2)` with the posterior's flux quantiles, which include "
        "the sky and source noise and the sharing of light with neighbours.",
        _CATALOG,
    ),
    Column(
        "disk_frac",
        "",
        "float32",
        "disk share of a galaxy's flux, in [0, 1]",
        "Posterior median given that the source is a galaxy. " + _SHAPE_NOTE,
    ),
    Column(
        "beta_rad",
        "rad",
        "float32",
        "position angle, counter-clockwise from +x towards +y, [0, pi)",
        "Of the major axes of disk and bulge; mean direction of a von Mises posterior. "
        + _SHAPE_NOTE,
    ),
    Column(
        "disk_q",
        "",
        "float32",
        "axis ratio (minor / major) of the exponential disk",
        "In (0, 1], posterior median. " + _SHAPE_NOTE,
    ),
    Column(
        "disk_hlr_arcsec",
        "arcsec",
        "float32",
        "half-light radius of the disk",
        "Of the circular profile before the shear, i.e. the geometric mean of the half-light "
        "ellipse's semi-axes (GalSim's `shear(q=..., beta=...)`); posterior median. " + _SHAPE_NOTE,
    ),
    Column(
        "bulge_q",
        "",
        "float32",
        "axis ratio of the de Vaucouleurs bulge",
        "In (0, 1], posterior median. " + _SHAPE_NOTE,
    ),
    Column(
        "bulge_hlr_arcsec",
        "arcsec",
        "float32",
        "half-light radius of the bulge",
        "Same convention as `disk_hlr_arcsec`. " + _SHAPE_NOTE,
    ),
    Column(
        "e1",
        "",
        "float32",
        "ellipticity along x minus along y, as the galaxy appears",
        "`(Q_xx - Q_yy) / (Q_xx + Q_yy + 2 sqrt(det Q))` of the flux-weighted second moments `Q` "
        "of the galaxy before the PSF, lensing included: a round galaxy sheared by a reduced "
        "shear `g` has `e = g` (`bliss.catalog.ellipticity`). Spin 2. From the model's "
        "`ellipticity` factor, or, for models with bulge + disk shape factors only (the shipped "
        "SDSS models), the posterior median of the ellipticity of 64 draws of those factors, "
        "which goes to 0 where the orientation is unknown; the ellipticity of the shape columns' "
        "point estimates does not, and is biased. In samples, that of the drawn shape. "
        + _SHAPE_NOTE,
    ),
    Column(
        "e2",
        "",
        "float32",
        "ellipticity along the diagonal x = y",
        "`2 Q_xy / (Q_xx + Q_yy + 2 sqrt(det Q))`; see `e1`. " + _SHAPE_NOTE,
    ),
    Column("e1_lo", "", "float32", "e1 at the lower quantile (0.05)", kinds=_CATALOG),
    Column("e1_hi", "", "float32", "e1 at the upper quantile (0.95)", kinds=_CATALOG),
    Column("e2_lo", "", "float32", "e2 at the lower quantile (0.05)", kinds=_CATALOG),
    Column("e2_hi", "", "float32", "e2 at the upper quantile (0.95)", kinds=_CATALOG),
    Column(
        "sample",
        "",
        "int32",
        "index of the posterior draw, 0 to K - 1",
        kinds=_SAMPLES,
    ),
)


def describe(name: str) -> Column | None:
    """The reference entry of column ``name`` (``flux_r`` -> the ``flux_<band>`` entry), or None."""
    for column in COLUMNS:
        if column.pattern().match(name):
            return column
    return None


def column_description(name: str) -> str | None:
    """The one-line description of column ``name``, with its band filled in, or None.

    Example:
        >>> column_description("flux_r")
        'r-band flux in nanomaggies (posterior median)'
    """
    column = describe(name)
    if column is None:
        return None
    match = column.pattern().match(name)
    band = match.group("band") if "band" in match.groupdict() else None
    return column.description.replace("<band>", band) if band else column.description


def half_width(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Half the distance between two quantiles: the "1 sigma" error of :data:`ERROR_QUANTILES`."""
    return (np.asarray(high) - np.asarray(low)) / 2


def flux_snr(flux: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Signal-to-noise ratio: ``flux`` over :func:`half_width` of its 16 % and 84 % quantiles.

    Units: any flux unit, the same for all three. Returns ``inf`` for a zero width.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(flux) / half_width(low, high)


def mag_err(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Magnitude error: half the 16-84 % interval in magnitudes, ``1.25 log10(high / low)``.

    Magnitudes fall as fluxes rise, so the flux quantiles bound the magnitude interval in reverse
    order. NaN where a quantile is not positive.
    """
    low, high = np.asarray(low), np.asarray(high)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((low > 0) & (high > 0), high / low, np.nan)
        return 1.25 * np.log10(ratio)


def render_markdown() -> dict[str, str]:
    """The generated blocks of ``docs/columns.md``: ``columns`` and ``flags`` (Markdown tables)."""
    rows = [
        "| column | unit | type | catalog | samples | meaning |",
        "| --- | --- | --- | :-: | :-: | --- |",
    ]
    for column in COLUMNS:
        marks = ["yes" if kind in column.kinds else "" for kind in KINDS]
        description = column.description[0].upper() + column.description[1:]
        meaning = description + (f". {column.details}" if column.details else "")
        rows.append(
            f"| `{column.name}` | {column.unit or '-'} | {column.dtype} | {marks[0]} | "
            f"{marks[1]} | {meaning} |"
        )
    flags = ["| bit | value | name | set when |", "| --- | --- | --- | --- |"]
    for name, (bit, meaning) in FLAG_BITS.items():
        flags.append(f"| {bit} | {1 << bit} | `{name}` | {meaning} |")
    return {"columns": "\n".join(rows), "flags": "\n".join(flags)}


def _markers(block: str) -> tuple[str, str]:
    return (
        f"<!-- {block}: generated by docs/_ext/columns.py from bliss.catalog; do not edit -->",
        f"<!-- end {block} -->",
    )


def update_markdown(text: str, blocks: Iterable[str] = ("columns", "flags")) -> str:
    """``text`` with each generated block (between its markers) replaced by :func:`render_markdown`.

    Raises:
        BlissValueError: a block's markers are missing from ``text``.
    """
    rendered = render_markdown()
    for block in blocks:
        begin, end = _markers(block)
        pattern = re.compile(re.escape(begin) + r"\n(?:.*?\n)?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise BlissValueError(
                f"the page lacks the markers of block {block!r}: {begin} ... {end}; add both "
                "lines where the generated table belongs."
            )
        replacement = f"{begin}\n{rendered[block]}\n{end}"
        text = pattern.sub(lambda _, replacement=replacement: replacement, text)
    return text
