"""Rotation and flip augmentations commute with rendering."""

import numpy as np
import pytest
import torch

from bliss.catalog import GALAXY_KEYS, FullCatalog, TileCatalog
from bliss.data.transforms import flip_cols, rotate90
from bliss.simulator.lensing import galaxy_ellipticity
from bliss.simulator.render import GalsimRenderer, moffat_psf

IMAGE_PX = 32
TILE_SLEN = 4
PIXEL_SCALE = 0.396
CAT = "catalog/"

RENDERER = GalsimRenderer()  # the shipped settings (conf/simulator/galsim.yaml)
PSFS = [moffat_psf(1.3), moffat_psf(1.1)]


def _catalog() -> FullCatalog:
    """An elongated galaxy (q = 0.3, beta = 0.3 rad) and a star, off the image's symmetry axes."""
    galaxy = dict(zip(GALAXY_KEYS, [1.0, 0.3, 0.3, 1.2, 1.0, 0.5], strict=True))
    data = {
        "n_sources": torch.tensor([2]),
        "plocs": torch.tensor([[[13.3, 10.7], [22.6, 20.2]]]),
        "source_type": torch.tensor([[[1.0], [0.0]]]),
        "fluxes": torch.tensor([[[5000.0, 7000.0], [3000.0, 2000.0]]]),
        **{key: torch.tensor([[[value], [0.0]]]) for key, value in galaxy.items()},
    }
    return FullCatalog(IMAGE_PX, IMAGE_PX, data)


def _render(full: FullCatalog, lensing: tuple[float, float] | None = None) -> torch.Tensor:
    """Noise-free image of the first catalog of ``full``, electrons, optionally sheared. Shape: ``c h w``."""
    n = int(full["n_sources"][0])
    galaxy_params = torch.cat([full[key][0, :n] for key in GALAXY_KEYS], dim=-1)
    image = RENDERER.render(
        plocs=full["plocs"][0, :n].double().numpy(),
        flux_electrons=full["fluxes"][0, :n].double().numpy(),
        is_galaxy=full["source_type"][0, :n, 0].numpy() > 0.5,
        galaxy_params=galaxy_params.double().numpy(),
        psfs=PSFS,
        image_shape=(full.height_px, full.width_px),
        pixel_scale_arcsec=PIXEL_SCALE,
        lensing=None if lensing is None else np.array([[*lensing, 1.0]] * n),
    )
    return torch.from_numpy(np.asarray(image))


def _item() -> dict[str, torch.Tensor]:
    """An example as the DataModule yields it: ``images`` and ``catalog/<key>`` without ``b``."""
    full = _catalog()
    tiles = full.to_tile_catalog(TILE_SLEN, max_sources=1)
    return {"images": _render(full), **{CAT + key: value[0] for key, value in tiles.items()}}


def _catalog_of(item: dict[str, torch.Tensor]) -> FullCatalog:
    data = {
        key.removeprefix(CAT): value.unsqueeze(0)
        for key, value in item.items()
        if key.startswith(CAT)
    }
    return TileCatalog(TILE_SLEN, data).to_full_catalog()


def _transform(item: dict[str, torch.Tensor], n_rotations: int, flip: bool) -> dict:
    for _ in range(n_rotations):
        item = rotate90(item)
    return flip_cols(item) if flip else item


@pytest.mark.parametrize("flip", [False, True], ids=["rotate", "rotate+flip"])
@pytest.mark.parametrize("n_rotations", [0, 1, 2, 3])
def test_transform_commutes_with_rendering(n_rotations, flip):
    item = _item()
    transformed = _transform(item, n_rotations, flip)

    rerendered = _render(_catalog_of(transformed))

    peak = float(item["images"].max())
    # a square pixel grid and a circular PSF make this exact up to float32 round-off of the
    # positions and the FFT (measured 3e-7 of the peak). 1e-5 leaves 30x margin and is still
    # ~600x below the residual of a 1 degree error in beta or a 0.01 px shift (both ~6e-3).
    assert float((rerendered - transformed["images"]).abs().max()) < 1e-5 * peak


def test_ignoring_the_position_angle_breaks_commutation():
    # the check above has power: rotating positions but not beta leaves a visible residual
    item = _item()
    rotated = rotate90(item, oriented_keys={})
    residual = (_render(_catalog_of(rotated)) - rotated["images"]).abs().max()
    assert float(residual) > 1e-2 * float(item["images"].max())


