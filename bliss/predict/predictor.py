"""Images of any size -> posterior catalogs (:class:`~bliss.catalog.FullCatalog`), chunk by chunk."""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from bliss.catalog import FullCatalog, TileCatalog
from bliss.encoder.encoder import Encoder
from bliss.errors import BlissConfigError
from bliss.posterior.variational import PriorShift
from bliss.predict.companions import widen_for_companions
from bliss.predict.confusion import measure_confusion, widen_for_confusion
from bliss.predict.density import (
    DensitySettings,
    DensityShift,
    estimate_density,
    estimate_galaxy_fraction,
    merge_unresolved,
)
from bliss.predict.galaxy_photometry import refine_galaxy_fluxes
from bliss.predict.psf_photometry import nominal_psf_models, refine_star_fluxes
from bliss.predict.region_quantities import RegionEstimate, region_estimates
from bliss.predict.region_turns import DIHEDRAL_TURNS, turned_region_params
from bliss.predict.saturated_stars import recover_saturated_stars, with_saturated_stars
from bliss.predict.shape_ellipticity import (
    add_drawn_ellipticity,
    add_shape_ellipticity,
    drop_shape_parameters,
    shape_draws,
    shape_parameter_columns,
)
from bliss.predict.sky import refit_sky
from bliss.protocols import ModelConditions, ObservingSetup, SurveyImage

__all__ = [
    "Predictor",
    "PredictorSettings",
    "StarPhotometry",
    "build_predictor",
    "check_threshold",
    "image_psf_shape",
]

#: saturated stars' fits evaluate an image's PSF model once per cell of this side: their
#: neighbours, spread over the image, would otherwise evaluate it thousands of times
SATURATED_PSF_CELL_PX = 16.0
FLUX_KEY = "fluxes"  # catalog key of the per-band fluxes, nanomaggies
LOCS_KEY = "locs"  # tile catalog key of positions within a tile, fraction of the tile
PRECISIONS = ("32-true", "bf16-mixed")


