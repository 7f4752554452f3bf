"""TorchRenderer against the GalSim reference: same catalogs, same images; noise statistics."""

import math
import subprocess
import sys
from importlib.resources import files

import galsim
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bliss.catalog import GALAXY_KEYS, FullCatalog
from bliss.cli.generate import build_simulator
from bliss.errors import BlissShapeError, BlissValueError
from bliss.simulator._stamps import paste_stamps
from bliss.simulator._torch_profiles import devaucouleurs_fourier, moffat_fourier
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.render import (
    DEVAUCOULEURS_N,
    GalsimRenderer,
    _bulge_ft_table,
    galaxy_profile,
    image_psf,
    moffat_psf,
)
from bliss.simulator.simulate import ImageSimulator
from bliss.simulator.torch_render import (
    TorchRenderer,
    _paste,
    add_sky_and_noise_torch,
    draw_unit_stamps,
    psf_image_fourier,
)
from bliss.surveys import ParametricSurvey
from tests.conftest import compose_config
from tests.unit.simulator.test_render import centroid, galsim_reference, second_moments

SCALE = 0.396  # arcsec / px
SHAPE = (96, 96)  # holds the largest (64 px) stamp
PSF_FWHM = (1.3, 1.6)  # arcsec, one per band
PLOC = (48.27, 47.64)

# galaxies across the default prior's shape range, its extremes included
_SHAPE = OmegaConf.load(str(files("bliss.conf") / "prior" / "default.yaml")).galaxy_shape
DISK, BULGE, Q_MIN = _SHAPE.disk_hlr_arcsec, _SHAPE.bulge_hlr_arcsec, _SHAPE.q_min
GALAXIES = {  # disk_frac, beta_rad, disk_q, disk_hlr_arcsec, bulge_q, bulge_hlr_arcsec
    "smallest_flattest": (0.5, 0.3, Q_MIN, DISK["min"], Q_MIN, BULGE["min"]),
    "largest_flattest_disk": (1.0, 2.0, Q_MIN, DISK["max"], 1.0, BULGE["min"]),
    "largest_flattest_bulge": (0.0, 1.0, 1.0, DISK["min"], Q_MIN, BULGE["max"]),
    "largest_both": (0.4, 0.8, 0.35, DISK["max"], 0.5, BULGE["max"]),
    "median_round": (0.5, 0.0, 1.0, DISK["median"], 1.0, BULGE["median"]),
    "typical": (0.7, 2.8, 0.5, 1.5, 0.7, 1.0),
    "edge_on_along_rows": (0.9, math.pi / 2, Q_MIN, DISK["median"], 0.6, BULGE["median"]),
}


def full_catalog(plocs, fluxes, params=None, shape=SHAPE) -> FullCatalog:
    """A one-image catalog; ``params`` (``n 6``) makes every source a galaxy."""
    plocs = torch.tensor(plocs, dtype=torch.float32).reshape(1, -1, 2)
    n_sources = plocs.shape[1]
    data = {
        "n_sources": torch.tensor([n_sources]),
        "plocs": plocs,
        "fluxes": torch.tensor(fluxes, dtype=torch.float32).reshape(1, n_sources, -1),
    }
    if params is not None:
        values = torch.tensor(params, dtype=torch.float32).reshape(1, n_sources, 6)
        data["source_type"] = torch.ones(1, n_sources, 1)
        data.update({key: values[..., [i]] for i, key in enumerate(GALAXY_KEYS)})
    return FullCatalog(*shape, data)


