"""The COSMOS parametric galaxy catalog (HST/ACS F814W, limited to magnitude 25.2).

The catalog ships inside the optional ``fpfs`` wheel (``fpfs/data/src_cosmos.fits``; install it
with ``pip install "bliss-toolkit[weak_lensing]"``). It holds GalSim's parametric fits of the
COSMOS galaxies (Mandelbaum et al. 2012, MNRAS 420, 1518; the columns of GalSim's
``COSMOSCatalog``): a single Sersic fit and a bulge (n = 4) + disk (n = 1) fit per galaxy, made
on HST images with 0.03 arcsec pixels.

Conversion to bliss's galaxy shape convention (:data:`bliss.catalog.GALAXY_KEYS`):

* Half-light radii. A fit's radius ``r`` (column 1 of a fit, COSMOS pixels) is measured along
  the major axis. Bliss, like GalSim's ``shear(q=...)``, uses the half-light radius of the
  circular profile before the area-preserving shear, the geometric mean of the half-light
  ellipse's semi-axes: ``hlr = 0.03 * r * sqrt(q)`` arcsec. This reproduces the catalog's own
  ``hlr`` column (GalSim's convention) exactly.
* Axis ratios above 1 (a few bulge+disk fits have ``q`` up to 15; GalSim then draws the
  component round): the major axis lies at ``phi + pi/2``, so ``q -> 1/q`` and the angle turns
  by ``pi/2``; ``hlr`` does not change.
* Angles: ``phi`` (column 7) is counter-clockwise from the image's +x axis, GalSim's ``beta``;
  bliss's ``beta_rad`` is the same angle wrapped to ``[0, pi)``.
* Fluxes: a Sersic component's flux is ``k_n I r^2 q`` with ``I`` the surface brightness at
  ``r`` (column 0) and ``k_n = 2 pi n Gamma(2n) e^b / b^(2n)``, ``b`` from ``P(2n, b) = 1/2``.
  ``disk_frac`` is the disk's share; for the fits GalSim draws as bulge+disk it matches the
  catalog's ``flux`` column to 1e-4.

The two components of a bulge+disk fit have their own position angles; bliss's single
``beta_rad`` is that of the brighter component (both angles are returned too). A component with
no light (non-positive intensity or radius: 21% of the bulges, 0.6% of the disks) takes the
other component's ``q`` and ``hlr`` so that every shape parameter is valid; it adds no flux.

GalSim draws the bulge+disk fit only where ``use_bulgefit`` is set (29% of the rows) and the
Sersic fit elsewhere; the bulge+disk parameters of the other rows are returned too (they are
the only bulge+disk description of those galaxies) but are less reliable.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from bliss.catalog import GALAXY_KEYS
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError

__all__ = [
    "COSMOS_PIXEL_ARCSEC",
    "CosmosShapes",
    "cosmos_catalog_path",
    "draw_in_window",
    "load_cosmos_galaxies",
]

#: pixel side (arcsec) of the COSMOS HST reductions the fits were made on
COSMOS_PIXEL_ARCSEC = 0.03
#: ``k_n`` of the module docstring for the disk (n = 1) and the bulge (n = 4)
_DISK_FLUX_PER_IR2Q = 11.948494741464001
_BULGE_FLUX_PER_IR2Q = 22.665233723581743
#: a lit bulge or disk larger than this (arcsec) is an unconstrained fit: no galaxy's Sersic fit
#: exceeds 7.8 arcsec and no bulge+disk fit that GalSim draws (``use_bulgefit``) exceeds 4.7
_MAX_COMPONENT_HLR_ARCSEC = 10.0
#: GalSim draws Sersic indices in this range only (COSMOSCatalog clips the fits to it)
_SERSIC_N_RANGE = (0.3, 6.0)
#: fit_status columns of the bulge+disk and the Sersic fit; 1-4 is a converged fit (GalSim)
_BULGEFIT_STATUS, _SERSICFIT_STATUS = 0, 4
_GOOD_STATUS = (1, 4)
_REQUIRED_COLUMNS = ("IDENT", "mag_auto", "sersicfit", "bulgefit", "fit_status", "use_bulgefit")
_INSTALL_HINT = 'pip install "bliss-toolkit[weak_lensing]"'


def cosmos_catalog_path() -> Path:
    """Where the installed ``fpfs`` package keeps the COSMOS catalog (fpfs is not imported).

    Returns:
        The path of ``fpfs/data/src_cosmos.fits``.

    Raises:
        BlissConfigError: ``fpfs`` is not installed.
        BlissIOError: ``fpfs`` is installed but holds no catalog file.
    """
    spec = importlib.util.find_spec("fpfs")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise BlissConfigError(
            "the COSMOS catalog ships with the optional package fpfs (3.1.1), which is not "
            f"installed; install it with: {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "src_cosmos.fits"
    if not path.is_file():
        raise BlissIOError(
            f"fpfs is installed at {path.parents[1]} but has no data/src_cosmos.fits; "
            f"reinstall it with: {_INSTALL_HINT}"
        )
    return path


def _read_table(path: Path) -> fits.FITS_rec:
    """The first table HDU of ``path``, after checking that it has the fit columns."""
    if not path.is_file():
        raise BlissIOError(
            f"COSMOS catalog {path} does not exist; pass the path of src_cosmos.fits, or "
            f"path=None to use the copy installed with fpfs ({_INSTALL_HINT})."
        )
    try:
        with fits.open(path, memmap=False) as hdus:
            table = hdus[1].data
    except (OSError, IndexError) as err:
        raise BlissIOError(f"cannot read a FITS table from {path}: {err}") from err
    missing = [name for name in _REQUIRED_COLUMNS if name not in (table.names or ())]
    if missing:
        raise BlissIOError(
            f"{path} has no column(s) {missing}; expected GalSim's COSMOS parametric catalog "
            "(the src_cosmos.fits of the fpfs package)."
        )
    return table


def _axis_and_angle(q: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis ratio in (0, 1] and position angle in [0, pi) from a fit's ``q`` and ``phi``."""
    flipped = q > 1
    q = np.where(flipped, 1 / np.where(flipped, q, 1.0), q)
    return q, np.mod(phi + flipped * (math.pi / 2), math.pi)


