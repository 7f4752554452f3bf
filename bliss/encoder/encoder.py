"""The encoder: a network mapping images to a posterior over their tile catalogs.

It is a plain ``torch.nn.Module``, so inference never imports Lightning (about 3 s of start-up on
two cores); :class:`~bliss.encoder.module.EncoderModule` adds the training and validation hooks.
"""

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from bliss.catalog import TileCatalog
from bliss.catalog.batch import field_key, unflatten_catalog
from bliss.catalog.shapes import check_shape
from bliss.encoder.checkerboard import CatalogContext, ContextHead, TilingSchedule
from bliss.encoder.claims import SourcePool
from bliss.encoder.features import FeatureNet
from bliss.encoder.normalizers import ImageNormalizer
from bliss.encoder.region_head import RegionHead
from bliss.errors import BlissConfigError, BlissValueError
from bliss.posterior.regions import RegionFactor, check_regions, region_grid
from bliss.posterior.variational import PriorShift, VariationalPosterior

__all__ = ["Encoder", "catalog_from_batch"]


def catalog_from_batch(batch: dict[str, Tensor], tile_slen: int) -> TileCatalog:
    """The true tile catalog stored in a batch under ``catalog/<key>``."""
    return TileCatalog(tile_slen, unflatten_catalog(batch))


