"""Catalog prior + observing conditions + renderer + noise = simulated survey images."""

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from bliss.catalog import GALAXY_KEYS, SERSIC_KEY, FullCatalog, TileCatalog
from bliss.catalog.convert import nmgy_per_electron
from bliss.errors import BlissConfigError
from bliss.protocols import ObservingSetup
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.lensing import (
    ConstantLensing,
    GridLensing,
    LensingGeometry,
    LensingPrior,
    galaxy_ellipticity,
)
from bliss.simulator.noise import NoiseModel, add_sky_and_noise
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.psf_shape import moffat_psf_shape, psf_shape
from bliss.simulator.render import DEVAUCOULEURS_N, GalsimRenderer, image_psf, moffat_psf
from bliss.simulator.torch_render import TorchRenderer, add_sky_and_noise_torch

__all__ = ["ImageSimulator"]


class ImageSimulator:
    """Draw catalogs from the prior and render them as noisy multi-band survey images.

    Sources are drawn on a grid larger than the image by ``margin_px`` on every side, so light
    from sources just outside the image spills in as it would on the sky; only sources whose
    centre is inside the image are in the returned catalog.

    Args:
        survey: bands, pixel scale, PSF, sky and zero points.
        prior: the catalog prior (its bands must be the survey's).
        renderer: the GalSim renderer (the reference, one image at a time) or the PyTorch one
            (whole batches, CPU or CUDA).
        conditions: per-image seeing and sky.
        image_size: image side in pixels (square images); a multiple of ``prior.tile_slen``.
        noise: ``"poisson"`` (default), ``"gaussian"`` or ``"none"``.
        margin_px: width of the border in which unseen sources are also drawn [default: 8].
        dither_px: per-band sub-pixel shifts are drawn uniformly in ``[-dither_px, dither_px]``
            (row and col) and added to every source in that band [default: 0].
        psf_images: optional mapping band -> 2-D PSF image (pixel scale of the survey) used
            instead of the survey's Moffat profile; it is dilated to the drawn FWHM.
        lensing: draws a weak-lensing field per image that shears and magnifies every galaxy
            (:mod:`bliss.simulator.lensing`); the batch then also holds its truth under
            ``fields/<key>`` and the catalog's galaxy fluxes are the magnified ones
            [default: none].
        ellipticity: add each galaxy's ellipticity as it appears, lensing included, to the
            catalog as ``ellipticity`` (``(e1, e2)``, the second-moment ellipticity of
            :func:`bliss.simulator.lensing.galaxy_ellipticity`; 0 for stars) [default: False].

    Example:
        >>> from bliss.surveys import ParametricSurvey
        >>> survey = ParametricSurvey("toy", ["r"], "r", 0.4, 3.5, {"r": 1.3}, {"r": 100.0}, {"r": 28.0})
        >>> prior = CatalogPrior(["r"], "r", 0.4, density_per_arcmin2=500.0)
        >>> simulator = ImageSimulator(survey, prior, GalsimRenderer(),
        ...     ObservingConditions(survey, "r"), image_size=16)
        >>> simulator.simulate(2, seed=0)["images"].shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        survey: ObservingSetup,
        prior: CatalogPrior,
        renderer: GalsimRenderer | TorchRenderer,
        conditions: ObservingConditions,
        image_size: int,
        noise: str = "poisson",
        margin_px: int = 8,
        dither_px: float = 0.0,
        psf_images: Mapping[str, np.ndarray] | None = None,
        lensing: LensingPrior | None = None,
        ellipticity: bool = False,
    ) -> None:
        if tuple(prior.bands) != tuple(survey.bands):
            raise BlissConfigError(
                f"prior.bands={list(prior.bands)} differ from survey.bands={list(survey.bands)}; "
                "the prior must use the survey's bands (prior.bands: ${survey.bands})."
            )
        if image_size < 1 or image_size % prior.tile_slen:
            raise BlissConfigError(
                f"simulator.image_size={image_size} is not a positive multiple of "
                f"prior.tile_slen={prior.tile_slen}; pick e.g. "
                f"{max(prior.tile_slen, image_size // prior.tile_slen * prior.tile_slen)}."
            )
        if margin_px < 0 or dither_px < 0:
            raise BlissConfigError(
                f"simulator.margin_px={margin_px}, simulator.dither_px={dither_px}; both must be >= 0."
            )
        try:
            self.noise = NoiseModel(noise)
        except ValueError as err:
            raise BlissConfigError(
                f"simulator.noise={noise!r}; expected one of {[m.value for m in NoiseModel]}."
            ) from err
        if lensing is not None:
            lensing.check_geometry(image_size, prior.tile_slen)
        if getattr(conditions, "fwhm_gradient", None) is not None and isinstance(
            renderer, TorchRenderer
        ):
            raise BlissConfigError(
                "simulator.conditions.fwhm_gradient varies the PSF within an image, which the "
                "torch renderer cannot draw (one PSF per image and band); use simulator=galsim."
            )
        self.lensing = lensing
        self.ellipticity = ellipticity
        self.survey = survey
        self.prior = prior
        self.renderer = renderer
        self.conditions = conditions
        self.image_size = image_size
        self.margin_tiles = math.ceil(margin_px / prior.tile_slen)
        self.dither_px = dither_px
        self.magzero = np.array([survey.magzero(b) for b in survey.bands])
        self.psf_images = {
            band: (
                image_psf(np.asarray(img), survey.pixel_scale_arcsec),
                survey.psf_fwhm_arcsec(band),
            )
            for band, img in (psf_images or {}).items()
        }
        # observed-conditions table (row, band) -> GalSim profile: building one costs more than
        # rendering an 80 px image, and a table has only a few dozen rows
        self._observed_profiles: dict[tuple[int, int], object] = {}
        # the same images for TorchRenderer: band index -> (image, FWHM it has)
        self._psf_arrays = {
            index: (torch.as_tensor(np.asarray(psf_images[band])), survey.psf_fwhm_arcsec(band))
            for index, band in enumerate(survey.bands)
            if band in (psf_images or {})
        }
        # the shape of the PSF an image without PSF images of its own is rendered with
        self._nominal_shape = torch.from_numpy(
            np.stack(
                [
                    psf_shape(np.asarray(psf_images[band]))
                    if band in (psf_images or {})
                    else moffat_psf_shape(
                        survey.psf_beta, survey.psf_fwhm_arcsec(band), survey.pixel_scale_arcsec
                    )
                    for band in survey.bands
                ]
            )
        )

    @property
    def n_tiles(self) -> int:
        """Tiles per image side."""
        return self.image_size // self.prior.tile_slen

    @property
    def render_device(self) -> torch.device:
        """Where images are rendered: the torch renderer's device, else the CPU."""
        device = getattr(self.renderer, "device", None)
        return torch.device("cpu") if device is None else device

    def simulate(
        self, n_images: int, seed: int, on_device: bool = False
    ) -> dict[str, Tensor | TileCatalog]:
        """Simulate ``n_images`` images from one integer seed.

        Args:
            n_images: images in the batch.
            seed: the batch's seed; the same seed gives the same batch.
            on_device: return everything on :attr:`render_device` (a CUDA renderer's GPU), as
                on-the-fly training wants, instead of the CPU, as shards want.

        Returns:
            ``images`` (``b c h w``, electrons, sky included), ``background`` (``b c``, electrons
            per pixel), ``psf_fwhm_arcsec`` (``b c``; ``b c h w``, the FWHM at every pixel, where
            the conditions vary the PSF within images), ``psf_shape`` (``b c 3``, the PSF's
            ellipticity and wings, :mod:`bliss.simulator.psf_shape`), ``dither_px`` (``b c 2``)
            and ``catalog`` (a :class:`TileCatalog` of the sources inside the image); with
            lensing also ``fields/shear`` (``b 1 1 2``) and ``fields/convergence``
            (``b 1 1 1``), the image means, and with the prior's ``region_px``
            ``fields/shear_map`` and ``fields/convergence_map`` (``b hr wr d``).
        """
        seeds = np.random.SeedSequence(seed).spawn(2)
        generator = torch.Generator().manual_seed(int(seeds[0].generate_state(1)[0]))
        n_padded = self.n_tiles + 2 * self.margin_tiles
        padded = self.prior.sample(n_images, n_padded, n_padded, generator)
        conditions = self.conditions.sample(n_images, generator)
        n_bands = len(self.survey.bands)
        dither = (2 * torch.rand(n_images, n_bands, 2, generator=generator) - 1) * self.dither_px
        fields = None
        if self.lensing is not None:
            fields = self.lensing.sample(n_images, self.lensing_geometry, generator)
        return self.observe(padded, conditions, dither, seeds[1], fields, on_device)

    @property
    def lensing_geometry(self) -> LensingGeometry:
        """The image a lensing field is drawn for: size, margin and pixel scale."""
        margin_px = self.margin_tiles * self.prior.tile_slen
        return LensingGeometry(
            self.image_size, self.image_size, margin_px, self.survey.pixel_scale_arcsec
        )

    def observe(
        self,
        padded: TileCatalog,
        conditions: dict[str, Tensor],
        dither: Tensor,
        noise_seed: int | np.random.SeedSequence,
        lensing: Sequence[ConstantLensing | GridLensing] | None = None,
        on_device: bool = False,
    ) -> dict[str, Tensor | TileCatalog]:
        """Render given catalogs under given conditions (what :meth:`simulate` does after drawing).

        A test set that controls the scene, e.g. one intrinsic scene rotated and sheared both
        ways (shape-noise cancellation), draws once and observes several times.

        Args:
            padded: tile catalogs on the grid with margins (``image_size / tile_slen + 2`` margin
                tiles per side), as ``prior.sample`` draws them.
            conditions: ``ObservingConditions.sample``'s output for these images.
            dither: per-band shifts, px. Shape ``b c 2``.
            noise_seed: seed of the noise.
            lensing: one lensing field per image (:mod:`bliss.simulator.lensing`) [default: none].
            on_device: see :meth:`simulate`.

        Returns:
            As :meth:`simulate`.
        """
        seed = (
            noise_seed
            if isinstance(noise_seed, np.random.SeedSequence)
            else np.random.SeedSequence(int(noise_seed))
        )
        fields: dict[str, Tensor] = {}
        if lensing is not None:
            padded, fields = self._lens(padded, lensing)
        full = padded.to_full_catalog()
        if self.ellipticity:
            padded = padded.replace(ellipticity=self._ellipticity(padded))
        if isinstance(self.renderer, TorchRenderer):
            images = self._render_torch(full, conditions, dither, seed)
        else:
            images = self._render_galsim(full, conditions, dither, np.random.default_rng(seed))
        if "lensing" in padded:  # the truth holds the fluxes the galaxies appear with
            data = padded.to_dict()
            data["fluxes"] = data["fluxes"] * data.pop("lensing")[..., 2:]
            padded = TileCatalog(padded.tile_slen, data)
        inner = slice(self.margin_tiles, self.margin_tiles + self.n_tiles)
        device = self.render_device if on_device else torch.device("cpu")
        return {
            **{key: value.to(device) for key, value in fields.items()},
            "images": images.to(device),
            "background": conditions["sky_electrons"].float().to(device),
            "psf_fwhm_arcsec": self._fwhm_or_map(conditions).to(device),
            "psf_shape": self._psf_shape(conditions, len(images)).to(device),
            "dither_px": dither.float().to(device),
            "catalog": padded.crop_tiles(inner, inner).to(device),
        }

    def _lens(
        self, padded: TileCatalog, fields: Sequence[ConstantLensing | GridLensing]
    ) -> tuple[TileCatalog, dict[str, Tensor]]:
        """The catalog with each galaxy's ``lensing`` ``(g1, g2, mu)`` (``b ht wt m 3``) and the truth."""
        plocs = padded.plocs().double().numpy() - self.lensing_geometry.margin_px
        lensing = torch.from_numpy(np.stack([f.at(p) for f, p in zip(fields, plocs, strict=True)]))
        unlensed = torch.tensor([0.0, 0.0, 1.0], dtype=lensing.dtype)
        lensing = torch.where(padded.galaxy_mask.unsqueeze(-1), lensing, unlensed).float()
        truth = [field.region_means(1, 1) for field in fields]
        out = {
            "fields/shear": torch.from_numpy(np.stack([t[0] for t in truth])).float(),
            "fields/convergence": torch.from_numpy(np.stack([t[1] for t in truth])).float(),
        }
        region_px = None if self.lensing is None else self.lensing.region_px
        if region_px is not None:
            n_regions = self.image_size // region_px
            maps = [field.region_means(n_regions, n_regions) for field in fields]
            out["fields/shear_map"] = torch.from_numpy(np.stack([m[0] for m in maps])).float()
            out["fields/convergence_map"] = torch.from_numpy(np.stack([m[1] for m in maps])).float()
        return padded.replace(lensing=lensing), out

    def _ellipticity(self, padded: TileCatalog) -> Tensor:
        """Every galaxy's ellipticity as it appears (``b ht wt m 2``; 0 for stars)."""
        galaxy = padded.galaxy_mask
        params = torch.cat([padded[key][galaxy] for key in GALAXY_KEYS], -1).double().numpy()
        lensing = padded["lensing"][galaxy].double().numpy() if "lensing" in padded else None
        sersic_n = getattr(self.renderer, "bulge_sersic_n", DEVAUCOULEURS_N)
        if SERSIC_KEY in padded:
            sersic_n = padded[SERSIC_KEY][galaxy][:, 0].double().numpy()
        values = galaxy_ellipticity(params, lensing, sersic_n)
        out = torch.zeros(*galaxy.shape, 2)
        out[galaxy] = torch.from_numpy(values).float()
        return out

    def _render_galsim(
        self,
        full: FullCatalog,
        conditions: dict[str, Tensor],
        dither: Tensor,
        rng: np.random.Generator,
    ) -> Tensor:
        """Noisy images (``b c h w``), one :class:`GalsimRenderer` call per image."""
        n_images, n_bands = dither.shape[:2]
        offset_px = self.margin_tiles * self.prior.tile_slen
        electrons_per_nmgy = _electrons_per_nmgy(self.magzero)
        images = np.empty((n_images, n_bands, self.image_size, self.image_size), dtype=np.float32)
        for index in range(n_images):
            n_sources = int(full["n_sources"][index])
            plocs = full["plocs"][index, :n_sources].numpy().astype(np.float64) - offset_px
            fluxes = full["fluxes"][index, :n_sources].numpy().astype(np.float64)
            galaxy = np.concatenate(
                [full[key][index, :n_sources].numpy() for key in GALAXY_KEYS], axis=-1
            ).astype(np.float64)
            is_galaxy = full["source_type"][index, :n_sources, 0].numpy() > 0.5
            lensing = full["lensing"][index, :n_sources].numpy() if "lensing" in full else None
            sersic_n = (
                full[SERSIC_KEY][index, :n_sources, 0].numpy() if SERSIC_KEY in full else None
            )
            psfs = self._image_psfs(conditions, index)
            sources = {
                "plocs": plocs,
                "flux_electrons": fluxes * electrons_per_nmgy,
                "is_galaxy": is_galaxy,
                "galaxy_params": galaxy,
                "lensing": lensing,
                "bulge_sersic_n": sersic_n,
            }
            settings = {
                "image_shape": (self.image_size, self.image_size),
                "pixel_scale_arcsec": self.survey.pixel_scale_arcsec,
                "band_offsets_px": dither[index].numpy().astype(np.float64)
                if self.dither_px
                else None,
            }
            if "psf_fwhm_gradient" not in conditions:
                clean = self.renderer.render(**sources, psfs=psfs, **settings)
            else:
                gradient = conditions["psf_fwhm_gradient"][index].double().numpy()
                clean = self._render_varying(sources, psfs, settings, gradient)
            sky = conditions["sky_electrons"][index].numpy().astype(np.float64)
            add_sky_and_noise(clean, sky, self.noise, rng, out=images[index])
        return torch.from_numpy(images)

    def _render_torch(
        self,
        full: FullCatalog,
        conditions: dict[str, Tensor],
        dither: Tensor,
        seed: np.random.SeedSequence,
    ) -> Tensor:
        """Noisy images (``b c h w``, on the rendering device), the whole batch in one :class:`TorchRenderer` call."""
        if SERSIC_KEY in full:
            raise BlissConfigError(
                f"the prior draws a Sersic index per galaxy (`{SERSIC_KEY}`), which the torch "
                "renderer cannot draw (its bulges are de Vaucouleurs); use simulator=galsim."
            )
        electrons_per_nmgy = torch.from_numpy(_electrons_per_nmgy(self.magzero)).float()
        data = {key: full[key] for key in ("n_sources", "source_type", *GALAXY_KEYS)}
        data["plocs"] = full["plocs"] - self.margin_tiles * self.prior.tile_slen
        data["fluxes"] = full["fluxes"] * electrons_per_nmgy
        clean = self.renderer.render(
            FullCatalog(self.image_size, self.image_size, data),
            conditions["psf_fwhm_arcsec"],
            self.survey.pixel_scale_arcsec,
            psf_beta=self.survey.psf_beta,
            psf_images=self._psf_arrays,
            band_offsets_px=dither if self.dither_px else None,
            image_psfs=(conditions["psf_images"], conditions["psf_dilation"])
            if "psf_images" in conditions
            else None,
            lensing=full["lensing"] if "lensing" in full else None,
        )
        generator = torch.Generator(clean.device).manual_seed(int(seed.generate_state(1)[0]))
        sky = conditions["sky_electrons"]
        # the renderer's canvas is ours: drawing the noise in place spares a fresh array
        return add_sky_and_noise_torch(clean, sky, self.noise, generator, inplace=True)

    def _render_varying(
        self, sources: dict, psfs: list, settings: dict, gradient: np.ndarray
    ) -> np.ndarray:
        """Clean image whose PSF is dilated linearly across it (``gradient``: per side, row and col).

        Each source takes the PSF dilated to its place, rounded to 0.5 % of the width (sources
        with one rounded factor are drawn together); their images add up.
        """
        plocs = sources["plocs"]
        factor = _fwhm_factor(plocs, gradient, self.image_size)
        steps = np.round(factor / _DILATION_STEP).astype(np.int64)
        clean = None
        for step in np.unique(steps):
            chosen = steps == step
            part = {key: None if value is None else value[chosen] for key, value in sources.items()}
            dilated = [psf.dilate(float(step * _DILATION_STEP)) for psf in psfs]
            image = self.renderer.render(**part, psfs=dilated, **settings)
            clean = image if clean is None else clean + image
        if clean is None:  # no sources
            clean = self.renderer.render(**sources, psfs=psfs, **settings)
        return clean

    def _fwhm_or_map(self, conditions: dict[str, Tensor]) -> Tensor:
        """The FWHM per image and band (``b c``), or at every pixel (``b c h w``)."""
        fwhm = conditions["psf_fwhm_arcsec"].float()
        if "psf_fwhm_gradient" not in conditions:
            return fwhm
        centres = np.arange(self.image_size) + 0.5
        rows, cols = np.meshgrid(centres, centres, indexing="ij")
        places = np.stack([rows.ravel(), cols.ravel()], axis=-1)
        maps = [
            _fwhm_factor(places, g, self.image_size).reshape(self.image_size, self.image_size)
            for g in conditions["psf_fwhm_gradient"].double().numpy()
        ]
        factor = torch.from_numpy(np.stack(maps)).float()
        return fwhm[:, :, None, None] * factor[:, None]

    def _psf_shape(self, conditions: dict[str, Tensor], n_images: int) -> Tensor:
        """PSF shape descriptors of every image and band. Shape ``b c 3``."""
        if "psf_shape" in conditions:
            return conditions["psf_shape"].float()
        return self._nominal_shape.float().expand(n_images, -1, -1).clone()

    def _image_psfs(self, conditions: dict[str, Tensor], index: int) -> list:
        """The GalSim PSF of every band of image ``index``."""
        if "psf_images" in conditions:  # observed or parametric, widened by psf_dilation
            row = int(conditions["observed_row"][index])
            dilation = float(conditions["psf_dilation"][index])
            return [
                (
                    self._observed_psf(row, band, image)
                    if row >= 0
                    else image_psf(image.numpy(), self.survey.pixel_scale_arcsec)
                ).dilate(dilation)
                for band, image in enumerate(conditions["psf_images"][index])
            ]
        return [
            self._psf(band, float(conditions["psf_fwhm_arcsec"][index, b]))
            for b, band in enumerate(self.survey.bands)
        ]

    def _observed_psf(self, row: int, band: int, image: Tensor):  # noqa: ANN202 - galsim object
        """The interpolated profile of one observed PSF, built once per table row and band."""
        key = (row, band)
        if key not in self._observed_profiles:
            self._observed_profiles[key] = image_psf(image.numpy(), self.survey.pixel_scale_arcsec)
        return self._observed_profiles[key]

    def _psf(self, band: str, fwhm_arcsec: float):  # noqa: ANN202 - galsim object
        if band in self.psf_images:
            profile, nominal_fwhm = self.psf_images[band]
            return profile.dilate(fwhm_arcsec / nominal_fwhm)
        return moffat_psf(fwhm_arcsec, self.survey.psf_beta)


_DILATION_STEP = 0.005  # rounding of a varying PSF's dilation: 0.5 % of the FWHM


def _fwhm_factor(places: np.ndarray, gradient: np.ndarray, size: int) -> np.ndarray:
    """``1 + gradient . (place - centre) / size`` at pixel places ``n 2`` (row, col). Shape ``n``."""
    return 1.0 + ((np.asarray(places, dtype=np.float64) - size / 2) / size) @ gradient


def _electrons_per_nmgy(magzero: np.ndarray) -> np.ndarray:
    """Electrons per nanomaggy in each band. Shape: ``c``."""
    return np.array([1.0 / nmgy_per_electron(float(m)) for m in magzero])