def render_both(plocs, fluxes, params=None, fwhm=PSF_FWHM, beta=3.5, shape=SHAPE):
    """The same sources drawn by both renderers. Shape: ``c h w`` each."""
    n_sources = len(plocs)
    is_galaxy = np.full(n_sources, params is not None)
    galaxy = np.zeros((n_sources, 6)) if params is None else np.asarray(params, dtype=float)
    reference = GalsimRenderer().render(
        np.asarray(plocs, dtype=float),
        np.asarray(fluxes, dtype=float),
        is_galaxy,
        galaxy,
        [moffat_psf(f, beta) for f in fwhm],
        shape,
        SCALE,
    )
    catalog = full_catalog(plocs, fluxes, params, shape)
    ours = TorchRenderer().render(catalog, torch.tensor([fwhm]), SCALE, psf_beta=beta)
    return ours[0].numpy().astype(np.float64), reference.astype(np.float64)


def assert_same_source(ours, reference, flux):
    """The validation criteria: flux, centroid, second moments and summed residual of one source."""
    assert ours.sum() == pytest.approx(reference.sum(), rel=0.01)
    assert ours.sum() == pytest.approx(flux, rel=0.01)
    np.testing.assert_allclose(centroid(ours), centroid(reference), atol=0.02)
    var_row, var_col, cov = second_moments(ours)
    ref_row, ref_col, ref_cov = second_moments(reference)
    assert var_row == pytest.approx(ref_row, rel=0.02)
    assert var_col == pytest.approx(ref_col, rel=0.02)
    assert abs(cov - ref_cov) < 0.02 * math.sqrt(ref_row * ref_col)
    assert np.abs(ours - reference).sum() < 0.01 * flux


def test_the_torch_renderer_does_not_import_galsim():
    code = "import sys, bliss.simulator.torch_render; print('galsim' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_devaucouleurs_fourier_transform_matches_galsim():
    step, table = _bulge_ft_table(DEVAUCOULEURS_N)  # GalSim's, on the same log1p grid
    k = np.expm1(step * np.arange(len(table)))
    ours = devaucouleurs_fourier()(torch.as_tensor(k)).numpy()
    assert ours[0] == pytest.approx(1.0, abs=1e-12)  # unit flux
    assert np.abs(ours - table).max() < 1e-4


@pytest.mark.parametrize("beta", [1.5, 2.5, 3.5, 4.7])
def test_moffat_fourier_transform_matches_galsim(beta):
    profile = galsim.Moffat(beta=beta, scale_radius=1.0)
    k = np.linspace(0.0, 40.0, 401)
    expected = np.array([profile.kValue(float(x), 0.0).real for x in k])
    ours = moffat_fourier(beta)(torch.as_tensor(k)).numpy()
    assert np.abs(ours - expected).max() < 1e-5


@pytest.mark.parametrize(("fwhm", "beta"), [(1.3, 3.5), (2.0, 2.5), (1.0, 4.5)])
def test_stamp_radii_follow_galsim_stepk(fwhm, beta):
    """Same radii -> same stamp sizes -> the same light folded into the same stamps."""
    ours, reference = TorchRenderer(), GalsimRenderer()
    radius = ours._psf_radius(torch.tensor([[fwhm]], dtype=torch.float64), beta, {}, SCALE)
    assert float(radius) == pytest.approx(reference._psf_radius(moffat_psf(fwhm, beta)), rel=1e-6)
    assert ours._disk_radius == pytest.approx(reference._disk_radius, rel=1e-6)
    assert ours._bulge_radius == pytest.approx(reference._bulge_unit_radius(4.0), rel=1e-6)


@pytest.mark.parametrize("ploc", [(48.0, 48.0), (48.5, 47.5), (47.73, 48.31)])
@pytest.mark.parametrize(("fwhm", "beta"), [(PSF_FWHM, 3.5), ((1.0, 2.2), 2.5), ((1.1, 1.4), 4.5)])
def test_star_matches_galsim(ploc, fwhm, beta):
    fluxes = [[1e4, 3e4]]
    ours, reference = render_both([ploc], fluxes, fwhm=fwhm, beta=beta)
    for band in range(2):
        assert_same_source(ours[band], reference[band], fluxes[0][band])
        np.testing.assert_allclose(centroid(ours[band]), ploc, atol=0.02)