def test_four_rotations_and_two_flips_are_the_identity():
    item = _item()
    for transformed in (_transform(item, 4, False), flip_cols(flip_cols(item))):
        assert torch.equal(transformed["images"], item["images"])
        for key, value in item.items():
            if key == "images":
                continue
            # locs pass through 1 - x several times: float32 round-off of numbers < 1
            torch.testing.assert_close(
                transformed[key],
                value,
                atol=1e-6,
                rtol=0,
                msg=lambda text, key=key: f"{key}: {text}",
            )


def test_rotation_moves_the_source_where_the_image_moves_it():
    item = _item()
    rotated = rotate90(item)
    before = _catalog_of(item)["plocs"][0]
    after = _catalog_of(rotated)["plocs"][0]
    # torch.rot90 sends (row, col) to (W - col, row)
    expected = torch.stack([IMAGE_PX - before[:, 1], before[:, 0]], dim=-1)
    sort = lambda p: p[torch.argsort(p[:, 0])]  # noqa: E731
    torch.testing.assert_close(sort(after), sort(expected), atol=1e-4, rtol=0)


def _lensed_item(shear: tuple[float, float]) -> dict[str, torch.Tensor]:
    """The example's galaxy lensed by a constant ``shear``, with the shear and a map as fields."""
    full = _catalog()
    item = _item()
    item["images"] = _render(full, lensing=shear)
    item["fields/shear"] = torch.tensor([[shear]])
    item["fields/shear_map"] = torch.arange(8.0).reshape(2, 2, 2)
    return item


@pytest.mark.parametrize("flip", [False, True], ids=["rotate", "rotate+flip"])
@pytest.mark.parametrize("n_rotations", [1, 2, 3])
def test_shear_turns_as_a_spin2_field_under_the_augmentation(n_rotations, flip):
    item = _lensed_item((0.15, -0.1))
    transformed = _transform(item, n_rotations, flip)
    shear = tuple(transformed["fields/shear"][0, 0].tolist())
    # the transformed catalog lensed by the transformed shear is the transformed image
    rerendered = _render(_catalog_of(transformed), lensing=shear)
    peak = float(item["images"].max())
    assert float((rerendered - transformed["images"]).abs().max()) < 1e-5 * peak
    # and the shear changed (a spin-2 value is unchanged only by a half turn without a flip)
    if (n_rotations, flip) != (2, False):
        assert not np.allclose(shear, (0.15, -0.1))


def test_region_maps_move_with_the_image():
    item = _lensed_item((0.0, 0.0))
    item["fields/convergence_map"] = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])
    rotated = rotate90(item)
    # torch.rot90 moves the top-right region to the top-left; a scalar map is only moved
    assert rotated["fields/convergence_map"][..., 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]
    flipped = flip_cols(item)
    assert flipped["fields/convergence_map"][..., 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]
    # a spin-2 map is moved and turned: a half turn of (e1, e2) by -90 degrees flips both signs
    expected = -torch.rot90(item["fields/shear_map"], 1, dims=(0, 1))
    torch.testing.assert_close(rotated["fields/shear_map"], expected)


@pytest.mark.parametrize("flip", [False, True], ids=["rotate", "rotate+flip"])
@pytest.mark.parametrize("n_rotations", [1, 2, 3])
def test_ellipticity_turns_with_the_galaxy_it_describes(n_rotations, flip):
    item = _item()
    galaxy = item[CAT + "source_type"][..., 0] > 0.5
    params = torch.cat([item[CAT + key][galaxy] for key in GALAXY_KEYS], -1).double().numpy()
    ellipticity = torch.zeros(*galaxy.shape, 2)
    ellipticity[galaxy] = torch.from_numpy(galaxy_ellipticity(params)).float()
    item[CAT + "ellipticity"] = ellipticity
    transformed = _transform(item, n_rotations, flip)
    turned = transformed[CAT + "source_type"][..., 0] > 0.5
    params = torch.cat([transformed[CAT + key][turned] for key in GALAXY_KEYS], -1).double()
    expected = galaxy_ellipticity(params.numpy())
    np.testing.assert_allclose(
        transformed[CAT + "ellipticity"][turned].numpy(), expected, atol=1e-6
    )
