"""COSMOS galaxies with redshift-dependent colours: a DC2-like galaxy population for a prior.

Each galaxy of a :class:`~bliss.simulator.prior.CatalogPrior` that uses this population (its
``galaxy_shape_catalog``) takes a COSMOS galaxy of about its reference-band magnitude: its bulge +
disk shape and size, its photometric redshift (COSMOS ``zphot``) and a spectral type, and its
colours are those of that type's template at that redshift (:class:`TemplateColors`) plus a
small scatter. Sizes, shapes, redshifts and colours stay correlated with magnitude and with each
other as on the sky.

The spectral type is not in the catalog; it is assigned once per COSMOS galaxy (seeded) from its
disk share: ``t = 3 disk_frac + N(0, type_scatter)``, clipped to ``[0, 3]``, so bulge-dominated
galaxies take the elliptical template and pure disks the Sbc to Im ones. This is a declared
assumption, not a fit; it gives the red sequence and the blue cloud their usual colours.

The catalog stops at F814W = 25.2, so in the reference band it is complete only to
``m_complete = 25.2 + q5(m_ref - F814W)`` (the 5th percentile of the colour: the bluest
galaxies; r = 25.4 for LSST r); fainter, only red galaxies remain. A galaxy fainter than
``m_complete`` therefore takes the shape, redshift and type of a galaxy within the window below
``m_complete`` and scales its half-light radii by ``10 ** (-0.4 size_slope (m - m_cosmos))``:
the size-luminosity relation ``hlr ~ L ** size_slope``, which this extrapolates. Its redshift is
that of galaxies at the completeness limit, lower than the truth at r ~ 27.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bliss.catalog import GALAXY_KEYS, SERSIC_KEY
from bliss.errors import BlissConfigError
from bliss.simulator.cosmos import draw_in_window, load_cosmos_galaxies
from bliss.simulator.template_colors import F814W_BANDPASS, LSST_BANDPASSES, TemplateColors

__all__ = ["PROFILES", "CosmosPopulation"]

#: galaxy profile families a population can draw
PROFILES = ("bulge_disk", "sersic")

_N_TYPES = 3.0  # t runs over [0, 3]: E, Sbc, Scd, Im
_HLR_KEYS = ("disk_hlr_arcsec", "bulge_hlr_arcsec")


class CosmosPopulation:
    """COSMOS galaxies with template colours, drawn to match reference-band magnitudes.

    Args:
        bands: the survey's bands in channel order (``${survey.bands}``).
        reference_band: the band whose magnitudes are matched (``${survey.reference_band}``).
        bandpasses: band -> GalSim bandpass file for every band [default: LSST's for
            ``ugrizy``].
        path: the COSMOS catalog [default: None, the copy installed with ``fpfs``].
        mag_window: half-width of the magnitude window, mag [default: 0.25].
        type_scatter: scatter of the spectral type around ``3 disk_frac`` [default: 0.5].
        color_scatter: per-band Gaussian scatter added to the template colours, mag
            [default: 0.05; photometric templates do not fit real galaxies better].
        size_slope: ``size_slope`` of the module docstring [default: 0.3].
        seed: seed of the spectral types [default: 0].
        redshift_key: the catalog key that receives each galaxy's redshift, or None for none
            [default: None; a photometric-redshift study names one and adds a factor for it].
        profile: ``"bulge_disk"`` (the catalog's bulge + disk fit, the family models are trained
            on) or ``"sersic"`` (its single-Sersic fit, with the fit's own index under
            :data:`~bliss.catalog.tile.SERSIC_KEY`: a test set off the training profile family;
            draw it with ``simulator=galsim``) [default: ``"bulge_disk"``]. The spectral type
            comes from the bulge + disk fit either way.

    Raises:
        BlissConfigError: a band without a bandpass, a non-positive window, a negative scatter.
    """

    def __init__(
        self,
        bands: tuple[str, ...] | list[str],
        reference_band: str,
        bandpasses: Mapping[str, str] | None = None,
        path: str | Path | None = None,
        mag_window: float = 0.25,
        type_scatter: float = 0.5,
        color_scatter: float = 0.05,
        size_slope: float = 0.3,
        seed: int = 0,
        redshift_key: str | None = None,
        profile: str = "bulge_disk",
    ) -> None:
        if profile not in PROFILES:
            raise BlissConfigError(
                f"galaxy_shape_catalog.profile={profile!r}; expected one of {list(PROFILES)}."
            )
        if not mag_window > 0:
            raise BlissConfigError(
                f"galaxy_shape_catalog.mag_window={mag_window}; expected a positive width in mag."
            )
        for key, value in (("type_scatter", type_scatter), ("color_scatter", color_scatter)):
            if not value >= 0:
                raise BlissConfigError(f"galaxy_shape_catalog.{key}={value}; expected >= 0.")
        self.bands = tuple(bands)
        if reference_band not in self.bands:
            raise BlissConfigError(
                f"reference_band={reference_band!r} is not one of the bands {list(self.bands)}."
            )
        passbands = dict(bandpasses or LSST_BANDPASSES)
        missing = [b for b in self.bands if b not in passbands]
        if missing:
            raise BlissConfigError(
                f"galaxy_shape_catalog.bandpasses has no file for bands {missing}; give a GalSim "
                "bandpass file per survey band (the LSST ugrizy ones are the default)."
            )
        self.templates = TemplateColors(
            {**{b: passbands[b] for b in self.bands}, "F814W": F814W_BANDPASS}
        )
        galaxies = load_cosmos_galaxies(path)
        keep = np.isfinite(galaxies["redshift"]) & (galaxies["redshift"] >= 0)
        redshift = np.clip(galaxies["redshift"][keep], 0, self.templates.redshifts[-1])
        rng = np.random.default_rng(seed)
        disk = galaxies["disk_frac"][keep]
        types = np.clip(_N_TYPES * disk + type_scatter * rng.normal(size=len(disk)), 0, _N_TYPES)
        mags = self.templates.magnitudes(torch.from_numpy(types), torch.from_numpy(redshift))
        ref = self.templates.band_index(reference_band)
        colors = mags[:, : len(self.bands)] - mags[:, ref : ref + 1]
        to_ref = (mags[:, ref] - mags[:, -1]).double().numpy()  # m_ref - F814W
        ref_mag = galaxies["mag"][keep] + to_ref
        self.complete_mag = float(galaxies["mag"][keep].max() + np.quantile(to_ref, 0.05))
        order = np.argsort(ref_mag, kind="stable")
        self.mag = torch.from_numpy(ref_mag[order])
        columns = {key: galaxies[key] for key in GALAXY_KEYS}
        self.sersic_n = None
        if profile == "sersic":
            q, hlr = galaxies["sersic_q"], galaxies["sersic_hlr_arcsec"]
            columns = {
                "disk_frac": np.zeros_like(q),
                "beta_rad": galaxies["sersic_beta_rad"],
                "disk_q": q,
                "disk_hlr_arcsec": hlr,
                "bulge_q": q,
                "bulge_hlr_arcsec": hlr,
            }
            self.sersic_n = torch.from_numpy(galaxies["sersic_n"][keep][order].astype(np.float32))
        self.shapes = torch.from_numpy(
            np.stack([columns[k][keep][order] for k in GALAXY_KEYS], axis=-1).astype(np.float32)
        )
        self.redshift = torch.from_numpy(redshift[order].astype(np.float32))
        self.colors = colors[torch.from_numpy(order)]
        self.mag_window, self.color_scatter = float(mag_window), float(color_scatter)
        self.size_slope, self.redshift_key = float(size_slope), redshift_key
        self.reference_index = ref

    def sample(self, ref_mag: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Galaxies of these reference-band magnitudes (``n``).

        Returns:
            Every key of :data:`GALAXY_KEYS` (``n 1``), ``colors`` (magnitude minus the
            reference band's, per band, ``n c``), with ``redshift_key`` that key (``n 1``) and
            with ``profile="sersic"`` :data:`~bliss.catalog.tile.SERSIC_KEY` (``n 1``).
        """
        target = ref_mag.double()
        clamped = target.clamp(self.mag[0], self.complete_mag - self.mag_window)
        index = draw_in_window(self.mag, clamped, self.mag_window, generator)
        rows = self.shapes[index].clone()
        shrink = torch.pow(10.0, -0.4 * self.size_slope * (target - self.mag[index])).float()
        for key in _HLR_KEYS:
            rows[:, GALAXY_KEYS.index(key)] *= shrink
        scatter = self.color_scatter * torch.randn(
            len(target), len(self.bands), generator=generator
        )
        scatter[:, self.reference_index] = 0.0
        drawn = {key: rows[:, i : i + 1] for i, key in enumerate(GALAXY_KEYS)}
        drawn["colors"] = self.colors[index] + scatter
        if self.redshift_key is not None:
            drawn[self.redshift_key] = self.redshift[index][:, None]
        if self.sersic_n is not None:
            drawn[SERSIC_KEY] = self.sersic_n[index][:, None]
        return drawn