def _component(
    fit: np.ndarray, flux_per_ir2q: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flux (catalog units), hlr (arcsec), q and angle of one Sersic component's 8 parameters."""
    intensity, radius, q, phi = fit[:, 0], fit[:, 1], fit[:, 3], fit[:, 7]
    has_light = (intensity > 0) & (radius > 0) & (q > 0)
    flux = np.where(has_light, flux_per_ir2q * intensity * radius**2 * q, 0.0)
    hlr = COSMOS_PIXEL_ARCSEC * radius * np.sqrt(np.abs(q))
    q, beta = _axis_and_angle(q, phi)
    return flux, hlr, q, beta


def load_cosmos_galaxies(
    path: str | Path | None = None, max_mag: float | None = None
) -> dict[str, np.ndarray]:
    """Galaxies of the COSMOS parametric catalog whose fits are usable, in bliss's convention.

    A row is kept when both fits converged (``fit_status`` 1-4 for the bulge+disk fit, column 0,
    and the Sersic fit, column 4: GalSim's "bad_fits" cut applied to both), GalSim flags the
    Sersic fit as drawable (``viable_sersic``), the Sersic fit has a positive intensity, radius
    and axis ratio, the bulge+disk fit has light, neither of its lit components has a
    half-light radius above 10 arcsec, and every value is finite. Of the 81,499 rows of fpfs
    3.1.1's catalog, 81,448 survive: every fit status passes; 1 row has a zero Sersic radius
    (and no viable Sersic fit), 4 have no light in either bulge+disk component, and 46 (none
    drawn as bulge+disk by GalSim) have a bulge or disk of 10 arcsec up to 6.6 degrees.

    Args:
        path: the catalog FITS file [default: None, the copy installed with ``fpfs``].
        max_mag: keep galaxies with ``mag <= max_mag`` [default: None, no cut; the catalog
            stops at 25.2].

    Returns:
        One array of length ``n`` per key, in this order:

        * ``mag``: SExtractor ``MAG_AUTO`` in HST/ACS F814W (AB).
        * ``redshift``: COSMOS photometric redshift (``zphot``; NaN if the file has none).
        * the :data:`~bliss.catalog.GALAXY_KEYS` of the bulge+disk fit: ``disk_frac`` (disk
            share of the flux, [0, 1]), ``beta_rad`` (position angle of the brighter component,
            radians in [0, pi), counter-clockwise from +x towards +y), ``disk_q``,
            ``disk_hlr_arcsec``, ``bulge_q``, ``bulge_hlr_arcsec`` (axis ratios in (0, 1],
            circular half-light radii in arcsec; see the module docstring).
        * ``disk_beta_rad``, ``bulge_beta_rad``: each component's own position angle.
        * ``sersic_n`` (clipped to GalSim's [0.3, 6], as COSMOSCatalog draws it),
            ``sersic_hlr_arcsec``, ``sersic_q``, ``sersic_beta_rad``: the single-Sersic fit.
        * ``use_bulgefit`` (bool): GalSim's choice, bulge+disk where True, else Sersic.
        * ``ident``: the COSMOS ``IDENT``.

    Raises:
        BlissConfigError: ``path`` is None and ``fpfs`` is not installed.
        BlissIOError: the file does not exist, is not FITS, or lacks the fit columns.
        BlissValueError: ``max_mag`` is not a finite number.
    """
    if max_mag is not None and not math.isfinite(max_mag):
        raise BlissValueError(f"max_mag={max_mag!r}; expected a finite magnitude or None.")
    table = _read_table(cosmos_catalog_path() if path is None else Path(path))

    bulgefit = np.asarray(table["bulgefit"], dtype=np.float64)
    sersicfit = np.asarray(table["sersicfit"], dtype=np.float64)
    status = np.asarray(table["fit_status"])
    disk_flux, disk_hlr, disk_q, disk_beta = _component(bulgefit[:, :8], _DISK_FLUX_PER_IR2Q)
    bulge_flux, bulge_hlr, bulge_q, bulge_beta = _component(bulgefit[:, 8:], _BULGE_FLUX_PER_IR2Q)
    total_flux = disk_flux + bulge_flux
    disk_frac = disk_flux / np.where(total_flux > 0, total_flux, 1.0)
    # a component without light (a zero share, also when its flux underflows next to the other
    # component's) borrows the other's shape: it is drawn with zero flux
    dark_disk, dark_bulge = disk_frac <= 0, disk_frac >= 1
    disk_q, bulge_q = np.where(dark_disk, bulge_q, disk_q), np.where(dark_bulge, disk_q, bulge_q)
    disk_hlr, bulge_hlr = (
        np.where(dark_disk, bulge_hlr, disk_hlr),
        np.where(dark_bulge, disk_hlr, bulge_hlr),
    )
    sersic_q, sersic_beta = _axis_and_angle(sersicfit[:, 3], sersicfit[:, 7])
    sersic_hlr = COSMOS_PIXEL_ARCSEC * sersicfit[:, 1] * np.sqrt(np.abs(sersicfit[:, 3]))
    mag = np.asarray(table["mag_auto"], dtype=np.float64)
    redshift = (
        np.asarray(table["zphot"], dtype=np.float64)
        if "zphot" in table.names
        else np.full(len(mag), np.nan)
    )
    galaxies = {
        "mag": mag,
        "redshift": redshift,
        "disk_frac": disk_frac,
        "beta_rad": np.where(disk_frac >= 0.5, disk_beta, bulge_beta),
        "disk_q": disk_q,
        "disk_hlr_arcsec": disk_hlr,
        "bulge_q": bulge_q,
        "bulge_hlr_arcsec": bulge_hlr,
        "disk_beta_rad": disk_beta,
        "bulge_beta_rad": bulge_beta,
        "sersic_n": np.clip(sersicfit[:, 2], *_SERSIC_N_RANGE),
        "sersic_hlr_arcsec": sersic_hlr,
        "sersic_q": sersic_q,
        "sersic_beta_rad": sersic_beta,
        "use_bulgefit": np.asarray(table["use_bulgefit"]) != 0,
        "ident": np.asarray(table["IDENT"], dtype=np.int64),
    }

    def converged(column: int) -> np.ndarray:
        return (status[:, column] >= _GOOD_STATUS[0]) & (status[:, column] <= _GOOD_STATUS[1])

    keep = converged(_BULGEFIT_STATUS) & converged(_SERSICFIT_STATUS) & (total_flux > 0)
    keep &= (disk_hlr <= _MAX_COMPONENT_HLR_ARCSEC) & (bulge_hlr <= _MAX_COMPONENT_HLR_ARCSEC)
    keep &= (sersicfit[:, 0] > 0) & (sersicfit[:, 1] > 0) & (sersicfit[:, 3] > 0)
    if "viable_sersic" in table.names:
        keep &= np.asarray(table["viable_sersic"]) != 0
    for key in ("mag", *GALAXY_KEYS, "sersic_n", "sersic_hlr_arcsec", "sersic_q"):
        keep &= np.isfinite(galaxies[key])
    if max_mag is not None:
        keep &= mag <= max_mag
    return {key: value[keep] for key, value in galaxies.items()}


class CosmosShapes:
    """Galaxy shapes and sizes of COSMOS galaxies, drawn to match each galaxy's magnitude.

    For a galaxy of reference-band magnitude ``m`` a COSMOS galaxy is drawn uniformly among
    those with F814W magnitude within ``mag_window`` of ``m + mag_offset`` (the nearest one if
    none is), and its bulge + disk parameters (:func:`load_cosmos_galaxies`) are used; sizes and
    magnitudes stay correlated as on the sky. Galaxies fainter than the catalog's limit (25.2)
    take the shapes of its faintest galaxies. A :class:`~bliss.simulator.prior.CatalogPrior`
    uses it through its ``galaxy_shape_catalog`` argument.

    Args:
        path: the catalog FITS file [default: None, the copy installed with ``fpfs``].
        mag_window: half-width of the magnitude window, mag [default: 0.25].
        mag_offset: F814W minus the reference band, mag [default: 0; about right for i].

    Raises:
        BlissConfigError: ``mag_window`` is not positive, or ``path`` is None and ``fpfs`` is not
            installed.
    """

    def __init__(
        self, path: str | Path | None = None, mag_window: float = 0.25, mag_offset: float = 0.0
    ) -> None:
        if not mag_window > 0:
            raise BlissConfigError(
                f"prior.galaxy_shape_catalog.mag_window={mag_window}; expected a positive width in mag."
            )
        galaxies = load_cosmos_galaxies(path)
        order = np.argsort(galaxies["mag"], kind="stable")
        self.mag = torch.from_numpy(galaxies["mag"][order].astype(np.float64))
        self.shapes = torch.from_numpy(
            np.stack([galaxies[key][order] for key in GALAXY_KEYS], axis=-1).astype(np.float32)
        )
        self.mag_window, self.mag_offset = float(mag_window), float(mag_offset)

    def sample(self, ref_mag: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Shapes for galaxies of these reference-band magnitudes (``n``): each key ``n 1``."""
        target = (ref_mag.double() + self.mag_offset).clamp(self.mag[0], self.mag[-1])
        rows = self.shapes[draw_in_window(self.mag, target, self.mag_window, generator)]
        return {key: rows[:, i : i + 1] for i, key in enumerate(GALAXY_KEYS)}


def draw_in_window(
    mags: torch.Tensor, target: torch.Tensor, window: float, generator: torch.Generator
) -> torch.Tensor:
    """Rows of a catalog drawn to match magnitudes.

    Args:
        mags: the catalog's magnitudes, sorted increasingly (float64). Shape ``k``.
        target: the magnitudes to match (float64). Shape ``n``.
        window: half-width of the window, mag.
        generator: the random stream.

    Returns:
        For each target, a row index drawn uniformly among the rows within ``window`` of it, or
        the nearer of the rows either side of it where the window is empty. Shape ``n``.
    """
    low = torch.searchsorted(mags, target - window)
    high = torch.searchsorted(mags, target + window, right=True)
    above = torch.searchsorted(mags, target).clamp(max=len(mags) - 1)
    below = (above - 1).clamp(min=0)
    nearer_below = (target - mags[below]) < (mags[above] - target)
    nearest = torch.where(nearer_below, below, above)
    empty = high <= low
    low, high = torch.where(empty, nearest, low), torch.where(empty, nearest + 1, high)
    u = torch.rand(target.shape, generator=generator, dtype=torch.float64)
    return (low + (u * (high - low)).long()).clamp(max=len(mags) - 1)