@pytest.mark.parametrize("params", GALAXIES.values(), ids=GALAXIES.keys())
def test_galaxy_matches_galsim(params):
    fluxes = [[1e4, 3e4]]
    ours, reference = render_both([PLOC], fluxes, params=[params])
    for band in range(2):
        assert_same_source(ours[band], reference[band], fluxes[0][band])


@pytest.mark.parametrize("params", [None, GALAXIES["typical"]], ids=["star", "galaxy"])
def test_matches_galsim_drawimage_directly(params):
    psf = moffat_psf(PSF_FWHM[0])
    profile = psf if params is None else galsim.Convolve(galaxy_profile(params), psf)
    expected = galsim_reference(profile, PLOC, 1e4, shape=SHAPE)
    catalog = full_catalog([PLOC], [[1e4]], None if params is None else [params])
    ours = TorchRenderer().render(catalog, torch.tensor([[PSF_FWHM[0]]]), SCALE)[0, 0].numpy()
    assert np.abs(ours - expected).max() < 2e-3 * expected.max()


def test_batch_with_edges_and_dither_matches_galsim_image_by_image():
    rng = np.random.default_rng(0)
    n_images, n_sources, shape = 3, 6, (40, 56)
    plocs = rng.uniform(-6, [46, 62], size=(n_images, n_sources, 2))  # some outside the image
    fluxes = rng.uniform(1e3, 1e4, size=(n_images, n_sources, 2))
    params = np.stack(
        [rng.uniform(0, 1, (n_images, n_sources)), rng.uniform(0, np.pi, (n_images, n_sources))]
        + [rng.uniform(low, high, (n_images, n_sources)) for low, high in [(0.2, 1), (0.2, 2)] * 2],
        axis=-1,
    )
    is_galaxy = rng.uniform(size=(n_images, n_sources)) < 0.5
    offsets = rng.uniform(-1.6, 1.6, size=(n_images, 2, 2))
    fwhm = rng.uniform(1.1, 1.8, size=(n_images, 2))
    n_per_image = torch.tensor([6, 0, 4])  # padding rows are ignored
    data = {
        "n_sources": n_per_image,
        "plocs": torch.tensor(plocs),
        "fluxes": torch.tensor(fluxes),
        "source_type": torch.tensor(is_galaxy[..., None], dtype=torch.float32),
        **{key: torch.tensor(params[..., [i]]) for i, key in enumerate(GALAXY_KEYS)},
    }
    ours = TorchRenderer().render(
        FullCatalog(*shape, data), torch.tensor(fwhm), SCALE, band_offsets_px=torch.tensor(offsets)
    )
    assert ours.shape == (n_images, 2, *shape)
    assert ours.dtype == torch.float32
    for index in range(n_images):
        n = int(n_per_image[index])
        reference = GalsimRenderer().render(
            plocs[index, :n],
            fluxes[index, :n],
            is_galaxy[index, :n],
            params[index, :n],
            [moffat_psf(f) for f in fwhm[index]],
            shape,
            SCALE,
            band_offsets_px=offsets[index],
        )
        residual = np.abs(ours[index].numpy() - reference).sum()
        assert residual <= 1e-3 * max(fluxes[index, :n].sum(), 1.0)
    assert not ours[1].any()


