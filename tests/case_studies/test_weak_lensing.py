"""The weak_lensing case study's constant-shear evaluation (``evaluate_shear``).

The shape-noise-cancelled test set is checked on a tiny simulator (32 x 32 px), including the
physics of the 90-degree rotation: shear is spin 2, so turning a scene by 90 degrees turns a
shear ``g`` into ``-g``, and the rotated scene sheared by ``+g``, turned back, is the drawn scene
sheared by ``-g``. The statistics (deconvolution, coverage, ensemble and grouped bias) are
checked on synthetic inputs with known answers.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from bliss.cli.generate import build_simulator
from bliss.errors import BlissConfigError, BlissIOError
from bliss.posterior.factors import NormalFactor
from bliss.posterior.regions import RegionFactor
from bliss.simulator.cosmos import cosmos_catalog_path

sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "weak_lensing"))
import evaluate_shear  # noqa: E402

N_SCENES = 3
G_SIGMA, G_MAX = 0.1, 0.4
# the torch renderer works in float32 on top of a ~2.5e5 electron sky: one ulp there is 0.03 e-
REL_TOL = 1e-4  # of the brightest pixel above the sky


def _simulator(noise: str):  # noqa: ANN202
    try:
        cosmos_catalog_path()  # the preset's galaxy shapes come from the fpfs wheel's catalog
    except (BlissConfigError, BlissIOError):
        pytest.skip("fpfs (pip install 'bliss-toolkit[weak_lensing]') is not installed")
    cfg = evaluate_shear.compose_config(
        "in_prior", extra=["simulator.image_size=32", f"simulator.noise={noise}"]
    )
    return build_simulator(cfg)


@pytest.fixture(scope="module")
def noisy() -> dict:
    return evaluate_shear.cancelled_scenes(
        _simulator("poisson"), n_scenes=N_SCENES, g_sigma=G_SIGMA, g_max=G_MAX, seed=1
    )


@pytest.fixture(scope="module")
def noise_free() -> dict:
    return evaluate_shear.cancelled_scenes(
        _simulator("none"), n_scenes=N_SCENES, g_sigma=G_SIGMA, g_max=G_MAX, seed=1
    )


def _blocks(batch: dict, key: str) -> torch.Tensor:
    """``batch[key]`` as ``4 n ...``: (drawn, +g), (rotated, +g), (drawn, -g), (rotated, -g)."""
    return batch[key].reshape(4, N_SCENES, *batch[key].shape[1:])


def test_cancelled_scenes_layout(noisy: dict) -> None:
    assert noisy["images"].shape == (4 * N_SCENES, 1, 32, 32)
    assert noisy["groups"].tolist() == [0, 1, 2] * 4
    shear = _blocks(noisy, "fields/shear")
    assert shear.shape == (4, N_SCENES, 1, 1, 2)
    torch.testing.assert_close(shear[0], shear[1], rtol=0, atol=0)  # drawn and rotated: same g
    torch.testing.assert_close(shear[2], -shear[0], rtol=0, atol=0)  # then -g
    torch.testing.assert_close(shear[3], -shear[1], rtol=0, atol=0)
    g = shear[0, :, 0, 0]
    assert bool((g.norm(dim=-1) <= G_MAX).all()) and len(set(g[:, 0].tolist())) == N_SCENES
    for key in ("background", "psf_fwhm_arcsec"):  # one scene, one set of conditions
        blocks = _blocks(noisy, key)
        assert bool((blocks == blocks[0]).all()), key
    images = _blocks(noisy, "images")
    assert bool((images[0] != images[1]).any(dim=(-3, -2, -1)).all())  # drawn vs rotated
    assert bool((images[2] != images[3]).any(dim=(-3, -2, -1)).all())


def test_cancelled_scenes_are_reproducible(noisy: dict) -> None:
    again = evaluate_shear.cancelled_scenes(
        _simulator("poisson"), n_scenes=N_SCENES, g_sigma=G_SIGMA, g_max=G_MAX, seed=1
    )
    for key in ("images", "fields/shear", "background", "groups"):
        assert torch.equal(again[key], noisy[key]), key


def test_rotating_by_90_degrees_turns_the_shear_sign(noise_free: dict) -> None:
    """``rot90(image(rotated scene, +-g), k=-1) == image(drawn scene, -+g)`` without noise.

    Measured (seed 1): the two sides differ by at most one float32 ulp of the sky (0.03 e-,
    4e-6 of the brightest pixel above the sky; the tolerance is 1e-4 plus 4 ulp). The drawn and
    rotated scenes differ by 1.0 of that pixel, and the wrong sign (``image(drawn scene, +g)``)
    by 0.017 and 0.044 of it, 145 and 372 times the tolerance. Scene 1 has no light in the
    image, so both sides are the flat sky.
    """
    images = _blocks(noise_free, "images")[:, :, 0].double()
    sky = _blocks(noise_free, "background")[:, :, 0].double()[..., None, None]
    peak = (images - sky).amax(dim=(0, 2, 3))  # per scene
    assert bool((peak > 0).sum() >= 2), peak  # seed 1 puts light in two of the three scenes
    atol = REL_TOL * peak + 4 * torch.finfo(torch.float32).eps * sky[0, :, 0, 0]
    back = torch.rot90(images[[1, 3]], k=-1, dims=(-2, -1))  # the rotated scenes, turned back
    for scene in range(N_SCENES):
        for turned, drawn in ((back[0], images[2]), (back[1], images[0])):  # +g -> -g, -g -> +g
            diff = float((turned[scene] - drawn[scene]).abs().max())
            assert diff <= float(atol[scene]), (scene, diff, float(peak[scene]))
        if peak[scene] > 0:
            # the identity is not trivial: the rotation moves light, and the sign matters
            assert float((images[0, scene] - images[1, scene]).abs().max()) > 0.1 * peak[scene]
            wrong = float((back[0, scene] - images[0, scene]).abs().max())
            assert wrong > 100 * float(atol[scene]), (scene, wrong, float(atol[scene]))


def test_deconvolved_recovers_the_likelihood() -> None:
    """The normal posterior of a normal prior (``tau``) and likelihood, with the prior divided out."""
    tau = 0.1
    mu_lik = np.array([[0.03, -0.05], [0.2, 0.0], [-0.01, 0.15]])
    s_lik = np.array([[0.02, 0.05], [0.1, 0.3], [0.005, 0.08]])
    precision = 1 / tau**2 + 1 / s_lik**2
    mean, sigma = (mu_lik / s_lik**2) / precision, precision**-0.5
    mu_out, s_out = evaluate_shear.deconvolved(mean, sigma, tau)
    np.testing.assert_allclose(mu_out, mu_lik, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s_out, s_lik, rtol=1e-10)


def test_deconvolved_is_nan_without_information(recwarn: pytest.WarningsRecorder) -> None:
    mean = np.array([[0.05, 0.01], [0.02, -0.03]])
    sigma = np.array([[0.1, 0.05], [0.2, 0.099]])  # the first and third are not narrower
    mu_out, s_out = evaluate_shear.deconvolved(mean, sigma, 0.1)
    expected = np.array([[True, False], [True, False]])
    assert (np.isnan(mu_out) == expected).all() and (np.isnan(s_out) == expected).all()
    assert np.isfinite(mu_out[~expected]).all() and np.isfinite(s_out[~expected]).all()
    assert not recwarn.list, [str(w.message) for w in recwarn.list]  # NaN is the answer, quietly


def test_the_training_shear_prior_is_read_from_the_checkpoint_config() -> None:
    """Only a normal prior is divided out; the flat preset records a disk; maps are refused."""
    normal = {"simulator": {"lensing": {"distribution": "normal", "g_sigma": 0.1, "g_max": 0.4}}}
    assert evaluate_shear.training_shear_prior(normal, "a.ckpt") == {
        "distribution": "normal",
        "g_sigma": 0.1,
        "g_max": 0.4,
    }
    flat = evaluate_shear.compose_preset("shear_constant_flat")
    lensing = {"simulator": {"lensing": dict(flat.simulator.lensing)}}
    prior = evaluate_shear.training_shear_prior(lensing, "flat.ckpt")
    assert prior["distribution"] == "disk" and prior["g_max"] == pytest.approx(0.4)
    nfw = {"simulator": {"lensing": {"kind": "nfw"}}}
    for config in (nfw, {"simulator": {}}, {}):
        with pytest.raises(ValueError, match="maps.ckpt: records no constant-shear prior"):
            evaluate_shear.training_shear_prior(config, "maps.ckpt")


class _MomentEncoder:
    """A stand-in encoder whose shear is the image's spin-2 quadrupole plus a fixed offset."""

    def __init__(self, offset: tuple[float, float]) -> None:
        self.regions = {"shear": RegionFactor(NormalFactor("shear", dim=2))}
        self.offset = torch.tensor(offset)

    def tile_features(self, batch: dict) -> torch.Tensor:
        return batch["images"][:, 0]

    def region_params(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        side = images.shape[-1]
        rows, cols = torch.meshgrid(
            torch.arange(side) - (side - 1) / 2, torch.arange(side) - (side - 1) / 2, indexing="ij"
        )
        norm = (images * (rows**2 + cols**2)).sum((-2, -1))
        e1 = (images * (cols**2 - rows**2)).sum((-2, -1)) / norm
        e2 = (images * 2 * rows * cols).sum((-2, -1)) / norm
        loc = torch.stack([e1, e2], -1) + self.offset
        params = torch.stack([loc, torch.zeros_like(loc)], -1).flatten(-2)  # (d two): raw scale 0
        return {"shear": params[:, None, None]}


def test_the_turned_posteriors_cancel_an_offset_and_keep_the_signal() -> None:
    """Averaged over the eight turns, an equivariant estimate stays and a fixed offset goes.

    The quadrupole turns with the image as a shear does, so it checks the sign conventions of
    the turns too: a wrong sign would not give the moment back.
    """
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(5, 1, 9, 9, generator=generator) ** 4  # lopsided, so the moment is not 0
    batch = {"images": images, "background": torch.ones(5, 1), "psf_fwhm_arcsec": torch.ones(5, 1)}
    offset = (0.03, -0.02)
    plain = evaluate_shear.npe_estimates(_MomentEncoder(offset), batch)
    moment = evaluate_shear.npe_estimates(_MomentEncoder((0.0, 0.0)), batch)["mean"]
    assert np.abs(moment).max() > 0.01  # the test has a signal to keep
    np.testing.assert_allclose(plain["mean"], moment + np.array(offset), atol=1e-6)
    both = evaluate_shear.npe_estimates(_MomentEncoder(offset), batch, symmetrize=True)
    np.testing.assert_allclose(both["mean"], plain["mean"], atol=0)  # the image as it is, too
    turned = both["turned"]
    np.testing.assert_allclose(turned["mean"], moment, atol=1e-6)
    # the mixture's width: the turns' own (softplus(0) + the floor) and the offset's spread
    own = np.log(2.0) + _MomentEncoder(offset).regions["shear"].factor.min_scale
    expected = np.sqrt(own**2 + np.array(offset) ** 2)
    np.testing.assert_allclose(turned["sigma"], np.broadcast_to(expected, (5, 2)), rtol=1e-5)


def test_coverage_of_calibrated_and_overconfident_intervals() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    mean = rng.normal(0.0, 0.1, (n, 2))
    sigma = rng.uniform(0.01, 0.05, (n, 2))
    truth = mean + sigma * rng.normal(size=(n, 2))
    levels = evaluate_shear.LEVELS
    tolerance = 4 * np.sqrt(levels * (1 - levels) / truth.size)  # binomial, 4 sigma
    observed = np.array(evaluate_shear.coverage(mean, sigma, truth))
    assert np.all(np.abs(observed - levels) < tolerance), observed - levels
    # intervals half as wide as they should be: P(|Z| <= q / 2) = 2 Phi(q / 2) - 1
    narrow = np.array(evaluate_shear.coverage(mean, sigma / 2, truth))
    expected = 2 * norm.cdf(norm.ppf(0.5 + levels / 2) / 2) - 1
    assert np.all(np.abs(narrow - expected) < tolerance), narrow - expected
    at_90 = narrow[np.isclose(levels, 0.9)][0]
    assert abs(expected[np.isclose(levels, 0.9)][0] - 0.589) < 1e-3
    assert abs(at_90 - 0.589) < 0.01, at_90


def test_coverage_skips_missing_intervals() -> None:
    rng = np.random.default_rng(1)
    mean, sigma = rng.normal(size=(4000, 2)), np.ones((4000, 2))
    truth = mean + rng.normal(size=(4000, 2))
    holes = sigma.copy()
    holes[::2] = np.nan  # as deconvolved() leaves them
    full = evaluate_shear.coverage(mean[1::2], sigma[1::2], truth[1::2])
    assert evaluate_shear.coverage(mean, holes, truth) == full
    assert np.isnan(evaluate_shear.coverage(mean, np.full_like(sigma, np.nan), truth)).all()


def _ensemble(n_scenes: int, rng: np.random.Generator, m: float, c: tuple) -> tuple:
    """FPFS-like sums in cancelled_scenes' order: ``e = (1 + m) g R + c R + shape noise``.

    A scene's intrinsic shapes give it shape noise ``s`` (30 times the pixel noise): ``+s`` as
    drawn and ``-s`` rotated, whatever the shear's sign.
    """
    g = rng.normal(0.0, G_SIGMA, (n_scenes, 2))
    resp = rng.uniform(5.0, 15.0, (n_scenes, 1)).repeat(2, axis=1)  # ~ galaxies in the scene
    shape_noise = 0.3 * np.sqrt(resp) * rng.normal(size=(n_scenes, 2))
    sign = np.array([1, 1, -1, -1])[:, None, None]  # +g, +g, -g, -g
    turn = np.array([1, -1, 1, -1])[:, None, None]  # drawn, rotated, drawn, rotated
    pixel_noise = 0.01 * np.sqrt(resp) * rng.normal(size=(4, n_scenes, 2))
    e = (1 + m) * sign * g * resp + np.asarray(c) * resp + turn * shape_noise + pixel_noise
    truth = sign * g * np.ones((4, 1, 1))
    r = np.broadcast_to(resp, (4, n_scenes, 2))
    groups = np.tile(np.arange(n_scenes), 4)
    return e.reshape(-1, 2), r.reshape(-1, 2), truth.reshape(-1, 2), groups


def test_ensemble_bias_recovers_m_and_c() -> None:
    """Pulls (estimate - truth) / error: here within 1.1; over 300 seeds mean 0, spread 1.0-1.06."""
    m, c = 0.02, (1e-3, -2e-3)
    e, r, truth, groups = _ensemble(200, np.random.default_rng(0), m, c)
    out = evaluate_shear.ensemble_bias(e, r, truth, groups)
    assert out["n_scenes"] == 200
    for i in range(2):
        assert abs(out[f"m{i + 1}"] - m) < 3 * out[f"m{i + 1}_err"], out
        assert abs(out[f"c{i + 1}"] - c[i]) < 3 * out[f"c{i + 1}_err"], out
        # shape noise cancelled: the errors reflect the pixel noise, so m and c are detected
        assert out[f"m{i + 1}_err"] < 0.005 and abs(out[f"m{i + 1}"]) > 5 * out[f"m{i + 1}_err"]
        assert abs(out[f"c{i + 1}"]) > 5 * out[f"c{i + 1}_err"]


def test_ensemble_bias_is_not_biased_by_noisy_responses() -> None:
    """Each image's measured response scatters by its own size around the true one (as AnaCal's
    do on 128 px scenes); the ellipticities follow the true response. A least-squares slope on
    the measured responses gives m = -var / (mean^2 + var), -0.2 here (four images per scene:
    measured -0.21 and -0.18, 4-5 errors off); the ratio of sums gives +0.002 and -0.001."""
    rng = np.random.default_rng(5)
    e, r, truth, groups = _ensemble(400, rng, 0.0, (0.0, 0.0))
    r = r * (1.0 + rng.normal(0.0, 1.0, r.shape))
    out = evaluate_shear.ensemble_bias(e, r, truth, groups)
    for i in (1, 2):
        assert abs(out[f"m{i}"]) < 3 * out[f"m{i}_err"], out
        assert out[f"m{i}_err"] < 0.1, out


def test_ensemble_bias_errors_match_the_scatter() -> None:
    """Over 40 ensembles the jackknife errors agree with the spread of m and c (measured: 5%)."""
    rng = np.random.default_rng(3)
    fits = [evaluate_shear.ensemble_bias(*_ensemble(100, rng, 0.0, (0.0, 0.0))) for _ in range(40)]
    for key in ("m1", "m2", "c1", "c2"):
        spread = np.std([f[key] for f in fits], ddof=1)
        reported = np.median([f[f"{key}_err"] for f in fits])
        assert 0.7 < spread / reported < 1.4, (key, spread, reported)


def test_ensemble_bias_needs_the_cancelled_order() -> None:
    e, r, truth, _ = _ensemble(10, np.random.default_rng(4), 0.0, (0.0, 0.0))
    by_scene = np.repeat(np.arange(10), 4)  # each scene's four images together
    with pytest.raises(ValueError, match="image order of cancelled_scenes"):
        evaluate_shear.ensemble_bias(e, r, truth, by_scene)


def _estimates(n_scenes: int, rng: np.random.Generator) -> tuple:
    g = rng.normal(0.0, G_SIGMA, (n_scenes, 2))
    truth = (np.array([1, 1, -1, -1])[:, None, None] * g).reshape(-1, 2)
    estimate = 1.05 * truth + 0.002 * rng.normal(size=truth.shape)
    return estimate, truth, np.tile(np.arange(n_scenes), 4)


def test_summarize_drops_incomplete_scenes() -> None:
    estimate, truth, groups = _estimates(10, np.random.default_rng(5))
    holed = estimate.copy()
    holed[3 * 10 + 4, 1] = np.nan  # scene 4's (rotated, -g) image has no g2
    out = evaluate_shear.summarize(holed, truth, groups)
    keep = groups != 4
    expected = evaluate_shear.summarize(estimate[keep], truth[keep], groups[keep])
    assert out["n_images"] == 36 and out["n_groups"] == 9
    assert out == pytest.approx(expected, rel=1e-12)
    for key in ("m1", "m2"):  # OLS error 0.0033 (the 9-group jackknife's is itself noisy)
        assert abs(out[key] - 0.05) < 0.01 and out[f"{key}_err"] < 0.01, out


def test_summarize_needs_three_whole_scenes() -> None:
    estimate, truth, groups = _estimates(3, np.random.default_rng(6))
    estimate[5] = np.nan  # scene 2 loses its (rotated, +g) image
    assert evaluate_shear.summarize(estimate, truth, groups) == {"n_images": 8}


def test_the_stage2_head_learns_what_the_features_carry(tmp_path) -> None:
    import fit_shear_head
    from hydra.utils import instantiate

    from bliss.posterior.factors import NormalFactor
    from bliss.posterior.regions import RegionFactor
    from tests.conftest import compose_config

    cfg = compose_config(["mode=train", "experiment=debug"], tmp_path)
    torch.manual_seed(0)
    encoder = instantiate(
        cfg.encoder, regions={"shear": RegionFactor(NormalFactor("shear", dim=2))}
    ).eval()
    generator = torch.Generator().manual_seed(0)
    width = encoder.features.width

    def pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # two channels carry the shear on every tile, among unrelated features
        features = torch.randn(n, width, 4, 4, generator=generator)
        shear = 0.1 * torch.randn(n, 1, 1, 2, generator=generator)
        features[:, :2] = 10 * shear[:, 0, 0, :, None, None]
        return features, shear

    train, val = pairs(512), pairs(128)
    region = encoder.regions["shear"]
    head = fit_shear_head.new_head(encoder, region)
    best = fit_shear_head.fit_head(region, head, train, val, steps=600, batch=64, lr=3e-3, seed=0)
    head.load_state_dict(best["state"])
    with torch.no_grad():
        estimate = region.point_estimate(head(val[0]))
    error = (estimate - val[1]).pow(2).mean().sqrt()
    # the prior's spread is 0.1: a head that learned nothing has an error of ~0.1
    assert float(error) < 0.03, float(error)
    assert best["val_loss"] < -2.0  # sigma ~0.02 instead of the prior's 0.1 (loss ~ -1.3)
