"""Region posteriors averaged over the image's eight turns (``bliss.predict.region_turns``).

A stand-in for the network measures each region's spin-2 quadrupole (which turns with the image
as a shear does) and its light (a scalar that only moves with its region), plus fixed offsets:
averaged over the turns the quadrupole stays, its offset goes and the scalar map comes back in
place. A wrong sign or a grid turned back the wrong way fails these checks.
"""

import dataclasses

import numpy as np
import pytest
import torch

from bliss.errors import BlissConfigError
from bliss.posterior.factors import LogNormalFactor, NormalFactor
from bliss.posterior.regions import RegionFactor
from bliss.predict.predictor import Predictor
from bliss.predict.region_turns import DIHEDRAL_TURNS, turn_inputs, turned_region_params
from tests.unit.predict.test_predictor import make_image

OFFSET = torch.tensor([0.03, -0.02])
REGIONS = {
    "shear": RegionFactor(NormalFactor("shear", dim=2)),
    "light": RegionFactor(NormalFactor("convergence_map", dim=1), region_px=4),
}


def _quadrupole(images: torch.Tensor) -> torch.Tensor:
    """Spin-2 quadrupole of ``... h w`` about the centre. Shape ``... 2``."""
    side = images.shape[-1]
    axis = torch.arange(side) - (side - 1) / 2
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    norm = (images * (rows**2 + cols**2)).sum((-2, -1))
    e1 = (images * (cols**2 - rows**2)).sum((-2, -1)) / norm
    e2 = (images * 2 * rows * cols).sum((-2, -1)) / norm
    return torch.stack([e1, e2], -1)


def _stand_in(offset: torch.Tensor):
    def region_params(data: dict) -> dict[str, torch.Tensor]:
        images = data["images"][:, 0]  # b h w
        loc = _quadrupole(images) + offset
        shear = torch.stack([loc, torch.zeros_like(loc)], -1).flatten(-2)[:, None, None]
        blocks = images.unflatten(-2, (-1, 4)).unflatten(-1, (-1, 4)).sum((-3, -1))  # b hr wr
        light = torch.stack([blocks + 7.0, torch.zeros_like(blocks)], -1)  # b hr wr 2
        return {"shear": shear, "light": light}

    return region_params


def _loc_scale(name: str, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return REGIONS[name].factor._loc_scale(params)


def test_an_offset_goes_and_the_measurement_stays() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 1, 8, 8, generator=generator) ** 4  # lopsided: a real quadrupole
    data = {"images": images, "background": torch.ones(3, 1)}
    out = turned_region_params(REGIONS, _stand_in(OFFSET), data)
    plain = _stand_in(torch.zeros(2))(data)
    calls = []

    def counted(turned: dict) -> dict:
        calls.append(turned)
        return _stand_in(OFFSET)(turned)

    given = turned_region_params(REGIONS, counted, data, unturned=_stand_in(OFFSET)(data))
    assert len(calls) == 7  # the image as it is was given, not computed again
    for name in REGIONS:
        torch.testing.assert_close(given[name], out[name])
    shear, width = _loc_scale("shear", out["shear"])
    moment, own = _loc_scale("shear", plain["shear"])
    assert moment.abs().max() > 0.01
    torch.testing.assert_close(shear, moment, atol=1e-6, rtol=0)
    # the mixture's width: each turn's own and the offset's spread over the turns
    expected = (own**2 + OFFSET**2).sqrt()
    torch.testing.assert_close(width, expected.expand_as(width), atol=1e-6, rtol=1e-5)
    light, light_width = _loc_scale("light", out["light"])
    torch.testing.assert_close(light, _loc_scale("light", plain["light"])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        light_width, _loc_scale("light", plain["light"])[1], atol=1e-6, rtol=1e-5
    )


def test_turned_inputs_move_maps_and_the_psf_ellipticity_only() -> None:
    data = {
        "images": torch.arange(12.0).reshape(1, 3, 4),
        "background": torch.full((1,), 2.0),
        "psf_shape": torch.tensor([[0.1, 0.2, 0.5]]),
    }
    assert len(set(DIHEDRAL_TURNS)) == 8
    quarter = turn_inputs(data, 1, False)
    assert torch.equal(quarter["images"], torch.rot90(data["images"], 1, dims=(-2, -1)))
    assert torch.equal(quarter["background"], data["background"])
    torch.testing.assert_close(quarter["psf_shape"], torch.tensor([[-0.1, -0.2, 0.5]]))
    mirrored = turn_inputs(data, 0, True)
    assert torch.equal(mirrored["images"], torch.flip(data["images"], dims=(-1,)))
    torch.testing.assert_close(mirrored["psf_shape"], torch.tensor([[0.1, -0.2, 0.5]]))


def test_only_normal_factors_of_scalars_or_spin2_quantities_are_averaged() -> None:
    regions = {"size": RegionFactor(LogNormalFactor("size", dim=1))}
    with pytest.raises(BlissConfigError, match="encoder.regions.size: a LogNormalFactor"):
        turned_region_params(regions, _stand_in(OFFSET), {"images": torch.ones(1, 1, 8, 8)})


def _quarter_turned(image):  # noqa: ANN001, ANN202
    turn = lambda a: np.ascontiguousarray(np.rot90(a, 1, axes=(1, 2)))  # noqa: E731
    return dataclasses.replace(image, images=turn(image.images), background=turn(image.background))


def test_the_averaged_estimate_turns_with_the_image(region_encoder) -> None:
    """Averaged over the turns, the estimate of a turned image is the estimate turned.

    The untrained network is far from equivariant (checked), so this holds only because of the
    averaging: the eight turns of a turned image are the same eight images.
    """
    image = make_image(height=64, width=48)
    for turns, exact in ((8, True), (1, False)):
        predictor = Predictor(region_encoder, chunk_px=4096, progress=False, region_turns=turns)
        _, _, regions = predictor.predict_with_regions(image)
        _, _, turned = predictor.predict_with_regions(_quarter_turned(image))
        shear_back = -turned["shear"].median  # a quarter turn: (e1, e2) -> -(e1, e2)
        kappa_back = np.rot90(turned["kappa"].median, -1, axes=(0, 1))
        assert turned["kappa"].median.shape == (3, 4, 1)
        close = np.allclose(shear_back, regions["shear"].median, atol=1e-5) and np.allclose(
            kappa_back, regions["kappa"].median, atol=1e-5
        )
        assert close == exact, (turns, shear_back, regions["shear"].median)


def test_region_turns_other_than_1_or_8_are_refused(region_encoder) -> None:
    with pytest.raises(BlissConfigError, match="predict.region_turns=4"):
        Predictor(region_encoder, progress=False, region_turns=4)