class Predictor:
    """Run a trained encoder over a whole image of any size.

    The image is padded to whole tiles and its features are computed window by window; the
    checkerboard groups then run over the whole image at once. Two ways to cut windows:

    * ``window_px`` set (the default in ``mode=predict``: the image size the model was trained on):
      windows of that size on a fixed grid anchored at the image origin, overlapping by
      ``margin_px`` on each side, of which only the central core is kept. Each tile then sees
      the same kind of context it saw in training. A fully convolutional network trained on
      small images behaves differently deep inside a large image, where its receptive field
      (139 px for the shipped model) no longer reaches an image edge: on 512 x 512 px fields an
      earlier batch-norm model's precision fell from 0.96 to 0.42 when run on the whole image at
      once. The layer-norm model shipped now does not depend on it: windows of 80 (its training
      size), 144 and 272 px give the same quality-gate metrics within 0.001.
    * ``window_px=None``: chunks of ``chunk_px`` extended by half the receptive field, so the
      features are exactly those of a whole-image pass and chunk borders change nothing.

    Either way ``batch_chunks`` only bounds memory: results do not depend on it.

    Args:
        encoder: a trained :class:`~bliss.encoder.encoder.Encoder` (eval mode).
        window_px: window side in pixels (multiple of the tile size), or None.
        margin_px: overlap kept out of each window's core, pixels [default: 8].
        chunk_px: chunk core side when ``window_px`` is None [default: 512].
        batch_chunks: windows of equal shape per forward pass (bounds memory).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        progress: show a progress bar over windows.
        aperture_correction: multiply fluxes by the image's aperture correction when it has
            one (:attr:`SurveyImage.aperture_correction`). Only right for a model trained on the
            PSF model that correction refers to (the psField PSFs of real SDSS frames, as
            ``experiment=sdss_real``); a model trained on Moffat PSFs measures against those.
        precision: ``"32-true"``, or ``"bf16-mixed"`` to run the feature extractor (nearly all
            of the work) under bfloat16 autocast, for GPUs with bfloat16 tensor cores; the
            features are stored and the posterior computed in float32. On this repo's 2-core
            CPU (AVX-512 BF16) a 2048 x 1489 px frame took 5.4 s instead of 6.2 s.
        model_magzero: zero point of each of the encoder's bands in its training data (AB mag of
            one electron). The network measures fluxes in that calibration; an image whose
            ``MAGZERO`` differs (every real SDSS frame) gets its fluxes rescaled to nanomaggies with
            its own zero point. ``None``: assume the image's zero points equal the training ones.
        star_photometry: PSF-fit the fluxes of the stars found
            (:func:`bliss.predict.psf_photometry.refine_star_fluxes`; each star and band keeps
            the narrower of the fit's and the network's posteriors), with this survey's pixel
            scale and nominal Moffat beta; None: the network's fluxes. An image with its own PSF
            model (real SDSS frames: the psField PSF) is fitted with that model and its aperture
            correction; one with an aperture correction but no model keeps the network's
            fluxes. Joint samples keep the network's fluxes.
        density: move the count prior of blocks far denser than the training prior to their
            own density (:mod:`bliss.predict.density`); None: the training prior everywhere.
        count_rate_per_tile: the training prior's Poisson mean per tile
            (:attr:`ModelConditions.count_rate_per_tile`); without it nothing is moved.
        galaxy_fraction: the training prior's share of galaxies
            (:attr:`ModelConditions.galaxy_fraction`); without it source types are not moved.
        region_turns: 8: a model's region quantities (a shear, a map) are the posterior averaged
            over the image's eight quarter turns and mirrors
            (:func:`bliss.predict.region_turns.turned_region_params`), which cancels what the
            network adds that does not turn with the image, at eight times the feature cost of
            the regions; 1: the image as it is. The catalog is the same either way.

    Attributes:
        density_shift: what the last image's density adaptation found (None when off).

    Example:
        >>> import numpy as np
        >>> from hydra import compose, initialize_config_module
        >>> from hydra.utils import instantiate
        >>> with initialize_config_module("bliss.conf", version_base="1.3"):
        ...     cfg = compose("config", overrides=["mode=predict", "experiment=debug"])
        >>> encoder = instantiate(cfg.encoder).eval()  # normally: load_encoder(checkpoint)[0]
        >>> sky = np.full((5, 40, 30), 100.0, dtype=np.float32)
        >>> image = SurveyImage(None, tuple("ugriz"), sky + 50.0, sky, np.full(5, 1.3), np.full(5, 29.0), None)
        >>> predictor = Predictor(encoder, window_px=32, progress=False)
        >>> catalog = predictor.predict(image, threshold=0.5)
        >>> sorted(catalog.keys())[:4]
        ['beta_rad', 'beta_rad@0.05', 'beta_rad@0.95', 'bulge_hlr_arcsec']
    """

    def __init__(
        self,
        encoder: Encoder,
        window_px: int | None = None,
        margin_px: int = 8,
        chunk_px: int = 512,
        batch_chunks: int = 4,
        device: str = "auto",
        progress: bool = True,
        model_magzero: Sequence[float] | None = None,
        aperture_correction: bool = True,
        precision: str = "32-true",
        star_photometry: "StarPhotometry | None" = None,
        density: DensitySettings | None = None,
        count_rate_per_tile: float | None = None,
        galaxy_fraction: float | None = None,
        region_turns: int = 1,
    ) -> None:
        tile = encoder.tile_slen
        if region_turns not in (1, len(DIHEDRAL_TURNS)):
            raise BlissConfigError(
                f"predict.region_turns={region_turns}; expected 1 (the image as it is) or "
                f"{len(DIHEDRAL_TURNS)} (averaged over its quarter turns and mirrors)."
            )
        self.region_turns = region_turns
        if precision not in PRECISIONS:
            raise BlissConfigError(
                f"predict.precision={precision!r}; expected one of {list(PRECISIONS)}."
            )
        if model_magzero is not None and len(model_magzero) != len(encoder.bands):
            raise BlissConfigError(
                f"model_magzero has {len(model_magzero)} values for the encoder's "
                f"{len(encoder.bands)} bands {encoder.bands}."
            )
        self.model_magzero = None if model_magzero is None else np.asarray(model_magzero, float)
        self.aperture_correction = aperture_correction
        if batch_chunks < 1:
            raise BlissConfigError(
                f"predict.batch_chunks={batch_chunks}; expected an integer >= 1."
            )
        if window_px is not None:
            if (
                window_px % tile
                or margin_px % tile
                or window_px - 2 * margin_px < tile
                or margin_px < 0
            ):
                raise BlissConfigError(
                    f"predict.window_px={window_px}, predict.margin_px={margin_px}: expected multiples "
                    f"of the {tile}-px tile with a core window_px - 2 * margin_px of at least one tile."
                )
            self.chunk_px, self.margin_px = window_px - 2 * margin_px, margin_px
        else:
            if chunk_px < tile:
                raise BlissConfigError(
                    f"predict.chunk_px={chunk_px}; expected at least one {tile}-px tile."
                )
            self.chunk_px = chunk_px // tile * tile
            self.margin_px = math.ceil(encoder.features.receptive_field_px / 2 / tile) * tile
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"
        )
        self.tile_slen = tile
        self.batch_chunks = batch_chunks
        self.progress = progress
        self.star_photometry = star_photometry
        # a density shift needs the training prior's one rate; a varying prior has none
        self.density = density if count_rate_per_tile is not None else None
        self.count_rate_per_tile = count_rate_per_tile
        self.galaxy_fraction = galaxy_fraction
        if self.density is not None and self.density.block_px % tile:
            raise BlissConfigError(
                f"predict.density.block_px={self.density.block_px}; expected a multiple of the "
                f"{tile}-px tile."
            )
        self.density_shift: DensityShift | None = None

    def _padded(self, image: SurveyImage) -> dict[str, Tensor]:
        """Pad to whole tiles (padding is missing data; sky and seeing continue the edge)."""
        _, h, w = image.images.shape
        pad_h, pad_w = (-h) % self.tile_slen, (-w) % self.tile_slen
        padding = ((0, 0), (0, pad_h), (0, pad_w))
        data = {
            "images": np.pad(image.images, padding, constant_values=np.nan),
            "background": np.pad(image.background, padding, mode="edge"),
            "psf_fwhm_arcsec": image.psf_fwhm_arcsec
            if image.psf_fwhm_map is None
            else np.pad(image.psf_fwhm_map, padding, mode="edge"),
        }
        if getattr(self.encoder.normalizer, "psf_shape", False):
            data["psf_shape"] = image_psf_shape(image)
        return {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in data.items()
        }

    @torch.no_grad()
    def tile_features(self, image: SurveyImage) -> Tensor:
        """Features of every tile of the (padded) image. Shape ``1 f ht wt``."""
        return self._features(self._padded(image))

    def _features(self, data: dict[str, Tensor]) -> Tensor:
        """Features of padded inputs (:meth:`_padded`), window by window. Shape ``1 f ht wt``."""
        _, height, width = data["images"].shape
        n_h, n_w = height // self.tile_slen, width // self.tile_slen
        features = None
        groups: dict[tuple[int, int], list[tuple[int, int, int, int, int, int]]] = defaultdict(list)
        for top in range(0, height, self.chunk_px):
            for left in range(0, width, self.chunk_px):
                bottom, right = min(top + self.chunk_px, height), min(left + self.chunk_px, width)
                outer = (
                    max(top - self.margin_px, 0),
                    min(bottom + self.margin_px, height),
                    max(left - self.margin_px, 0),
                    min(right + self.margin_px, width),
                )
                shape = (outer[1] - outer[0], outer[3] - outer[2])
                groups[shape].append((top, bottom, left, right, outer[0], outer[2]))
        maps = [key for key, value in data.items() if value.ndim == 3]  # sliced like the image
        n_chunks = sum(len(v) for v in groups.values())
        bar = tqdm(total=n_chunks, desc="predict", unit="chunk", disable=not self.progress)
        for (chunk_h, chunk_w), chunks in groups.items():
            for start in range(0, len(chunks), self.batch_chunks):
                part = chunks[start : start + self.batch_chunks]
                batch = {
                    key: torch.stack(
                        [
                            data[key][:, o_top : o_top + chunk_h, o_left : o_left + chunk_w]
                            for (_, _, _, _, o_top, o_left) in part
                        ]
                    )
                    for key in maps
                }
                if "psf_fwhm_arcsec" not in maps:
                    batch["psf_fwhm_arcsec"] = data["psf_fwhm_arcsec"].expand(len(part), -1)
                if "psf_shape" in data:
                    batch["psf_shape"] = data["psf_shape"].expand(len(part), -1, -1)
                with self.autocast:
                    out = self.encoder.tile_features(
                        {k: v.to(self.device) for k, v in batch.items()}
                    )
                if features is None:
                    features = out.new_zeros(1, out.shape[1], n_h, n_w, dtype=torch.float32)
                t = self.tile_slen
                for index, (top, bottom, left, right, o_top, o_left) in enumerate(part):
                    r0, c0 = (top - o_top) // t, (left - o_left) // t
                    features[0, :, top // t : bottom // t, left // t : right // t] = out[
                        index, :, r0 : r0 + (bottom - top) // t, c0 : c0 + (right - left) // t
                    ]
                bar.update(len(part))
        bar.close()
        return features

    @torch.no_grad()
    def predict(
        self,
        image: SurveyImage,
        threshold: float = 0.5,
        quantiles: tuple[float, ...] = (0.05, 0.95),
    ) -> FullCatalog:
        """Catalog an image: the point estimate of every slot with ``P(source) > threshold``.

        Args:
            image: the input.
            threshold: report slots with ``P(source) > threshold``. Later checkerboard colour
                groups are conditioned on the earlier groups' decisions, so ``prob_source`` and
                the other columns of their sources depend on it.
            quantiles: posterior quantiles reported for every slot factor.

        Returns:
            A one-image catalog (``b = 1``): ``plocs`` (pixels, ``(row, col)``, origin at the
            image corner), ``prob_source``, ``prob_galaxy`` (when the posterior has a type
            factor), one key per slot factor (point estimate; ``fluxes`` in the image's
            nanomaggies) and ``<key>@<q>`` quantiles, with the location's quantiles also as
            ``plocs@<q>`` (pixels, like ``plocs``; ``locs@<q>`` stay in tile units). Shape of
            each key: ``1 n d``.

        Raises:
            BlissConfigError: ``threshold`` is not in (0, 1).
        """
        return self.predict_and_sample(image, threshold, 0, quantiles)[0]

    @torch.no_grad()
    def sample(self, image: SurveyImage, n_samples: int) -> list[FullCatalog]:
        """Draw ``n_samples`` joint posterior catalogs of an image.

        Each is like :meth:`predict`'s, with the drawn value of every key and ``source_type``
        instead of probabilities.

        Raises:
            BlissConfigError: ``n_samples`` is negative.
        """
        _check_n_samples(n_samples)
        features = self.tile_features(image)
        return self._samples(features, image, n_samples, self._prior_shift(features)[0])

    @torch.no_grad()
    def predict_and_sample(
        self,
        image: SurveyImage,
        threshold: float = 0.5,
        n_samples: int = 0,
        quantiles: tuple[float, ...] = (0.05, 0.95),
        star_photometry: bool = True,
    ) -> tuple[FullCatalog, list[FullCatalog]]:
        """:meth:`predict` and :meth:`sample` of one image, computing its features once.

        ``star_photometry=False`` keeps the network's fluxes even where the predictor would
        PSF-fit them.

        Raises:
            BlissConfigError: ``threshold`` is not in (0, 1) or ``n_samples`` is negative.
        """
        catalog, samples, _ = self.predict_with_regions(
            image, threshold, n_samples, quantiles, star_photometry
        )
        return catalog, samples

    @torch.no_grad()
    def predict_with_regions(
        self,
        image: SurveyImage,
        threshold: float = 0.5,
        n_samples: int = 0,
        quantiles: tuple[float, ...] = (0.05, 0.95),
        star_photometry: bool = True,
        saturated_stars: bool = True,
    ) -> tuple[FullCatalog, list[FullCatalog], dict[str, RegionEstimate]]:
        """:meth:`predict_and_sample` plus the model's region quantities (a shear, a map).

        The third item has a :class:`~bliss.predict.region_quantities.RegionEstimate` per region factor of
        the encoder (empty for a model without any), computed from the same features.
        ``saturated_stars=False`` leaves out :meth:`add_saturated_stars` (a caller that merges
        several catalogs of the image first runs it once on the merged one).

        Raises:
            BlissConfigError: ``threshold`` is not in (0, 1) or ``n_samples`` is negative.
            BlissValueError: a region of the model does not divide the (tile-padded) image.
        """
        check_threshold(threshold)
        _check_n_samples(n_samples)
        features = self.tile_features(image)
        prior_shift, first = self._prior_shift(features)
        # an unmoved image at the encoder's own threshold is decided as the first pass was
        reuse = first if prior_shift is None and threshold == self.encoder.threshold else None
        refit = prior_shift is not None and self.density.refit_sky and self.star_photometry
        catalog = self._point_catalog(
            features,
            image,
            threshold,
            quantiles,
            star_photometry,
            prior_shift,
            decided=reuse,
            companions=not refit,
        )
        if refit:
            # the crowd raised the background the first pass was measured against: measure it
            # again without the stars found, then catalog again (the same moved prior)
            settings = self.star_photometry
            moved = self.density_shift.moved_pixels(self.tile_slen, image.images.shape[1:])
            image = refit_sky(
                image,
                catalog,
                nominal_psf_models(image, settings.pixel_scale_arcsec, settings.psf_beta),
                moved,
                settings.pixel_scale_arcsec,
            )
            features = self.tile_features(image)
            catalog = self._point_catalog(
                features, image, threshold, quantiles, star_photometry, prior_shift, moved
            )
        regions = {}
        if self.encoder.regions:
            shape = (features.shape[-2] * self.tile_slen, features.shape[-1] * self.tile_slen)
            params = self.encoder.region_params(features)
            if self.region_turns > 1:
                params = turned_region_params(
                    self.encoder.regions,
                    lambda data: self.encoder.region_params(self._features(data)),
                    self._padded(image),
                    unturned=params,
                )
            regions = region_estimates(
                self.encoder.regions, params, self.tile_slen, shape, quantiles
            )
        samples = self._samples(features, image, n_samples, prior_shift)
        if saturated_stars:
            catalog, samples = self.add_saturated_stars(image, catalog, samples, quantiles)
        return catalog, samples, regions

    def add_saturated_stars(
        self,
        image: SurveyImage,
        catalog: FullCatalog,
        samples: list[FullCatalog],
        quantiles: tuple[float, ...],
    ) -> tuple[FullCatalog, list[FullCatalog]]:
        """Each blob of the image's saturated pixels as one star measured on its wings.

        :mod:`bliss.predict.saturated_stars`; the catalog and samples unchanged without star
        photometry settings (its PSF models need the survey's pixel scale), with
        ``saturated_stars`` off, or for an image that does not say which pixels saturated.
        """
        settings = self.star_photometry
        if settings is None or not settings.saturated_stars or image.saturated is None:
            return catalog, samples
        models = nominal_psf_models(
            image, settings.pixel_scale_arcsec, settings.psf_beta, cell_px=SATURATED_PSF_CELL_PX
        )
        stars = recover_saturated_stars(image, catalog, models, self.encoder.reference_index)
        if not stars:
            return catalog, samples
        # the draws are reproducible from the torch seed, as the network's samples are
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        samples = [with_saturated_stars(s, stars, rng=rng) for s in samples]
        return with_saturated_stars(catalog, stars, quantiles), samples

    def _prior_shift(
        self, features: Tensor
    ) -> tuple[PriorShift | None, tuple[TileCatalog, Tensor] | None]:
        """The prior of the image's density and galaxy share where it is far denser than trained.

        Sets :attr:`density_shift` (None when the model's prior has no one rate or adapting is
        off). Returns its prior shift where a block is moved (else None), and the first pass at
        the training prior and the encoder's threshold (None when off).
        """
        self.density_shift = None
        if self.density is None:
            return None, None
        estimate, params = self.encoder.infer_from_features(features)
        count = self.encoder.posterior.count
        self.density_shift = estimate_density(
            count,
            params[..., : count.n_params],
            estimate["n_sources"],
            self.count_rate_per_tile,
            self.density.block_px // self.tile_slen,
            self.density.min_ratio,
        )
        if not self.density_shift.moved:
            return None, (estimate, params)
        prob_galaxy = self.encoder.posterior.prob_galaxy(params)
        if self.density.galaxy_fraction and self.galaxy_fraction and prob_galaxy is not None:
            m = prob_galaxy.shape[-1]
            reported = torch.arange(m, device=params.device) < estimate["n_sources"].unsqueeze(-1)
            self.density_shift = estimate_galaxy_fraction(
                self.density_shift,
                prob_galaxy,
                reported,
                self.galaxy_fraction,
                self.density.min_galaxy_fraction,
            )
        return self.density_shift.prior_shift, (estimate, params)

    def _point_catalog(
        self,
        features: Tensor,
        image: SurveyImage,
        threshold: float,
        quantiles: tuple[float, ...],
        star_photometry: bool = True,
        prior_shift: PriorShift | None = None,
        sky_refitted: np.ndarray | None = None,
        decided: tuple[TileCatalog, Tensor] | None = None,
        companions: bool = True,
    ) -> FullCatalog:
        """The point estimate and quantiles of every slot that is on (see :meth:`predict`).

        ``decided``: the inference of ``features`` at ``threshold`` and ``prior_shift``, when
        already run. ``companions=False`` leaves the hidden companions out of the intervals, for
        a catalog only the sky refit reads (it takes positions and fluxes; the companions change
        only quantiles, ~5 % of a crowded field's time).
        """
        estimate, params = decided or self.encoder.infer_from_features(
            features, sample=False, threshold=threshold, prior_shift=prior_shift
        )
        posterior = self.encoder.posterior
        split = posterior.split(params)
        columns: dict[str, Tensor] = {"prob_source": posterior.prob_source(params)}
        galaxy = posterior.prob_galaxy(params)
        if galaxy is not None:
            columns["prob_galaxy"] = galaxy
        for name, factor in posterior.slot_factors.items():
            columns[factor.key] = factor.point_estimate(split[name])
            for q in quantiles:
                columns[f"{factor.key}@{q:g}"] = factor.quantile(split[name], q)
        columns.update(shape_parameter_columns(posterior, split))
        catalog = _full_catalog(estimate, _rescale_fluxes(columns, self._flux_scale(image)), image)
        if prior_shift is not None:
            catalog = merge_unresolved(
                catalog, self.density_shift, self.tile_slen, self.density.min_separation_px
            )
        draws = shape_draws(catalog, posterior)  # seeded: the ellipticity's and the fits' prior
        catalog = add_shape_ellipticity(catalog, posterior, quantiles, draws)
        # an aperture correction refers to the image's PSF model: the fit needs that model
        if (
            star_photometry
            and self.star_photometry is not None
            and (image.psf is not None or not self.applies_aperture_correction(image))
        ):
            settings = self.star_photometry
            reference = self.encoder.reference_index
            catalog, psf_models = refine_star_fluxes(
                image,
                catalog,
                quantiles,
                settings.pixel_scale_arcsec,
                settings.psf_beta,
                reference_band=reference,
            )
            if settings.galaxies and draws is not None:
                catalog = refine_galaxy_fluxes(
                    image,
                    catalog,
                    psf_models,
                    draws,
                    quantiles,
                    settings.pixel_scale_arcsec,
                    image.aperture_correction if image.psf is not None else None,
                )
            if settings.confusion:
                confusion = measure_confusion(
                    image,
                    catalog,
                    psf_models,
                    quantiles,
                    settings.pixel_scale_arcsec,
                    sky_refitted=sky_refitted,
                )
                catalog = widen_for_confusion(catalog, confusion, quantiles)
                if companions:
                    catalog = widen_for_companions(
                        image,
                        catalog,
                        psf_models,
                        quantiles,
                        reference,
                        settings.pixel_scale_arcsec,
                    )
        return drop_shape_parameters(catalog)

    def _samples(
        self,
        features: Tensor,
        image: SurveyImage,
        n_samples: int,
        prior_shift: PriorShift | None = None,
    ) -> list[FullCatalog]:
        """``n_samples`` joint posterior catalogs drawn from the features (see :meth:`sample`)."""
        flux_scale = self._flux_scale(image)
        samples = []
        for _ in range(n_samples):
            draw, _ = self.encoder.infer_from_features(
                features, sample=True, prior_shift=prior_shift
            )
            drawn = {k: draw[k] for k in draw.keys() if k not in ("n_sources", "locs")}
            sample = _full_catalog(draw, _rescale_fluxes(drawn, flux_scale), image)
            if prior_shift is not None:  # one star drawn twice, as in the point estimate
                sample = merge_unresolved(
                    sample, self.density_shift, self.tile_slen, self.density.min_separation_px
                )
            samples.append(add_drawn_ellipticity(sample))
        return samples

    def _flux_scale(self, image: SurveyImage) -> Tensor | None:
        """Per-band factor from the model's fluxes to the image's nanomaggies.

        The training calibration's nanomaggies become the image's (zero points), times the
        image's aperture correction when it has one.
        """
        correct = self.applies_aperture_correction(image)
        if self.model_magzero is None and not correct:
            return None
        scale = np.ones(len(image.bands))
        if self.model_magzero is not None:
            scale *= 10.0 ** (0.4 * (self.model_magzero - np.asarray(image.magzero, float)))
        if correct:
            scale *= np.asarray(image.aperture_correction, float)
        return torch.as_tensor(scale, dtype=torch.float32, device=self.device)

    def applies_aperture_correction(self, image: SurveyImage) -> bool:
        """Whether :meth:`predict` multiplies this image's fluxes by its aperture correction."""
        return self.aperture_correction and image.aperture_correction is not None