class Encoder(nn.Module):
    """Neural posterior estimation of tile catalogs with checkerboard autoregressive tiling.

    Training minimises the expected negative log posterior of the simulated true catalog. The
    image goes once through :class:`~bliss.encoder.features.FeatureNet`; then, for each colour
    group ``k`` of the tiling schedule, a :class:`~bliss.encoder.checkerboard.ContextHead`
    combines the features with the catalog of the groups before ``k`` (the true catalog during
    training: teacher forcing) and gives the posterior parameters of group ``k``'s tiles.

    Args:
        bands: band names, in the channel order of the images.
        reference_band: band used for ordering, magnitude bins and detection metrics.
        tile_slen: tile side in pixels.
        normalizer: image normalisation.
        features: a callable ``in_channels -> FeatureNet`` (Hydra ``_partial_``).
        posterior: the variational posterior (its factors are a dict keyed by name).
        tiling: the colour-group schedule.
        context_width: hidden channels of the context head.
        context_spill_fwhm_px: also give the context head the light the decided tiles' sources
            put in every tile, drawn as Gaussians of this FWHM in pixels (the survey's nominal
            PSF; :class:`~bliss.encoder.checkerboard.CatalogContext`); None: not.
        optimizer: a callable ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: a callable ``optimizer -> LRScheduler`` or None.
        threshold: detection threshold on ``P(source)``.
        match_dist_px: matching distance for validation metrics, pixels.
        mag_bins: reference-band magnitude bin edges for validation metrics.
        compile_features: wrap the feature extractor in ``torch.compile``.
        channels_last: keep convolution weights and activations in the ``b h w f`` memory
            layout, which GPU tensor cores and oneDNN prefer. On this repo's 2-core CPU it moved
            training by -5 to +8 %; it is for GPUs. The numbers are the same either way.
        regions: posterior factors of quantities that belong to the image or to coarse tiles,
            not to a source (a shear, a convergence map), keyed by name; each gets a
            :class:`~bliss.encoder.region_head.RegionHead` on the tile features and is trained
            on the batch's ``fields/<key>`` [default: none].
        region_width: hidden channels of the region heads [default: 64].

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> from hydra.utils import instantiate
        >>> from bliss.catalog.batch import flatten_catalog
        >>> from bliss.cli.generate import build_simulator
        >>> with initialize_config_module("bliss.conf", version_base="1.3"):
        ...     cfg = compose("config", overrides=["mode=train", "experiment=debug"])
        >>> encoder = instantiate(cfg.encoder)
        >>> batch = build_simulator(cfg).simulate(2, seed=0)
        >>> inputs = {k: v for k, v in batch.items() if k != "catalog"}
        >>> inputs.update(flatten_catalog(batch["catalog"]))
        >>> bool(encoder.nll(inputs) > 0)
        True
        >>> catalog, params = encoder.infer(inputs, sample=True)
        >>> catalog["locs"].shape[:3], encoder.tiling.name
        (torch.Size([2, 8, 8]), '2x2')
    """

    def __init__(
        self,
        bands: Sequence[str],
        reference_band: str,
        tile_slen: int,
        normalizer: ImageNormalizer,
        features: Callable[..., FeatureNet],
        posterior: VariationalPosterior,
        tiling: TilingSchedule,
        context_width: int = 64,
        context_spill_fwhm_px: float | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        threshold: float = 0.5,
        match_dist_px: float = 1.0,
        mag_bins: Sequence[float] = (16, 19, 20, 21, 22, 23),
        compile_features: bool = False,
        channels_last: bool = False,
        regions: Mapping[str, RegionFactor | None] | None = None,
        region_width: int = 64,
    ) -> None:
        super().__init__()
        self.bands = tuple(bands)
        if reference_band not in self.bands:
            raise BlissConfigError(
                f"encoder.reference_band={reference_band!r} not in bands {self.bands}."
            )
        if normalizer.n_bands != len(self.bands):
            raise BlissConfigError(
                f"encoder.normalizer.n_bands={normalizer.n_bands} but {len(self.bands)} bands {self.bands}."
            )
        if not 0 < threshold < 1:
            raise BlissConfigError(
                f"encoder.threshold={threshold}; expected a probability in (0, 1)."
            )
        self.reference_index = self.bands.index(reference_band)
        self.tile_slen = tile_slen
        _check_margin(tiling, posterior, tile_slen)
        self.normalizer = normalizer
        self.features = features(in_channels=normalizer.n_channels, tile_slen=tile_slen)
        self.posterior = posterior
        self.tiling = tiling
        self.context = CatalogContext(len(self.bands), spill_fwhm_px=context_spill_fwhm_px)
        self.head = ContextHead(
            self.features.width,
            self.context.n_channels,
            context_width,
            posterior.n_params,
            norm=self.features.norm,
        )
        self.regions = check_regions(regions)
        self.region_heads = nn.ModuleDict(
            {
                name: RegionHead(
                    self.features.width,
                    region_width,
                    region.n_params,
                    self._tiles_per_region(name, region),
                    norm=self.features.norm,
                )
                for name, region in self.regions.items()
            }
        )
        self.optimizer_factory = optimizer or partial(torch.optim.AdamW, lr=1e-3)
        self.scheduler_factory = scheduler
        self.threshold = threshold
        self.match_dist_px = match_dist_px
        self.mag_bins = list(mag_bins)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        # not a submodule attribute: registering it would store every feature weight twice
        feature_fn = torch.compile(self.features) if compile_features else self.features
        object.__setattr__(self, "_feature_fn", feature_fn)

    # ---- network ------------------------------------------------------------------------------
    def tile_features(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-tile features of a batch. Shape ``b f ht wt``."""
        images = batch["images"]
        check_shape("images", images, "b c h w", {"c": len(self.bands)})
        normalised = self.normalizer(
            images, batch["background"], batch["psf_fwhm_arcsec"], batch.get("psf_shape")
        )
        return self._feature_fn(normalised.contiguous(memory_format=self.memory_format))

    def group_params(
        self, features: Tensor, catalog: TileCatalog, known: Tensor, current: Tensor
    ) -> Tensor:
        """Posterior parameters of every tile (``b ht wt p``).

        Args:
            features: ``b f ht wt``.
            catalog: the catalog, used on ``known`` tiles only.
            known: tiles of the groups already decided (``ht wt``, bool).
            current: tiles of the group being decided (``ht wt``, bool).
        """
        return self.head(features, self.context(catalog, known), current)

    def _tiles_per_region(self, name: str, region: RegionFactor) -> int | None:
        if region.region_px is None:
            return None
        if region.region_px % self.tile_slen:
            raise BlissConfigError(
                f"encoder.regions.{name}.region_px={region.region_px}; expected a multiple of "
                f"the tile side {self.tile_slen}."
            )
        return region.region_px // self.tile_slen

    def region_params(self, features: Tensor) -> dict[str, Tensor]:
        """Raw parameters of every region factor (``b hr wr p``) from tile features (``b f ht wt``).

        Raises:
            BlissValueError: a region does not divide the image.
        """
        n_h, n_w = features.shape[-2:]
        out = {}
        for name, region in self.regions.items():
            region_grid(region, self.tile_slen, n_h * self.tile_slen, n_w * self.tile_slen)
            out[name] = self.region_heads[name](features)
        return out

    def region_nll(
        self,
        features: Tensor,
        batch: Mapping[str, Tensor],
        region_params: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Negative log posterior of the true region values ``fields/<key>``, averaged over images.

        ``region_params``: what :meth:`region_params` gives for ``features``, when already computed.
        """
        if region_params is None:
            region_params = self.region_params(features)
        total = features.new_zeros(())
        for name, params in region_params.items():
            key = field_key(self.regions[name].key)
            if key not in batch:
                raise BlissValueError(
                    f"encoder.regions.{name} needs `{key}` in the batch, which has "
                    f"{sorted(k for k in batch if '/' not in k)} and no such field; simulate with "
                    "the matching simulator option (e.g. simulator.lensing for a shear)."
                )
            total = total - self.regions[name].log_prob(params, batch[key].to(params)).sum()
        return total / features.shape[0]

    def _known_masks(self, order: list[int], colors: Tensor) -> list[tuple[int, Tensor]]:
        """For each group in visiting order: (group, tiles of the groups visited before it)."""
        masks, done = [], torch.zeros_like(colors, dtype=torch.bool)
        for group in order:
            masks.append((group, done.clone()))
            done |= colors == group
        return masks

    # ---- loss ---------------------------------------------------------------------------------
    def nll(self, batch: dict[str, Tensor]) -> Tensor:
        """Negative log posterior of the true catalog, summed over tiles, averaged over images."""
        truth = catalog_from_batch(batch, self.tile_slen)
        features = self.tile_features(batch)
        loss = self.nll_from_features(features, truth)
        return loss + self.region_nll(features, batch) if self.regions else loss

    def nll_from_features(self, features: Tensor, truth: TileCatalog) -> Tensor:
        """:meth:`nll` on precomputed features (``b f ht wt``), e.g. those :meth:`infer` also uses.

        With a tiling margin, or on a self-conditioned training step, each group's targets are
        the true sources left to it (:class:`~bliss.encoder.claims.SourcePool`); otherwise the
        true catalog itself, each group conditioned on the truth of the groups before it.
        """
        colors = self.tiling.colors(truth.n_tiles_h, truth.n_tiles_w, features.device)
        masks = self._known_masks(self.tiling.order(self.training), colors)
        # a random share of training steps; no draw otherwise, so the random stream is unchanged
        conditioning = (
            self.training
            and self.tiling.self_conditioning > 0
            and bool(torch.rand(()) < self.tiling.self_conditioning)
        )
        if self.tiling.margin_px > 0 or conditioning:
            return self._nll_of_claims(features, truth, colors, masks, sample=conditioning)
        total = features.new_zeros(())
        for group, known in masks:
            params = self.group_params(features, truth, known, colors == group)
            total = total + self._group_log_prob(params, truth, colors == group)
        return -total / truth.batch_size

    def _nll_of_claims(
        self,
        features: Tensor,
        truth: TileCatalog,
        colors: Tensor,
        masks: list[tuple[int, Tensor]],
        sample: bool,
    ) -> Tensor:
        """The loss when each group's targets are what the groups before it left."""
        pool = SourcePool(truth, self.tiling.margin_px, self.reference_index)
        decided = self._empty(truth.batch_size, truth.n_tiles_h, truth.n_tiles_w, features)
        total = features.new_zeros(())
        for group, known in masks:
            in_group = colors == group
            target = pool.targets(in_group)
            params = self.group_params(features, decided, known, in_group)
            total = total + self._group_log_prob(params, target, in_group)
            if sample:
                with torch.no_grad():
                    draw = self.posterior.sample(params.detach(), self.tile_slen)
            else:
                draw = target
            pool.claim(draw, in_group, self.match_dist_px)
            decided = _where_tiles(in_group, draw, decided)
        return -total / truth.batch_size

    def _group_log_prob(self, params: Tensor, target: TileCatalog, in_group: Tensor) -> Tensor:
        """Log posterior of ``target`` on the tiles of one group, summed."""
        try:
            log_prob = self.posterior.log_prob(params, target)
        except ValueError:
            # torch.distributions refuses non-finite parameters with a dump of the tensor;
            # shards are checked for finite content, so non-finite parameters mean the
            # weights diverged
            if bool(torch.isfinite(params).all()):
                raise
            raise self._diverged("the posterior parameters are not finite") from None
        return torch.where(in_group, log_prob, 0.0).sum()

    def _diverged(self, what: str, batch_idx: int | None = None) -> BlissValueError:
        """The error for weights that no longer give finite numbers (the trainer adds its step)."""
        return BlissValueError(
            f"the encoder's weights diverged: {what}; retrain with a lower encoder.optimizer.lr, "
            "or check the data."
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights; drops the duplicate ``_feature_fn.*`` entries of older checkpoints."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("_feature_fn.")}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def infer(
        self, batch: dict[str, Tensor], sample: bool = False, threshold: float | None = None
    ) -> tuple[TileCatalog, Tensor]:
        """Run the colour groups in turn, each conditioned on the catalog of the earlier ones.

        Args:
            batch: ``images``, ``background``, ``psf_fwhm_arcsec`` (and ``psf_shape`` for a
                model that reads it).
            sample: draw from the posterior (joint, through the autoregression) instead of taking
                point estimates.
            threshold: detection threshold for point estimates [default: the encoder's].

        Returns:
            The catalog (``b ht wt m d``) and the posterior parameters each tile was decided with
            (``b ht wt p``).
        """
        return self.infer_from_features(self.tile_features(batch), sample, threshold)

    @torch.no_grad()
    def infer_from_features(
        self,
        features: Tensor,
        sample: bool = False,
        threshold: float | None = None,
        prior_shift: PriorShift | None = None,
    ) -> tuple[TileCatalog, Tensor]:
        """The autoregressive loop of :meth:`infer` on precomputed features (``b f ht wt``).

        ``prior_shift``, when given, moves every tile's posterior to another prior of counts and
        source types before it is decided, so later colour groups are conditioned on decisions
        under that prior (:mod:`bliss.predict.density`); the parameters returned are the moved ones.
        """
        threshold = self.threshold if threshold is None else threshold
        b, _, n_h, n_w = features.shape
        colors = self.tiling.colors(n_h, n_w, features.device)
        estimate = self._empty(b, n_h, n_w, features)
        all_params = features.new_zeros(b, n_h, n_w, self.posterior.n_params)
        for group, known in self._known_masks(self.tiling.order(False), colors):
            params = self.group_params(features, estimate, known, colors == group)
            if prior_shift is not None:
                params = self.posterior.reweight(params, prior_shift)
            if sample:
                draw = self.posterior.sample(params, self.tile_slen)
            else:
                draw = self.posterior.point_estimate(params, self.tile_slen, threshold)
            in_group = colors == group
            estimate = _where_tiles(in_group, draw, estimate)
            all_params = torch.where(in_group.unsqueeze(-1), params, all_params)
        return estimate, all_params

    def _empty(self, b: int, n_h: int, n_w: int, like: Tensor) -> TileCatalog:
        m = self.posterior.max_sources
        return TileCatalog(
            self.tile_slen,
            {
                "n_sources": torch.zeros(b, n_h, n_w, dtype=torch.long, device=like.device),
                "locs": like.new_zeros(b, n_h, n_w, m, 2),
                "fluxes": like.new_zeros(b, n_h, n_w, m, len(self.bands)),
            },
        )


def _where_tiles(in_group: Tensor, new: TileCatalog, old: TileCatalog) -> TileCatalog:
    """Take ``new`` on the tiles of ``in_group`` (``ht wt``) and ``old`` elsewhere."""
    data = {}
    for key, value in new.items():
        mask = in_group.view(1, *in_group.shape, *([1] * (value.ndim - 3)))
        data[key] = torch.where(mask, value, old[key] if key in old else 0)
    return TileCatalog(new.tile_slen, data)


def _check_margin(tiling: TilingSchedule, posterior: VariationalPosterior, tile_slen: int) -> None:
    """The tiling margin is under a tile and inside the bounds of the ``locs`` factor."""
    margin = tiling.margin_px / tile_slen
    if margin >= 1:
        raise BlissConfigError(
            f"encoder.tiling.margin_px={tiling.margin_px}; expected less than the {tile_slen}-px tile."
        )
    for name, factor in posterior.slot_factors.items():
        low, high = getattr(factor, "low", None), getattr(factor, "high", None)
        if factor.key == "locs" and low is not None and (low > -margin or high < 1 + margin):
            raise BlissConfigError(
                f"encoder.tiling.margin_px={tiling.margin_px} lets a tile hold sources from "
                f"{-margin:g} to {1 + margin:g} tiles, but encoder.posterior.factors.{name} "
                f"is bounded to [{low:g}, {high:g}]; set its low={-margin:g} and high={1 + margin:g}."
            )
