"""Weak gravitational lensing of the simulated galaxies: reduced shear and magnification.

A lensing field gives, at any position of an image, the reduced shear ``(g1, g2)`` and the
magnification ``mu``; the renderers apply them to every galaxy exactly as GalSim's
``lens(g1, g2, mu)`` does (an area-preserving shear, then a dilation by ``sqrt(mu)`` with the flux
times ``mu``). Stars are not lensed, and positions are not deflected: sources are drawn where they
appear.

Conventions are GalSim's with ``x`` = col and ``y`` = row: ``g1 > 0`` stretches a galaxy along the
columns, ``g2 > 0`` along the diagonal ``row = col``. The shear ``gamma`` and convergence ``kappa``
give ``g = gamma / (1 - kappa)`` and ``mu = 1 / ((1 - kappa)^2 - |gamma|^2)``.

Three fields, drawn per image by :class:`LensingPrior`:

- ``constant``: one reduced shear for the whole image, uniform in the disk ``|g| <= g_max``;
- ``power_spectrum``: a Gaussian random field from ``galsim.PowerSpectrum`` with an E-mode power
  ``P(k) = amplitude * (k / 1 arcmin^-1)^slope`` (shear and convergence consistent);
- ``nfw``: the tangential shear and convergence of a ``galsim.NFWHalo`` centred in the image,
  scaled down in the core where ``kappa`` or ``|g|`` would exceed 0.5 (strong lensing).

The truth a model is trained on is the mean reduced shear and convergence over the image
(``shear``, ``convergence``: ``1 1 d``) and, with ``region_px``, over each coarse tile of that side
(``shear_map``, ``convergence_map``: ``hr wr d``), averaged over pixel centres.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import RegularGridInterpolator

from bliss.catalog.ellipticity import galaxy_second_moments, moments_ellipticity
from bliss.errors import BlissConfigError, BlissValueError

__all__ = [
    "FIELD_KINDS",
    "ConstantLensing",
    "GridLensing",
    "LensingGeometry",
    "LensingPrior",
    "check_lensing",
    "galaxy_ellipticity",
    "lensing_matrix",
    "reduced_shear",
    "stretch",
]

FIELD_KINDS = ("constant", "power_spectrum", "nfw")
#: an NFW halo's field is scaled down where it would exceed these (its strong-lensing core)
_NFW_KAPPA_CAP = 0.5
_NFW_G_CAP = 0.5
#: normal shear draws need g_max >= this * g_sigma: then 1 - exp(-0.142^2 / 2) = 1.0 % of them fall
#: inside |g| <= g_max (the rest are redrawn)
_MIN_G_MAX_OVER_SIGMA = 0.142


def reduced_shear(gamma: np.ndarray, kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduced shear ``g = gamma / (1 - kappa)`` (``... 2``) and magnification ``mu`` (``...``).

    Raises:
        BlissValueError: ``kappa >= 1`` or ``|gamma| >= 1 - kappa`` somewhere (strong lensing:
            the weak-lensing map is not invertible there).
    """
    gamma, kappa = np.asarray(gamma, dtype=np.float64), np.asarray(kappa, dtype=np.float64)
    if np.any(kappa >= 1):
        raise BlissValueError(
            f"convergence kappa reaches {kappa.max():.3g}; expected kappa < 1 (weak lensing)."
        )
    g = gamma / (1 - kappa)[..., None]
    if np.any(np.hypot(g[..., 0], g[..., 1]) >= 1):
        raise BlissValueError(
            "reduced shear |g| reaches 1 or more; expected |g| < 1 (weak lensing): lower the "
            "field's amplitude or mass."
        )
    mu = 1.0 / ((1 - kappa) ** 2 - (gamma**2).sum(-1))
    return g, mu


