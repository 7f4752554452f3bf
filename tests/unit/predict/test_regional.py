"""Crowded blocks found from pixels, and the two-model catalog that takes each block from one model."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.flags import flag_value, source_flags
from bliss.errors import BlissConfigError, BlissValueError
from bliss.predict.crowding import CrowdingSettings, crowded_blocks, crowded_boxes
from bliss.predict.regional import CROWDED_KEY, RegionalPredictor
from bliss.protocols import SurveyImage
from bliss.simulator.torch_render import TorchRenderer

SKY = 400.0
SIZE = 128


def _render(plocs: np.ndarray, electrons: np.ndarray, seed: int = 0) -> np.ndarray:
    catalog = FullCatalog(
        SIZE,
        SIZE,
        {
            "n_sources": torch.tensor([len(plocs)]),
            "plocs": torch.as_tensor(plocs, dtype=torch.float32)[None],
            "fluxes": torch.as_tensor(electrons, dtype=torch.float32)[None, :, None],
        },
    )
    clean = TorchRenderer().render(catalog, torch.tensor([[1.4]]), 0.396)[0, 0].numpy()
    return np.random.default_rng(seed).poisson(clean + SKY).astype(np.float64)


def test_a_cluster_half_is_crowded_and_a_bright_star_is_not():
    rng = np.random.default_rng(1)
    # left half: 0.08 stars per px^2 of 3000-30000 electrons; right half: one bright star
    n = int(0.08 * SIZE * SIZE / 2)
    left = np.stack([rng.uniform(0, SIZE, n), rng.uniform(0, SIZE / 2, n)], axis=1)
    electrons = 3000 * 10 ** rng.uniform(0, 1, n)
    plocs = np.concatenate([left, [[64.0, 96.0]]])
    image = _render(plocs, np.concatenate([electrons, [5e6]]))
    blocks = crowded_blocks(image, np.full_like(image, SKY), CrowdingSettings(block_px=64))
    assert blocks.tolist() == [[True, False], [True, False]]
    sparse = _render(plocs[::40], electrons[::40], seed=2)
    assert not crowded_blocks(sparse, np.full_like(sparse, SKY), CrowdingSettings(64)).any()


def test_boxes_group_touching_blocks():
    blocks = np.array([[True, True, False], [False, True, False], [False, False, False]])
    boxes = crowded_boxes(blocks, 32, (80, 96))
    assert len(boxes) == 1
    rows, cols, member = boxes[0]
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 64, 0, 64)
    assert member.tolist() == [[True, True], [False, True]]


class _FixedPredictor:
    """Returns the sources of a fixed list that fall inside the image it is given."""

    def __init__(self, plocs: list, tile_slen: int, galaxies: bool) -> None:
        self.encoder = SimpleNamespace(bands=("r",), reference_index=0, tile_slen=tile_slen)
        self.plocs = torch.tensor(plocs, dtype=torch.float32)
        self.galaxies = galaxies
        self.progress = False
        self.seen: list[tuple[int, int]] = []
        self.star_photometry: list[bool] = []
        self.saturated_runs = 0  # add_saturated_stars calls

    def applies_aperture_correction(self, image) -> bool:
        return False

    def predict_and_sample(self, image, threshold, n_samples, quantiles, star_photometry=True):
        height, width = image.images.shape[1:]
        self.seen.append((height, width))
        self.star_photometry.append(star_photometry)
        inside = (self.plocs[:, 0] < height) & (self.plocs[:, 1] < width)
        plocs = self.plocs[inside]
        n = len(plocs)
        data = {"n_sources": torch.tensor([n]), "plocs": plocs[None], "fluxes": torch.ones(1, n, 1)}
        if self.galaxies:
            data["prob_galaxy"] = torch.full((1, n, 1), 0.9)
            data["disk_q"] = torch.full((1, n, 1), 0.5)
        catalog = FullCatalog(height, width, data)
        return catalog, [catalog] * n_samples

    def predict_with_regions(
        self, image, threshold, n_samples, quantiles, star_photometry=True, saturated_stars=True
    ):
        assert not saturated_stars  # the regional predictor runs it once, on the merged catalog
        return (
            *self.predict_and_sample(image, threshold, n_samples, quantiles, star_photometry),
            {},
        )

    def add_saturated_stars(self, image, catalog, samples, quantiles):
        self.saturated_runs += 1
        return catalog, samples


def _image(images: np.ndarray) -> SurveyImage:
    return SurveyImage(
        None,
        ("r",),
        images[None],
        np.full_like(images, SKY)[None],
        np.array([1.4]),
        np.array([28.0]),
        None,
    )


def test_each_block_takes_its_sources_from_one_model(monkeypatch):
    crowded_plocs = [[5.0, 5.0], [30.0, 60.0], [70.0, 10.0]]  # in crop coordinates
    sparse = _FixedPredictor([[10.0, 10.0], [100.0, 100.0], [40.0, 70.0]], 4, galaxies=True)
    crowded = _FixedPredictor(crowded_plocs, 2, galaxies=False)
    blocks = np.array([[True, False], [False, False]])
    monkeypatch.setattr("bliss.predict.regional.crowded_blocks", lambda *args: blocks)
    regional = RegionalPredictor(sparse, crowded, CrowdingSettings(block_px=64), context_px=8)
    catalog, samples = regional.predict_and_sample(_image(np.full((128, 128), SKY)), 0.5, 2)
    # the crowded model saw the block with 8 px of context (64 + 8 on the inner sides)
    assert crowded.seen == [(72, 72)]
    plocs = catalog["plocs"][0].tolist()
    crowded_flag = catalog[CROWDED_KEY][0, :, 0].tolist()
    # sparse (10, 10) is in the crowded block: replaced; (100, 100) and (40, 70) stay
    assert sorted(map(tuple, plocs)) == [(5.0, 5.0), (30.0, 60.0), (40.0, 70.0), (100.0, 100.0)]
    by_position = dict(zip(map(tuple, plocs), crowded_flag, strict=True))
    assert by_position[(5.0, 5.0)] == 1.0 and by_position[(100.0, 100.0)] == 0.0
    # (70, 10) of the crop lies outside the crowded block (row 70 >= 64): not kept
    assert (70.0, 10.0) not in by_position
    galaxy = dict(zip(map(tuple, plocs), catalog["prob_galaxy"][0, :, 0].tolist(), strict=True))
    assert galaxy[(5.0, 5.0)] == 0.0 and galaxy[(40.0, 70.0)] == pytest.approx(0.9)
    disk_q = dict(zip(map(tuple, plocs), catalog["disk_q"][0, :, 0].tolist(), strict=True))
    assert np.isnan(disk_q[(5.0, 5.0)]) and disk_q[(40.0, 70.0)] == 0.5
    assert [int(s["n_sources"][0]) for s in samples] == [4, 4]
    assert regional.picks["crowded_blocks"] == 1 and regional.picks["crowded_share"] == 0.25
    # a frame with a crowded block keeps the main model's fluxes (no PSF fit of its sources)
    assert sparse.star_photometry == [False]
    # saturated stars are cataloged once, on the merged catalog, with the main model's settings
    assert (sparse.saturated_runs, crowded.saturated_runs) == (1, 0)


def test_a_frame_without_crowded_blocks_gets_star_photometry(monkeypatch):
    sparse = _FixedPredictor([[10.0, 10.0]], 4, galaxies=True)
    crowded = _FixedPredictor([], 2, galaxies=False)
    monkeypatch.setattr(
        "bliss.predict.regional.crowded_blocks", lambda *args: np.zeros((2, 2), bool)
    )
    regional = RegionalPredictor(sparse, crowded, CrowdingSettings(block_px=64), context_px=8)
    regional.predict_and_sample(_image(np.full((128, 128), SKY)), 0.5, 0)
    assert sparse.star_photometry == [True] and crowded.seen == []


def test_bands_must_agree_and_flags_mark_crowded_sources():
    sparse = _FixedPredictor([], 4, galaxies=True)
    crowded = _FixedPredictor([], 2, galaxies=False)
    crowded.encoder = SimpleNamespace(bands=("g",), reference_index=0, tile_slen=2)
    with pytest.raises(BlissConfigError, match="bands"):
        RegionalPredictor(sparse, crowded, CrowdingSettings())
    flags = source_flags(
        np.array([[20.0, 20.0], [40.0, 40.0]]),
        np.zeros((64, 64), dtype=bool),
        3.0,
        crowded=np.array([True, False]),
    )
    assert (flags & flag_value("crowded")).tolist() == [flag_value("crowded"), 0]


def test_marginal_probability_counts_the_samples_that_hold_each_source():
    from bliss.predict.cataloging import marginal_prob_source

    def catalog(plocs: list) -> FullCatalog:
        n = len(plocs)
        return FullCatalog(
            32, 32, {"n_sources": torch.tensor([n]), "plocs": torch.tensor([plocs]).view(1, n, 2)}
        )

    point = catalog([[5.0, 5.0], [20.0, 20.0]])
    samples = [
        catalog([[5.2, 5.1], [20.5, 20.0]]),
        catalog([[5.0, 5.9]]),  # (20, 20) missing
        catalog([[6.5, 5.0], [20.0, 20.3]]),  # (5, 5) too far (1.5 px)
        catalog([[5.1, 5.0], [5.0, 5.2]]),  # two draws near (5, 5): it is matched once
    ]
    marginal = marginal_prob_source(point, samples)
    assert marginal.shape == (1, 2, 1)
    assert marginal[0, :, 0].tolist() == [0.75, 0.5]
    with pytest.raises(BlissValueError, match="at least one"):
        marginal_prob_source(point, [])


@pytest.mark.parametrize("key", ["block_px", "min_peak_density", "min_median_snr"])
def test_crowding_settings_refuse_non_positive_values(key):
    with pytest.raises(BlissConfigError, match=f"predict.crowded.{key}"):
        CrowdingSettings(**{key: 0})


def test_the_crowded_model_gets_psf_photometry_unless_switched_off():
    from pathlib import Path

    import bliss
    from bliss.encoder.checkpoint import load_encoder
    from bliss.predict.model import model_conditions
    from bliss.predict.predictor import PredictorSettings, build_predictor
    from bliss.predict.regional import CrowdedModel, build_regional
    from tests.integration.test_shipped_model import SDSS

    path = Path(bliss.__file__).parent / "models" / "sdss_crowded.ckpt"
    encoder, config = load_encoder(path)
    model = model_conditions(tuple(encoder.bands), config)
    sparse = build_predictor(PredictorSettings(), encoder, model, progress=False, survey=SDSS)
    for switch, expected in ((True, True), (False, False)):
        crowded = CrowdedModel(encoder, model, "c.ckpt", CrowdingSettings(), psf_photometry=switch)
        regional = build_regional(sparse, crowded, PredictorSettings())
        assert (regional.crowded.star_photometry is not None) is expected
    off = build_regional(sparse, crowded, PredictorSettings(psf_photometry=False))
    assert off.crowded.star_photometry is None
