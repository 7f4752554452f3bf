"""Two models on one image: a sparse-field model everywhere, a crowded-field one where it is crowded.

:class:`RegionalPredictor` runs the sparse-field predictor on the whole image, finds the crowded
blocks from the pixels (:mod:`bliss.predict.crowding`), runs the crowded-field predictor on each
group of crowded blocks (with ``context_px`` of image around it, so the network sees the light
of the neighbours across the group's border) and keeps, per block, the sources of the model that
owns it. Each source goes with the block its centre falls in, so a source near a border is
reported once. The crowded-field model catalogs stars only: its sources get ``prob_galaxy = 0``
and no galaxy shapes (NaN), and the key ``crowded`` (1) that becomes the ``crowded`` flag.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bliss.catalog import FullCatalog
from bliss.encoder.encoder import Encoder
from bliss.errors import BlissConfigError
from bliss.predict.crowding import CrowdingSettings, crowded_blocks, crowded_boxes
from bliss.predict.predictor import Predictor, PredictorSettings, build_predictor
from bliss.predict.region_quantities import RegionEstimate
from bliss.protocols import ModelConditions, SurveyImage

__all__ = ["CROWDED_KEY", "CrowdedModel", "RegionalPredictor", "build_regional"]

#: catalog key (``1 n 1``, 0 or 1) of the sources the crowded-field model reported
CROWDED_KEY = "crowded"


@dataclasses.dataclass
class CrowdedModel:
    """A loaded crowded-field model and when to use it (``predict.crowded``).

    Attributes:
        encoder: its encoder.
        model: what it assumes of its images (from its checkpoint).
        checkpoint: its file name, recorded in the catalog meta.
        settings: what makes a block crowded.
        context_px: image kept around each group of crowded blocks.
        window_px: the crowded predictor's window side (``"auto"``: its training images).
        psf_photometry: PSF-fit its star fluxes (with ``predict.psf_photometry`` also on): off
            by default, since a cluster frame holds ~10^5 of them (~1.5 ms per star and band).
    """

    encoder: Encoder
    model: ModelConditions
    checkpoint: str
    settings: CrowdingSettings
    context_px: int = 16
    window_px: int | str = "auto"
    psf_photometry: bool = False


def build_regional(
    sparse: Predictor, crowded: CrowdedModel, predictor_settings: PredictorSettings
) -> "RegionalPredictor":
    """Wrap a sparse-field predictor with the crowded-field model's predictor.

    With ``predict.psf_photometry`` and ``predict.crowded.psf_photometry`` on, the crowded
    model's star fluxes are PSF-fit too: a
    cluster core is one tangle of stars, fitted in blocks with the network's fluxes as their
    prior (:func:`bliss.predict.psf_photometry.refine_star_fluxes`).
    """
    settings = dataclasses.replace(
        predictor_settings,
        psf_photometry=predictor_settings.psf_photometry and crowded.psf_photometry,
        window_px=crowded.window_px,
    )
    predictor = build_predictor(settings, crowded.encoder, crowded.model, progress=sparse.progress)
    # the same survey as the sparse model's: its pixel scale and nominal PSF
    predictor.star_photometry = sparse.star_photometry if settings.psf_photometry else None
    return RegionalPredictor(
        sparse, predictor, crowded.settings, crowded.context_px, crowded.checkpoint
    )


class RegionalPredictor:
    """Sparse-field model everywhere, crowded-field model on the crowded blocks.

    Args:
        sparse: the predictor of the sparse-field (default) model.
        crowded: the predictor of the crowded-field model; same bands.
        settings: what makes a block crowded.
        context_px: image kept around each group of crowded blocks for the crowded model [16].
        crowded_checkpoint: the crowded model's file name (catalog meta).

    Attributes:
        picks: what the last :meth:`predict_with_regions` picked (catalog meta): crowded blocks,
            their size, and the share of the image they cover.
    """

    def __init__(
        self,
        sparse: Predictor,
        crowded: Predictor,
        settings: CrowdingSettings,
        context_px: int = 16,
        crowded_checkpoint: str = "",
    ) -> None:
        if tuple(sparse.encoder.bands) != tuple(crowded.encoder.bands):
            raise BlissConfigError(
                f"predict.crowded.checkpoint is for bands {list(crowded.encoder.bands)}, the "
                f"main model for {list(sparse.encoder.bands)}; use a crowded-field model of the "
                "same survey."
            )
        if settings.block_px % crowded.encoder.tile_slen:  # CrowdingSettings checks > 0
            raise BlissConfigError(
                f"predict.crowded.block_px={settings.block_px}; expected a positive multiple of "
                f"the crowded model's tile size ({crowded.encoder.tile_slen} px)."
            )
        self.sparse = sparse
        self.crowded = crowded
        self.settings = settings
        self.context_px = context_px
        self.crowded_checkpoint = crowded_checkpoint
        self.picks: dict[str, Any] = {}

    @property
    def encoder(self) -> Any:
        """The sparse model's encoder (its bands and reference band name the catalog's)."""
        return self.sparse.encoder

    @property
    def density_shift(self) -> Any:
        """The sparse model's density adaptation of the last image.

        The crowded model's prior has no one density to move from.
        """
        return self.sparse.density_shift

    def applies_aperture_correction(self, image: SurveyImage) -> bool:
        """As the sparse predictor (the crowded one is built for the same survey)."""
        return self.sparse.applies_aperture_correction(image)

    def predict_and_sample(
        self,
        image: SurveyImage,
        threshold: float = 0.5,
        n_samples: int = 0,
        quantiles: tuple[float, ...] = (0.05, 0.95),
    ) -> tuple[FullCatalog, list[FullCatalog]]:
        """As :meth:`Predictor.predict_and_sample`, with the crowded blocks from the crowded model."""
        catalog, samples, _ = self.predict_with_regions(image, threshold, n_samples, quantiles)
        return catalog, samples

    def predict_with_regions(
        self,
        image: SurveyImage,
        threshold: float = 0.5,
        n_samples: int = 0,
        quantiles: tuple[float, ...] = (0.05, 0.95),
    ) -> tuple[FullCatalog, list[FullCatalog], dict[str, RegionEstimate]]:
        """:meth:`predict_and_sample` plus the sparse model's region quantities, over the image."""
        ref = self.encoder.reference_index
        blocks = crowded_blocks(image.images[ref], image.background[ref], self.settings)
        block = self.settings.block_px
        self.picks = {
            "crowded_blocks": int(blocks.sum()),
            "block_px": block,
            "crowded_share": float(blocks.mean()) if blocks.size else 0.0,
        }
        # PSF-fitting the main model's many sources on a crowded frame would cost minutes
        # (M2: 40 s -> 86 s): a frame with crowded blocks keeps the network's fluxes
        catalog, samples, regions = self.sparse.predict_with_regions(
            image,
            threshold,
            n_samples,
            quantiles,
            star_photometry=not blocks.any(),
            saturated_stars=False,  # once, on the merged catalog
        )
        catalog = _mark(catalog, 0.0)  # joint samples carry no flags, so no mark either
        if not blocks.any():
            return (*self.sparse.add_saturated_stars(image, catalog, samples, quantiles), regions)
        height, width = image.images.shape[1:]
        for rows, cols, member in crowded_boxes(blocks, block, (height, width)):
            crop, origin = _crop(image, rows, cols, self.context_px)
            found, drawn, _ = self.crowded.predict_with_regions(
                crop, threshold, n_samples, quantiles, saturated_stars=False
            )
            owned = np.zeros((-(-height // block), -(-width // block)), dtype=bool)
            owned[
                rows.start // block : rows.start // block + member.shape[0],
                cols.start // block : cols.start // block + member.shape[1],
            ] = member
            catalog = _replace(catalog, _mark(found, 1.0), origin, owned, block)
            samples = [
                _replace(s, d, origin, owned, block) for s, d in zip(samples, drawn, strict=True)
            ]
        return (*self.sparse.add_saturated_stars(image, catalog, samples, quantiles), regions)


def _mark(catalog: FullCatalog, value: float) -> FullCatalog:
    n = catalog["plocs"].shape[1]
    return FullCatalog(
        catalog.height_px,
        catalog.width_px,
        {**dict(catalog.items()), CROWDED_KEY: torch.full((1, n, 1), value)},
    )


def _crop(
    image: SurveyImage, rows: slice, cols: slice, context_px: int
) -> tuple[SurveyImage, tuple[int, int]]:
    """The part of ``image`` in ``rows, cols`` with ``context_px`` around it, and its origin."""
    height, width = image.images.shape[1:]
    r0, r1 = max(rows.start - context_px, 0), min(rows.stop + context_px, height)
    c0, c1 = max(cols.start - context_px, 0), min(cols.stop + context_px, width)
    fwhm_map = None if image.psf_fwhm_map is None else image.psf_fwhm_map[:, r0:r1, c0:c1]
    crop = dataclasses.replace(
        image,
        images=image.images[:, r0:r1, c0:c1],
        background=image.background[:, r0:r1, c0:c1],
        psf_fwhm_map=fwhm_map,
        wcs=None if image.wcs is None else image.wcs[r0:r1, c0:c1],
        psf=None if image.psf is None else _shifted_psf(image.psf, r0, c0),
        saturated=None if image.saturated is None else image.saturated[:, r0:r1, c0:c1],
    )
    return crop, (r0, c0)


def _shifted_psf(
    psf: Callable[[int, float, float], np.ndarray], row0: int, col0: int
) -> Callable[[int, float, float], np.ndarray]:
    """The PSF model of a crop whose first pixel is the full image's ``(row0, col0)``."""
    return lambda band, row, col: psf(band, row + row0, col + col0)


def _replace(
    catalog: FullCatalog,
    crowded: FullCatalog,
    origin: tuple[int, int],
    owned: np.ndarray,
    block_px: int,
) -> FullCatalog:
    """``catalog`` without its sources in ``owned`` blocks, plus ``crowded``'s sources there."""
    offset = torch.tensor(origin, dtype=catalog["plocs"].dtype)

    def in_owned(plocs: torch.Tensor) -> torch.Tensor:
        index = (plocs // block_px).long()
        rows = index[:, 0].clamp(0, owned.shape[0] - 1)
        cols = index[:, 1].clamp(0, owned.shape[1] - 1)
        return torch.from_numpy(owned)[rows, cols]

    keep_old = ~in_owned(catalog["plocs"][0])
    shifted = {
        key: value + offset if key == "plocs" or key.startswith("plocs@") else value
        for key, value in crowded.items()
        if key != "n_sources"
    }
    keep_new = in_owned(shifted["plocs"][0])
    data = {}
    for key, value in catalog.items():
        if key == "n_sources":
            continue
        old = value[:, keep_old]
        if key in shifted:
            new = shifted[key][:, keep_new].to(value.dtype)
        else:  # a key the crowded model lacks: galaxy probability 0, galaxy shapes unknown
            fill = 0.0 if key == "prob_galaxy" or key == "source_type" else float("nan")
            new = torch.full((1, int(keep_new.sum()), value.shape[-1]), fill, dtype=value.dtype)
        data[key] = torch.cat([old, new], dim=1)
    data["n_sources"] = torch.tensor([int(keep_old.sum() + keep_new.sum())])
    return FullCatalog(catalog.height_px, catalog.width_px, data)