def check_lensing(lensing: np.ndarray, name: str = "lensing") -> np.ndarray:
    """``(g1, g2, mu)`` per source (``n 3``) as float64, refusing ``|g| >= 1`` and ``mu <= 0``."""
    lensing = np.asarray(lensing, dtype=np.float64)
    if lensing.ndim != 2 or lensing.shape[1] != 3:
        raise BlissValueError(f"{name} has shape {lensing.shape}; expected (n, 3): g1, g2, mu.")
    if not np.all(np.isfinite(lensing)):
        raise BlissValueError(f"{name} holds non-finite values.")
    if np.any(np.hypot(lensing[:, 0], lensing[:, 1]) >= 1):
        raise BlissValueError(f"{name}: a reduced shear has |g| >= 1; expected |g| < 1.")
    if np.any(lensing[:, 2] <= 0):
        raise BlissValueError(f"{name}: a magnification is <= 0; expected mu > 0.")
    return lensing


def lensing_matrix(lensing: np.ndarray) -> np.ndarray:
    """The matrix ``M`` with lensed Fourier transform ``mu * F(M k)``, in the ``(col, row)`` basis.

    ``M = sqrt(mu) / sqrt(1 - |g|^2) [[1 + g1, g2], [g2, 1 - g1]]`` is symmetric; the lensed
    profile is ``f(M^-1 x)``. Shape: ``n 2 2`` from ``n 3``.
    """
    g1, g2, mu = np.asarray(lensing, dtype=np.float64).T
    factor = np.sqrt(mu / (1 - g1**2 - g2**2))
    return factor[:, None, None] * np.stack(
        [np.stack([1 + g1, g2], -1), np.stack([g2, 1 - g1], -1)], -2
    )


def galaxy_ellipticity(
    params: np.ndarray,
    lensing: np.ndarray | None = None,
    bulge_sersic_n: float | np.ndarray = 4.0,
) -> np.ndarray:
    """The ellipticity ``(e1, e2)`` of bulge + disk galaxies as they appear, lensing included.

    :mod:`bliss.catalog.ellipticity`'s definition, with the second moments ``Q`` of the profile
    before the PSF mapped to ``M Q M^T`` by lensing: a round galaxy lensed by ``g`` has
    ``e = g``, and an elliptical one ``(e_s + g) / (1 + g* e_s)`` (complex notation) when both
    components share their axes. Spin 2, like :data:`bliss.catalog.orientation.DEFAULT_ORIENTED_KEYS`.

    Args:
        params: :data:`~bliss.catalog.GALAXY_KEYS` of each galaxy. Shape ``n 6``.
        lensing: ``(g1, g2, mu)`` of each galaxy [default: none]. Shape ``n 3``.
        bulge_sersic_n: the bulge's Sersic index, one or one per galaxy (``n``) [default: 4].

    Returns:
        Shape ``n 2``.
    """
    total = galaxy_second_moments(params, bulge_sersic_n)
    if lensing is not None:
        matrix = lensing_matrix(lensing)
        total = matrix @ total @ matrix
    return moments_ellipticity(total)


def stretch(lensing: np.ndarray) -> np.ndarray:
    """Largest factor by which lensing enlarges a galaxy (``n``): the largest singular value of ``M``."""
    g1, g2, mu = np.asarray(lensing, dtype=np.float64).T
    g = np.hypot(g1, g2)
    return np.sqrt(mu) * (1 + g) / np.sqrt(1 - g**2)