def test_psf_images_reproduce_the_moffat_and_dilate():
    drawn = torch.tensor(moffat_psf(PSF_FWHM[0]).drawImage(nx=31, ny=31, scale=SCALE).array)
    catalog = full_catalog([PLOC], [[1e4, 1e4]], [GALAXIES["typical"]])
    renderer = TorchRenderer()
    fwhm = torch.tensor([[PSF_FWHM[0], 1.7]])
    moffat = renderer.render(catalog, fwhm, SCALE)[0].numpy()
    images = {0: (7.0 * drawn, PSF_FWHM[0]), 1: (drawn, PSF_FWHM[0])}  # any normalisation
    from_image = renderer.render(catalog, fwhm, SCALE, psf_images=images)[0].numpy()
    np.testing.assert_allclose(from_image.sum(axis=(1, 2)), 1e4, rtol=0.01)
    for band in range(2):  # band 1: the 1.3" image dilated to 1.7"
        assert np.abs(from_image[band] - moffat[band]).max() < 0.02 * moffat[band].max()
    reference = GalsimRenderer().render(
        np.array([PLOC]),
        np.array([[1e4]]),
        np.array([True]),
        np.array([GALAXIES["typical"]]),
        [image_psf(drawn.numpy(), SCALE)],
        SHAPE,
        SCALE,
    )
    assert np.abs(from_image[0] - reference[0]).max() < 0.02 * reference.max()


def test_empty_catalog_renders_zeros():
    catalog = FullCatalog(
        16,
        24,
        {
            "n_sources": torch.zeros(2),
            "plocs": torch.zeros(2, 0, 2),
            "fluxes": torch.zeros(2, 0, 3),
        },
    )
    image = TorchRenderer().render(catalog, torch.full((2, 3), 1.3), SCALE)
    assert image.shape == (2, 3, 16, 24)
    assert not image.any()


def test_cpu_paste_matches_the_padded_canvas_paste():
    # the CPU clips stamps as it adds slices; other devices index a canvas with a border
    rng = np.random.default_rng(2)
    n_stamps, n_images, n_bands, height, width, size = 40, 3, 2, 20, 24, 7
    owner = rng.integers(0, n_images, n_stamps)
    top_left = rng.integers(-size + 1, [height, width], (n_stamps, 1, 2)).repeat(n_bands, 1)
    top_left[:10, 1] += 1  # bands of one stamp at different corners (a whole-pixel dither)
    stamps = torch.rand(n_stamps, n_bands, size, size)
    images = np.zeros((n_images, n_bands, height, width), dtype=np.float32)
    paste_stamps(images, stamps.numpy(), owner, top_left)
    canvas = torch.zeros(n_images, n_bands, height + 2 * size, width + 2 * size)
    _paste(canvas, stamps, owner, top_left + size)
    assert images.any()
    assert torch.allclose(torch.from_numpy(images), canvas[..., size:-size, size:-size], atol=1e-5)


