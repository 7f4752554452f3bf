"""Galaxy colours from spectral templates at a redshift, with GalSim's SEDs and bandpasses.

GalSim ships the four Coleman, Wu & Weedman (1980) templates extended to the UV and IR
(``CWW_E_ext``, ``CWW_Sbc_ext``, ``CWW_Scd_ext``, ``CWW_Im_ext``: elliptical to irregular), the
LSST ``ugrizy`` throughputs and HST/ACS F814W (the COSMOS catalog's band). The templates are read
from the installed GalSim at run time. A galaxy's spectral type is a continuous ``t`` in
``[0, 3]`` (0 = E, 1 = Sbc, 2 = Scd, 3 = Im); magnitudes between two templates are interpolated
linearly in ``t`` and in redshift on a precomputed grid.
"""

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bliss.errors import BlissConfigError, BlissValueError

__all__ = ["LSST_BANDPASSES", "TEMPLATES", "TemplateColors"]

TEMPLATES = ("CWW_E_ext", "CWW_Sbc_ext", "CWW_Scd_ext", "CWW_Im_ext")
#: GalSim's bandpass files of LSST's bands and of the COSMOS detection band
LSST_BANDPASSES = {band: f"LSST_{band}.dat" for band in "ugrizy"}
F814W_BANDPASS = "ACS_wfc_F814W.dat"


class TemplateColors:
    """AB magnitudes of the CWW templates through a set of bandpasses, on a redshift grid.

    Args:
        bandpasses: band -> GalSim bandpass file (a name in GalSim's ``share/bandpasses`` or a
            path; wavelengths in nm) [default: LSST ``ugrizy`` plus ``F814W``].
        z_max: largest redshift of the grid [default: 6; COSMOS photo-z reach 6].
        z_step: grid step [default: 0.02].

    Raises:
        BlissConfigError: a bandpass file GalSim cannot read, or a grid that is not positive.

    Example:
        >>> colors = TemplateColors({"r": "LSST_r.dat", "i": "LSST_i.dat"})
        >>> mags = colors.magnitudes(torch.tensor([0.0]), torch.tensor([1.0]))  # an E at z = 1
        >>> bool(mags[0, 0] - mags[0, 1] > 1.0)  # red: the 4000 A break lies between r and i
        True
    """

    def __init__(
        self,
        bandpasses: Mapping[str, str] | None = None,
        z_max: float = 6.0,
        z_step: float = 0.02,
    ) -> None:
        if not (z_max > 0 and 0 < z_step <= z_max):
            raise BlissConfigError(f"z_max={z_max}, z_step={z_step}; expected 0 < z_step <= z_max.")
        bandpasses = dict(bandpasses or {**LSST_BANDPASSES, "F814W": F814W_BANDPASS})
        self.bands = tuple(bandpasses)
        self.z_step = float(z_step)
        self.redshifts = np.arange(0.0, z_max + z_step / 2, z_step)
        self.table = torch.from_numpy(
            _magnitude_grid(tuple(bandpasses.values()), tuple(self.redshifts))
        )  # t z c

    def band_index(self, band: str) -> int:
        """Channel of ``band`` in :meth:`magnitudes`.

        Raises:
            BlissConfigError: the colours were not computed for ``band``.
        """
        if band not in self.bands:
            raise BlissConfigError(
                f"band {band!r} has no bandpass here (bands {list(self.bands)}); add its GalSim "
                "bandpass file to the bandpasses mapping."
            )
        return self.bands.index(band)

    def magnitudes(self, template: Tensor, redshift: Tensor) -> Tensor:
        """AB magnitudes (up to one constant per template) of galaxies. Shape ``n c``.

        Args:
            template: spectral type ``t`` in ``[0, 3]``. Shape ``n``.
            redshift: in ``[0, z_max]``. Shape ``n``.

        Raises:
            BlissValueError: a type or redshift outside the grid.
        """
        t, z = template.double(), redshift.double()
        n_types, n_z, _ = self.table.shape
        if ((t < 0) | (t > n_types - 1) | (z < 0) | (z > self.redshifts[-1] + 1e-9)).any():
            raise BlissValueError(
                f"template types must lie in [0, {n_types - 1}] and redshifts in "
                f"[0, {self.redshifts[-1]:g}]; got types {t.min():.3g}..{t.max():.3g} and "
                f"redshifts {z.min():.3g}..{z.max():.3g}."
            )
        ti = t.floor().long().clamp(max=n_types - 2)
        zi = (z / self.z_step).floor().long().clamp(max=n_z - 2)
        wt = (t - ti)[:, None]
        wz = (z / self.z_step - zi)[:, None]
        corner = self.table  # t z c
        low = corner[ti, zi] * (1 - wz) + corner[ti, zi + 1] * wz
        high = corner[ti + 1, zi] * (1 - wz) + corner[ti + 1, zi + 1] * wz
        return (low * (1 - wt) + high * wt).float()


@functools.lru_cache(maxsize=4)
def _magnitude_grid(files: tuple[str, ...], redshifts: tuple[float, ...]) -> np.ndarray:
    """Magnitudes of every template at every redshift through every bandpass. Shape ``t z c``."""
    import galsim

    bandpasses = []
    for name in files:
        try:
            bandpass = galsim.Bandpass(str(name), wave_type="nm")
        except (OSError, ValueError) as err:
            raise BlissConfigError(
                f"bandpass {name!r} cannot be read ({err}); expected a file in GalSim's "
                f"share/bandpasses ({Path(galsim.meta_data.share_dir) / 'bandpasses'}) or a path "
                "to a two-column file of wavelength (nm) and throughput."
            ) from err
        bandpasses.append(bandpass.withZeropoint("AB"))
    grid = np.empty((len(TEMPLATES), len(redshifts), len(files)))
    for i, name in enumerate(TEMPLATES):
        sed = galsim.SED(f"{name}.sed", wave_type="Ang", flux_type="flambda")
        for j, z in enumerate(redshifts):
            shifted = sed.atRedshift(z)
            grid[i, j] = [shifted.calculateMagnitude(b) for b in bandpasses]
    return grid