def check_threshold(threshold: float) -> None:
    """Raise unless ``threshold`` (``predict.threshold``) is a probability in (0, 1).

    Raises:
        BlissConfigError: it is not.
    """
    if not 0 < threshold < 1:
        raise BlissConfigError(f"predict.threshold={threshold}; expected a probability in (0, 1).")


def _check_n_samples(n_samples: int) -> None:
    if n_samples < 0:
        raise BlissConfigError(f"predict.n_samples={n_samples}; expected an integer >= 0.")


def _rescale_fluxes(columns: dict[str, Tensor], scale: Tensor | None) -> dict[str, Tensor]:
    """Multiply the per-band flux columns (``fluxes``, ``fluxes@q``; last axis = band) by ``scale``."""
    if scale is None:
        return columns
    return {
        k: v * scale if k == FLUX_KEY or k.startswith(f"{FLUX_KEY}@") else v
        for k, v in columns.items()
    }


def _full_catalog(
    catalog: TileCatalog, columns: dict[str, Tensor], image: SurveyImage
) -> FullCatalog:
    """The slots that are on and inside the (unpadded) image, as a one-image catalog.

    Shapes:
        ``columns``: ``b ht wt m`` or ``b ht wt m d`` each; the result's keys ``1 n d``.
    """
    _, height, width = image.images.shape
    on = catalog.is_on_mask
    plocs = catalog.plocs()[on]
    # a model with a tiling margin may place a source of an edge tile just outside the image
    inside = (plocs >= 0).all(-1) & (plocs[:, 0] < height) & (plocs[:, 1] < width)
    data = {"plocs": plocs[inside]}
    columns = dict(columns)
    for key in [k for k in columns if k.startswith(f"{LOCS_KEY}@")]:
        columns[f"plocs@{key.split('@', 1)[1]}"] = catalog.plocs(columns[key])
    for key, value in columns.items():
        selected = value[on][inside]
        data[key] = selected.unsqueeze(-1) if selected.ndim == 1 else selected.flatten(1)
    n_sources = torch.tensor([int(inside.sum())])
    return FullCatalog(
        height,
        width,
        {"n_sources": n_sources, **{k: v.cpu().unsqueeze(0) for k, v in data.items()}},
    )