@pytest.mark.parametrize("noise", ["poisson", "gaussian"])
def test_noise_has_the_variance_of_the_counts(noise):
    catalog = full_catalog([(32.0, 32.0)], [[2e5, 5e4]], shape=(64, 64))
    clean = TorchRenderer().render(catalog, torch.tensor([PSF_FWHM]), SCALE).repeat(8, 1, 1, 1)
    sky = torch.tensor([[100.0, 400.0]]).repeat(8, 1)
    noisy = add_sky_and_noise_torch(clean, sky, noise, torch.Generator().manual_seed(0))
    expected = clean.double() + sky[..., None, None]
    for band in range(2):
        pull = ((noisy.double() - expected) / expected.sqrt())[:, band].flatten()
        n = pull.numel()  # 32768 pixels per band, from 100 to ~1e4 electrons
        assert float(pull.mean()) == pytest.approx(0.0, abs=5 / math.sqrt(n))
        assert float(pull.var()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    if noise == "poisson":
        assert torch.equal(noisy, noisy.round())
    again = add_sky_and_noise_torch(clean, sky, noise, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    none = add_sky_and_noise_torch(clean, sky, "none", torch.Generator())
    assert torch.allclose(none.double(), expected)


def test_simulator_torch_config_matches_the_galsim_simulator(tmp_path):
    overrides = [
        "mode=generate",
        "simulator.image_size=32",
        "simulator.noise=none",
        "simulator.dither_px=0.5",
        "prior.density_per_arcmin2=200",
    ]
    reference = build_simulator(compose_config(overrides, tmp_path)).simulate(2, seed=3)
    simulator = build_simulator(compose_config([*overrides, "simulator=torch"], tmp_path))
    assert isinstance(simulator.renderer, TorchRenderer)
    out = simulator.simulate(2, seed=3)
    assert out["images"].shape == reference["images"].shape
    assert int(out["catalog"]["n_sources"].sum()) > 0
    for key in reference["catalog"].keys():  # the same catalogs
        assert torch.equal(out["catalog"][key], reference["catalog"][key])
    light = (reference["images"] - reference["background"][..., None, None]).sum()
    assert (out["images"] - reference["images"]).abs().sum() < 1e-3 * light
    poisson = build_simulator(compose_config([*overrides[:2], "simulator=torch"], tmp_path))
    noisy = poisson.simulate(2, seed=3)["images"]
    assert torch.equal(noisy, noisy.round())
    assert torch.equal(noisy, poisson.simulate(2, seed=3)["images"])


def test_simulator_with_a_psf_image_matches_the_galsim_simulator():
    bands = ["g", "r"]
    survey = ParametricSurvey(
        "toy",
        bands,
        "r",
        SCALE,
        3.5,
        {"g": 1.4, "r": 1.3},
        {"g": 1.0, "r": 1.0},
        {"g": 28.0, "r": 28.0},
    )
    prior = CatalogPrior(bands, "r", SCALE, density_per_arcmin2=800.0)
    psf = moffat_psf(1.3, 2.5).drawImage(nx=25, ny=25, scale=SCALE).array  # r only

    def simulate(renderer, psf_images):
        conditions = ObservingConditions(survey, "r", fwhm_scale=[0.9, 1.3])  # dilates the image
        simulator = ImageSimulator(
            survey, prior, renderer, conditions, 32, noise="none", psf_images=psf_images
        )
        return simulator.simulate(2, seed=4)["images"] - 1.0  # minus the sky

    reference = simulate(GalsimRenderer(), {"r": psf})
    ours = simulate(TorchRenderer(), {"r": psf})
    assert reference.sum() > 1e3  # sources were drawn
    assert (ours - reference).abs().sum() < 0.01 * reference.sum()
    moffat = simulate(TorchRenderer(), None)  # the image (beta 2.5) was used in r, and only there
    # g matches up to stamp truncation: stamps are sized for the widest PSF of all bands
    assert (moffat[:, 0] - ours[:, 0]).abs().sum() < 1e-3 * ours[:, 0].sum()
    assert (moffat[:, 1] - ours[:, 1]).abs().sum() > 0.05 * ours[:, 1].sum()


@pytest.mark.parametrize(("column", "value"), [(0, 1.5), (2, 0.0), (3, -1.0), (4, 1.2)])
def test_bad_galaxy_params_raise(column, value):
    params = list(GALAXIES["typical"])
    params[column] = value
    with pytest.raises(BlissValueError, match="galaxy_params"):
        TorchRenderer().render(full_catalog([PLOC], [[1.0]], [params]), torch.ones(1, 1), SCALE)


def test_bad_shapes_and_values_raise():
    catalog = full_catalog([PLOC], [[1.0, 1.0]])
    with pytest.raises(BlissShapeError, match="fluxes"):
        TorchRenderer().render(catalog, torch.ones(1, 3), SCALE)
    with pytest.raises(BlissShapeError, match="band_offsets_px"):
        TorchRenderer().render(catalog, torch.ones(1, 2), SCALE, band_offsets_px=torch.zeros(2, 2))
    with pytest.raises(BlissValueError, match="psf_fwhm_arcsec"):
        TorchRenderer().render(catalog, torch.tensor([[1.0, -1.0]]), SCALE)
    star = torch.ones(5, 5)
    with pytest.raises(BlissValueError, match="band index 2"):
        TorchRenderer().render(catalog, torch.ones(1, 2), SCALE, psf_images={2: (star, 1.0)})
    with pytest.raises(BlissShapeError, match=r"psf_images\[0\]"):
        TorchRenderer().render(catalog, torch.ones(1, 2), SCALE, psf_images={0: (star[0], 1.0)})
    with pytest.raises(BlissValueError, match="sums to"):
        TorchRenderer().render(catalog, torch.ones(1, 2), SCALE, psf_images={0: (0 * star, 1.0)})
    with pytest.raises(BlissValueError, match="noise"):
        add_sky_and_noise_torch(torch.zeros(1, 1, 2, 2), torch.ones(1, 1), "laplace", None)


@pytest.mark.parametrize(
    "kwargs", [{"max_stamp_px": 8}, {"min_stamp_px": 1}, {"folding_threshold": 0.0}]
)
def test_bad_renderer_arguments_raise(kwargs):
    with pytest.raises(BlissValueError, match=next(iter(kwargs))):
        TorchRenderer(**kwargs)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(1)
    plocs = rng.uniform(0, 96, size=(5, 2))
    params = [GALAXIES[key] for key in ("typical", "largest_both", "smallest_flattest")]
    catalog = full_catalog(plocs[:3], rng.uniform(1e3, 1e4, (3, 2)), params)
    fwhm = torch.tensor([PSF_FWHM])
    cpu = TorchRenderer().render(catalog, fwhm, SCALE)
    cuda = TorchRenderer(device="cuda").render(catalog, fwhm, SCALE)
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4 * float(cpu.max()))
    also_cuda = TorchRenderer().render(catalog.to("cuda"), fwhm.cuda(), SCALE)
    assert also_cuda.device.type == "cuda"
    noisy = add_sky_and_noise_torch(
        cuda, torch.full((1, 2), 100.0), "poisson", torch.Generator("cuda").manual_seed(0)
    )
    assert noisy.device.type == "cuda"


def test_unit_stamps_with_a_shared_psf_match_the_renderer():
    # the model-fitting path (one PSF transform, many sources) draws what render() draws
    psf = np.stack(
        [moffat_psf(fwhm).drawImage(nx=41, ny=41, scale=SCALE).array for fwhm in PSF_FWHM]
    )
    params = torch.tensor([[0.6, 0.7, 0.5, 1.2, 0.7, 0.5], [0.0] * 6], dtype=torch.float64)
    is_galaxy = torch.tensor([True, False])
    size = 65
    # sources at (30.3, 33.8) and (36.6, 28.1) in a 65 px image; shifts from pixel (0, 0)'s centre
    plocs = torch.tensor([[30.3, 33.8], [36.6, 28.1]], dtype=torch.float64)
    stamps = draw_unit_stamps(
        params, is_galaxy, plocs - 0.5, psf_image_fourier(torch.from_numpy(psf), size), SCALE
    )
    assert stamps.shape == (2, 2, size, size)
    for index in range(2):
        catalog = FullCatalog(
            size,
            size,
            {
                "n_sources": torch.tensor([1]),
                "plocs": plocs[index][None, None].float(),
                "fluxes": torch.ones(1, 1, 2),
                "source_type": is_galaxy[index].float().reshape(1, 1, 1),
                **{k: params[index, i].float().reshape(1, 1, 1) for i, k in enumerate(GALAXY_KEYS)},
            },
        )
        images = {band: (torch.from_numpy(psf[band]), PSF_FWHM[band]) for band in range(2)}
        expected = TorchRenderer().render(
            catalog, torch.tensor([PSF_FWHM]).float(), SCALE, psf_images=images
        )[0]
        # the renderer's stamp clips the galaxy's outermost wings (folding threshold 5e-3)
        np.testing.assert_allclose(stamps[index].numpy(), expected.numpy(), atol=2e-4)
        assert float(stamps[index].sum()) == pytest.approx(2.0, abs=0.02)