class ConstantLensing:
    """The same reduced shear (and convergence) everywhere."""

    def __init__(self, g1: float, g2: float, kappa: float = 0.0) -> None:
        if not math.hypot(g1, g2) < 1:
            raise BlissValueError(f"shear (g1, g2) = ({g1}, {g2}); expected |g| < 1.")
        if not kappa < 1:
            raise BlissValueError(f"convergence kappa = {kappa}; expected kappa < 1.")
        self.g = np.array([g1, g2], dtype=np.float64)
        self.kappa = float(kappa)
        _, mu = reduced_shear(self.g * (1 - self.kappa), np.asarray(self.kappa))
        self.mu = float(mu)

    def at(self, plocs: np.ndarray) -> np.ndarray:
        """``(g1, g2, mu)`` at positions ``(row, col)`` px (``... 2``). Shape ``... 3``."""
        plocs = np.asarray(plocs)
        out = np.empty((*plocs.shape[:-1], 3))
        out[..., :2], out[..., 2] = self.g, self.mu
        return out

    def region_means(self, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean reduced shear (``n_rows n_cols 2``) and convergence (``... 1``) of every region."""
        return (
            np.broadcast_to(self.g, (n_rows, n_cols, 2)).copy(),
            np.full((n_rows, n_cols, 1), self.kappa),
        )


class GridLensing:
    """A lensing field sampled on a pixel grid (``gamma``, ``kappa``), interpolated bilinearly.

    Args:
        rows: grid row coordinates, px (increasing). Shape ``r``.
        cols: grid column coordinates, px (increasing). Shape ``s``.
        gamma: shear on the grid. Shape ``r s 2``.
        kappa: convergence on the grid. Shape ``r s``.
        height_px: image height the region means cover.
        width_px: image width the region means cover.
    """

    def __init__(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        gamma: np.ndarray,
        kappa: np.ndarray,
        height_px: int,
        width_px: int,
    ) -> None:
        g, mu = reduced_shear(gamma, kappa)
        values = np.concatenate([g, mu[..., None], np.asarray(kappa)[..., None]], axis=-1)
        self._interp = RegularGridInterpolator(
            (rows, cols), values, method="linear", bounds_error=False, fill_value=None
        )
        self.height_px, self.width_px = height_px, width_px

    def at(self, plocs: np.ndarray) -> np.ndarray:
        """``(g1, g2, mu)`` at positions ``(row, col)`` px (``... 2``). Shape ``... 3``."""
        plocs = np.asarray(plocs, dtype=np.float64)
        return self._interp(plocs.reshape(-1, 2))[:, :3].reshape(*plocs.shape[:-1], 3)

    def region_means(self, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean reduced shear (``n_rows n_cols 2``) and convergence (``... 1``) over pixel centres."""
        rows = np.arange(self.height_px) + 0.5
        cols = np.arange(self.width_px) + 0.5
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1)
        values = self._interp(grid.reshape(-1, 2)).reshape(self.height_px, self.width_px, 4)
        blocks = values.reshape(
            n_rows, self.height_px // n_rows, n_cols, self.width_px // n_cols, 4
        )
        means = blocks.mean(axis=(1, 3))
        return means[..., :2], means[..., 3:]


@dataclass(frozen=True)
class LensingGeometry:
    """The image a field is drawn for: size, margin around it (px) and pixel scale (arcsec)."""

    height_px: int
    width_px: int
    margin_px: int
    pixel_scale_arcsec: float