@dataclass(frozen=True)
class PredictorSettings:
    """How the predictor cuts an image (the ``predict`` config's window keys, see :class:`Predictor`).

    ``window_px="auto"`` is the image size the model was trained on.
    """

    window_px: int | Literal["auto"] | None = "auto"
    margin_px: int = 8
    chunk_px: int = 512
    batch_chunks: int = 4
    device: str = "auto"
    precision: str = "32-true"
    psf_photometry: bool = True
    galaxy_photometry: bool = True
    confusion_noise: bool = True
    saturated_stars: bool = True
    density: DensitySettings | None = DensitySettings()
    region_turns: int = 8


@dataclass(frozen=True)
class StarPhotometry:
    """What PSF-fit star photometry (:mod:`bliss.predict.psf_photometry`) needs of the survey.

    Attributes:
        pixel_scale_arcsec: pixel side, arcsec (turns the header PSF FWHM into pixels).
        psf_beta: the Moffat beta of the survey's nominal PSF.
        galaxies: also model-fit bright galaxies' fluxes, marginalised over their shape
            posterior (:mod:`bliss.predict.galaxy_photometry`).
        confusion: widen flux and position intervals by the confusion noise measured on the
            image's residual (:mod:`bliss.predict.confusion`).
        saturated_stars: catalog each blob of saturated pixels as one star measured on its
            wings (:mod:`bliss.predict.saturated_stars`).
    """

    pixel_scale_arcsec: float
    psf_beta: float
    galaxies: bool = True
    confusion: bool = True
    saturated_stars: bool = True