class LensingPrior:
    """Draws one lensing field per image.

    Args:
        kind: ``"constant"``, ``"power_spectrum"`` or ``"nfw"``.
        g_max: constant fields: reduced shear uniform in the disk ``|g| <= g_max``, or the bound of
            the normal draws, then at least ``0.142 * g_sigma`` [default: 0.05].
        distribution: constant fields: ``"disk"`` (uniform in the disk) or ``"normal"`` (each
            component normal with standard deviation ``g_sigma``, redrawn beyond ``g_max``)
            [default: "disk"].
        g_sigma: see ``distribution`` [default: 0.05].
        kappa: constant fields: their convergence [default: 0, shear only].
        amplitude: power-spectrum fields: ``P(1 arcmin^-1)`` in arcmin^2 [default: 1e-4].
        slope: power-spectrum fields: logarithmic slope of ``P(k)`` [default: -1].
        grid_px: spacing of the grid power-spectrum and NFW fields are drawn on, px [default: 8].
        mass_msun: NFW fields: ``[low, high]`` of the halo mass (log-uniform), solar masses / h
            [default: [1e14, 1e15]].
        concentration: NFW fields [default: 4].
        z_halo: NFW fields: the halo's redshift [default: 0.3].
        z_source: NFW fields: the galaxies' redshift [default: 1.0].
        nfw_offset_px: NFW fields: the halo's centre is uniform within this distance (row and
            col, px) of the image's centre [default: 0, centred].
        region_px: side of the coarse tiles of the map truth (``shear_map``,
            ``convergence_map``), px, or None for image-level truth only [default: None].

    Raises:
        BlissConfigError: an unknown kind or distribution, ``g_max`` not in [0, 1) (or, for
            normal draws, below ``0.142 * g_sigma``), a non-positive ``g_sigma``, ``kappa >= 1``,
            or a non-positive amplitude, grid or mass.
    """

    def __init__(
        self,
        kind: str = "constant",
        g_max: float = 0.05,
        distribution: str = "disk",
        g_sigma: float = 0.05,
        kappa: float = 0.0,
        amplitude: float = 1e-4,
        slope: float = -1.0,
        grid_px: int = 8,
        mass_msun: tuple[float, float] = (1e14, 1e15),
        concentration: float = 4.0,
        z_halo: float = 0.3,
        z_source: float = 1.0,
        nfw_offset_px: float = 0.0,
        region_px: int | None = None,
    ) -> None:
        if kind not in FIELD_KINDS:
            raise BlissConfigError(
                f"simulator.lensing.kind={kind!r}; expected one of {FIELD_KINDS}."
            )
        if not 0 <= g_max < 1:
            raise BlissConfigError(
                f"simulator.lensing.g_max={g_max}; expected a shear magnitude in [0, 1)."
            )
        if not kappa < 1:
            raise BlissConfigError(f"simulator.lensing.kappa={kappa}; expected kappa < 1.")
        if distribution not in ("disk", "normal") or not g_sigma > 0:
            raise BlissConfigError(
                f"simulator.lensing.distribution={distribution!r}, g_sigma={g_sigma}; expected "
                "'disk' or 'normal' and a positive g_sigma."
            )
        # normal draws are redrawn until |g| <= g_max (g_max = 0 would loop forever)
        if distribution == "normal" and not g_max >= _MIN_G_MAX_OVER_SIGMA * g_sigma:
            raise BlissConfigError(
                f"simulator.lensing.g_max={g_max} with distribution='normal', g_sigma={g_sigma}: "
                "under 1 % of the normal draws land inside |g| <= g_max, and each is redrawn "
                f"until one does; expected g_max >= {_MIN_G_MAX_OVER_SIGMA} * g_sigma, or "
                "distribution='disk'."
            )
        self.distribution, self.g_sigma = distribution, float(g_sigma)
        low, high = (float(m) for m in mass_msun)
        if not (amplitude > 0 and grid_px >= 1 and 0 < low <= high and z_source > z_halo >= 0):
            raise BlissConfigError(
                f"simulator.lensing: amplitude={amplitude}, grid_px={grid_px}, mass_msun={mass_msun}, "
                f"z_halo={z_halo}, z_source={z_source}; expected a positive amplitude, grid_px >= 1, "
                "0 < low <= high masses and z_source > z_halo >= 0."
            )
        self.kind = kind
        self.g_max, self.kappa = float(g_max), float(kappa)
        self.amplitude, self.slope, self.grid_px = float(amplitude), float(slope), int(grid_px)
        self.mass_msun, self.concentration = (low, high), float(concentration)
        self.z_halo, self.z_source = float(z_halo), float(z_source)
        if not nfw_offset_px >= 0:
            raise BlissConfigError(
                f"simulator.lensing.nfw_offset_px={nfw_offset_px}; expected a distance >= 0 px."
            )
        self.nfw_offset_px = float(nfw_offset_px)
        self.region_px = region_px

    def check_geometry(self, image_size: int, tile_slen: int) -> None:
        """Refuse a ``region_px`` that does not divide the image or is not a multiple of the tile."""
        region = self.region_px
        if region is None:
            return
        if region < 1 or image_size % region or region % tile_slen:
            raise BlissConfigError(
                f"simulator.lensing.region_px={region}; expected a divisor of the image size "
                f"{image_size} that is a multiple of the tile side {tile_slen}."
            )

    def sample(
        self, n_images: int, geometry: LensingGeometry, generator: torch.Generator
    ) -> list[ConstantLensing | GridLensing]:
        """One field per image, from ``generator``."""
        seeds = torch.randint(2**31 - 1, (n_images,), generator=generator).tolist()
        return [self._field(np.random.default_rng(seed), geometry) for seed in seeds]

    def _field(
        self, rng: np.random.Generator, geometry: LensingGeometry
    ) -> ConstantLensing | GridLensing:
        if self.kind == "constant":
            if self.distribution == "normal":
                g = rng.normal(0.0, self.g_sigma, 2)
                while math.hypot(*g) > self.g_max:
                    g = rng.normal(0.0, self.g_sigma, 2)
                return ConstantLensing(float(g[0]), float(g[1]), self.kappa)
            radius = self.g_max * math.sqrt(rng.uniform())
            angle = rng.uniform(0, 2 * math.pi)
            return ConstantLensing(radius * math.cos(angle), radius * math.sin(angle), self.kappa)
        margin, scale = geometry.margin_px, geometry.pixel_scale_arcsec
        span = max(geometry.height_px, geometry.width_px) + 2 * margin
        n_grid = math.ceil(span / self.grid_px) + 2
        coords = (np.arange(n_grid) - 1) * self.grid_px - margin  # px, covering the margins
        if self.kind == "power_spectrum":
            gamma, kappa = self._power_spectrum_grid(rng, n_grid, scale)
        else:
            gamma, kappa = self._nfw_grid(rng, coords, geometry)
        return GridLensing(coords, coords, gamma, kappa, geometry.height_px, geometry.width_px)

    def _power_spectrum_grid(
        self, rng: np.random.Generator, n_grid: int, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        import galsim  # lazily: the torch renderer imports this module and never needs GalSim

        amplitude, slope = self.amplitude, self.slope
        power = galsim.PowerSpectrum(
            e_power_function=lambda k: amplitude * np.maximum(k, 1e-6) ** slope,
            units=galsim.arcmin,
        )
        spacing_arcsec = self.grid_px * scale
        g1, g2, kappa = power.buildGrid(
            grid_spacing=spacing_arcsec,
            ngrid=n_grid,
            units=galsim.arcsec,
            rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))),
            get_convergence=True,
        )
        # galsim's arrays are indexed [y, x] = [row, col]; its g is the shear gamma here
        return np.stack([g1, g2], -1), np.asarray(kappa)

    def _nfw_grid(
        self, rng: np.random.Generator, coords: np.ndarray, geometry: LensingGeometry
    ) -> tuple[np.ndarray, np.ndarray]:
        import galsim

        scale = geometry.pixel_scale_arcsec
        mass = math.exp(rng.uniform(*np.log(self.mass_msun)))
        offset = rng.uniform(-self.nfw_offset_px, self.nfw_offset_px, 2)
        centre = (  # (x, y) arcsec
            (geometry.width_px / 2 + offset[1]) * scale,
            (geometry.height_px / 2 + offset[0]) * scale,
        )
        halo = galsim.NFWHalo(mass, self.concentration, self.z_halo, galsim.PositionD(*centre))
        rows, cols = np.meshgrid(coords, coords, indexing="ij")
        x, y = (cols.ravel() + 0.5) * scale, (rows.ravel() + 0.5) * scale
        with warnings.catch_warnings():  # galsim's own np.divide(..., where=) call warns
            warnings.simplefilter("ignore", UserWarning)
            g1, g2 = halo.getShear((x, y), self.z_source, units=galsim.arcsec, reduced=False)
            kappa = halo.getConvergence((x, y), self.z_source, units=galsim.arcsec)
        gamma = np.stack([g1, g2], -1).reshape(*rows.shape, 2)
        kappa = np.asarray(kappa).reshape(rows.shape)
        # the core, where the weak-lensing description fails, keeps the field of its edge
        cap = np.minimum(1.0, _NFW_KAPPA_CAP / np.maximum(kappa, 1e-12))
        g = np.hypot(gamma[..., 0], gamma[..., 1]) / (1 - kappa * cap)
        cap = np.minimum(cap, _NFW_G_CAP / np.maximum(g, 1e-12))
        return gamma * cap[..., None], kappa * cap