def build_predictor(
    settings: PredictorSettings,
    encoder: Encoder,
    model: ModelConditions,
    progress: bool = True,
    survey: ObservingSetup | None = None,
) -> Predictor:
    """The :class:`Predictor` of a loaded model.

    A frame's aperture correction is measured against its observed PSFs (with the model's halo):
    right for models trained on those (``experiment=sdss_real``), not on parametric PSFs.
    ``survey`` gives PSF-fit star photometry its pixel scale and nominal PSF
    (``settings.psf_photometry``); without it the network's fluxes are reported.

    Raises:
        BlissConfigError: ``window_px="auto"`` but the model records no training image size.
    """
    window = settings.window_px
    if window == "auto":
        if model.image_size_px is None:
            raise BlissConfigError(
                "predict.window_px=auto but the checkpoint records no simulator.image_size; set "
                "predict.window_px to the model's training image size."
            )
        window = model.image_size_px
    return Predictor(
        encoder,
        window_px=window,
        margin_px=settings.margin_px,
        chunk_px=settings.chunk_px,
        batch_chunks=settings.batch_chunks,
        device=settings.device,
        progress=progress,
        model_magzero=model.magzero,
        aperture_correction=model.observed_psfs,
        precision=settings.precision,
        star_photometry=StarPhotometry(
            survey.pixel_scale_arcsec,
            survey.psf_beta,
            settings.galaxy_photometry,
            settings.confusion_noise,
            settings.saturated_stars,
        )
        if settings.psf_photometry and survey is not None
        else None,
        density=settings.density,
        count_rate_per_tile=model.count_rate_per_tile,
        galaxy_fraction=model.galaxy_fraction,
        region_turns=settings.region_turns,
    )


def image_psf_shape(image: SurveyImage) -> np.ndarray:
    """``(e1, e2, rho4)`` of each band's PSF at the image's centre (:mod:`bliss.simulator.psf_shape`).

    The image's own ``psf_shape`` where it has one (FITS cards ``PSF_E1``, ``PSF_E2``,
    ``PSF_RHO4``), else from its PSF model (SDSS psField, PSFEx), else from the round
    beta = 3.5 Moffat that readers without a model assume. Shape ``c 3``.
    """
    if image.psf_shape is not None:
        return np.asarray(image.psf_shape, dtype=np.float32)
    # GalSim's moments: imported here, so that cataloging with a model that does not read the
    # PSF shape starts without GalSim
    from bliss.simulator.psf_shape import moffat_psf_shape, psf_shape

    if image.psf is None:
        return np.tile(moffat_psf_shape(3.5), (len(image.bands), 1))
    height, width = image.images.shape[-2:]
    centre = ((height - 1) / 2, (width - 1) / 2)
    return psf_shape(np.stack([image.psf(band, *centre) for band in range(len(image.bands))]))
