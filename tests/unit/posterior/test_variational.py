"""The factorised posterior: gating, layout, validation and extension by name."""

import pytest
import torch
from hydra.utils import instantiate

from bliss.catalog import TileCatalog
from bliss.errors import BlissConfigError, BlissShapeError, BlissValueError
from bliss.posterior.factors import (
    BernoulliFactor,
    CountFactor,
    LogitNormalFactor,
    LogNormalFactor,
    NormalFactor,
    PositionAngleFactor,
    TruncatedNormalFactor,
)
from bliss.posterior.variational import VariationalPosterior
from tests.conftest import compose_config

M = 2  # slots per tile
B, HT, WT = 2, 3, 3
GALAXY_FACTOR_KEYS = ("disk_q", "beta_rad")


def _factors(**extra: object) -> dict:
    return {
        "n_sources": CountFactor(M),
        "locs": TruncatedNormalFactor("locs", dim=2),
        "source_type": BernoulliFactor("source_type"),
        "fluxes": LogNormalFactor("fluxes", dim=2),
        "disk_q": LogitNormalFactor("disk_q", gate="galaxy"),
        "beta_rad": PositionAngleFactor("beta_rad", gate="galaxy"),
        **extra,
    }


@pytest.fixture
def posterior() -> VariationalPosterior:
    return VariationalPosterior(_factors(), M)


@pytest.fixture
def truth() -> TileCatalog:
    """Tiles with 0, 1 and 2 sources; stars and galaxies; zeros on empty slots."""
    n_sources = torch.tensor([[[0, 1, 2], [2, 1, 0], [1, 2, 1]], [[2, 2, 0], [0, 1, 1], [2, 0, 1]]])
    on = torch.arange(M) < n_sources.unsqueeze(-1)
    galaxy = (torch.rand(B, HT, WT, M) < 0.5) & on
    galaxy[0, 0, 2, :] = torch.tensor([True, False])  # at least one star and one galaxy
    galaxy_f = galaxy.unsqueeze(-1).double()
    on_f = on.unsqueeze(-1).double()
    data = {
        "n_sources": n_sources,
        "locs": torch.rand(B, HT, WT, M, 2, dtype=torch.float64) * on_f,
        "source_type": galaxy_f,
        "fluxes": (torch.rand(B, HT, WT, M, 2, dtype=torch.float64) * 10 + 0.5) * on_f,
        "disk_q": (torch.rand(B, HT, WT, M, 1, dtype=torch.float64) * 0.8 + 0.1) * galaxy_f,
        "beta_rad": torch.rand(B, HT, WT, M, 1, dtype=torch.float64) * 3.0 * galaxy_f,
    }
    return TileCatalog(4, data)


def _params(posterior: VariationalPosterior) -> torch.Tensor:
    return torch.randn(B, HT, WT, posterior.n_params, dtype=torch.float64)


def _replace_where(catalog: TileCatalog, key: str, mask: torch.Tensor, value: float) -> TileCatalog:
    new = torch.where(mask.unsqueeze(-1), torch.full_like(catalog[key], value), catalog[key])
    return catalog.replace(**{key: new})


def test_galaxy_factor_values_on_stars_are_ignored(posterior, truth) -> None:
    params = _params(posterior)
    base = posterior.log_prob(params, truth)
    stars = truth.star_mask
    assert stars.any() and truth.galaxy_mask.any()
    for key, junk in (("disk_q", 0.97), ("beta_rad", 2.5)):
        changed = posterior.log_prob(params, _replace_where(truth, key, stars, junk))
        assert torch.equal(changed, base), key
        # control: the same change on galaxy slots does matter
        on_galaxies = posterior.log_prob(
            params, _replace_where(truth, key, truth.galaxy_mask, junk)
        )
        assert not torch.allclose(on_galaxies, base), key


def test_values_on_empty_slots_are_ignored(posterior, truth) -> None:
    params = _params(posterior)
    base = posterior.log_prob(params, truth)
    empty = ~truth.is_on_mask
    junk_catalog = truth
    for key, junk in (
        ("locs", 0.3),
        ("fluxes", 123.0),
        ("source_type", 1.0),
        ("disk_q", 0.5),
        ("beta_rad", 1.0),
    ):
        junk_catalog = _replace_where(junk_catalog, key, empty, junk)
    assert torch.equal(posterior.log_prob(params, junk_catalog), base)
    # control: a flux change on an occupied slot changes the density of its tile only
    occupied = torch.zeros_like(empty)
    occupied[1, 0, 0, 1] = True
    changed = posterior.log_prob(params, _replace_where(truth, "fluxes", occupied, 77.0))
    differs = changed != base
    assert differs[1, 0, 0] and differs.sum() == 1


def test_log_prob_decomposes_over_factors(posterior, truth) -> None:
    params = _params(posterior)
    split = posterior.split(params)
    expected = posterior.count.log_prob(split["n_sources"], truth["n_sources"])
    masks = {"source": truth.is_on_mask, "galaxy": truth.galaxy_mask}
    for name, factor in posterior.slot_factors.items():
        per_slot = factor.log_prob(split[name], truth[factor.key])
        expected = expected + (per_slot * masks[factor.gate.value]).sum(-1)
    # the masked slots are NaN-free here, so a plain product reproduces the gated sum
    torch.testing.assert_close(posterior.log_prob(params, truth), expected, atol=1e-10, rtol=1e-10)


def test_missing_catalog_key_names_it(posterior, truth) -> None:
    data = truth.to_dict()
    del data["disk_q"]
    with pytest.raises(BlissValueError, match="disk_q"):
        posterior.log_prob(_params(posterior), TileCatalog(4, data))


def test_wrong_max_sources_in_truth(posterior, truth) -> None:
    single = truth.crop_tiles(slice(None), slice(None))
    data = {k: (v[..., :1, :] if v.ndim == 5 else v.clamp(max=1)) for k, v in single.items()}
    with pytest.raises(BlissValueError, match="max_sources"):
        posterior.log_prob(_params(posterior), TileCatalog(4, data))


def test_two_count_factors_rejected() -> None:
    with pytest.raises(BlissConfigError, match="CountFactor"):
        VariationalPosterior(_factors(other_count=CountFactor(M)), M)


def test_no_count_factor_rejected() -> None:
    factors = _factors()
    del factors["n_sources"]
    with pytest.raises(BlissConfigError, match="CountFactor"):
        VariationalPosterior(factors, M)


def test_no_locs_factor_rejected() -> None:
    factors = _factors()
    del factors["locs"]
    with pytest.raises(BlissConfigError, match="locs"):
        VariationalPosterior(factors, M)


def test_max_sources_mismatch_rejected() -> None:
    with pytest.raises(BlissConfigError, match="max_sources"):
        VariationalPosterior(_factors(), M + 1)


def test_non_factor_entry_rejected() -> None:
    with pytest.raises(BlissConfigError, match="junk"):
        VariationalPosterior(_factors(junk=object()), M)


def test_split_sizes_and_layout(posterior) -> None:
    sizes = {name: f.n_params for name, f in posterior.slot_factors.items()}
    # count: m + 1 logits; locs 2 x 2; source_type 1; fluxes 2 x 2; disk_q 2; beta_rad 3
    assert sizes == {"locs": 4, "source_type": 1, "fluxes": 4, "disk_q": 2, "beta_rad": 3}
    assert posterior.n_params == (M + 1) + M * sum(sizes.values())
    assert posterior.names[0] == "n_sources"
    params = _params(posterior)
    split = posterior.split(params)
    assert split["n_sources"].shape == (B, HT, WT, M + 1)
    for name, size in sizes.items():
        assert split[name].shape == (B, HT, WT, M, size)
    # documented layout: [count | factor_1 (m x p_1) | ...] in the order of the mapping
    flat = [split["n_sources"]] + [split[n].flatten(-2) for n in posterior.slot_factors]
    assert torch.equal(torch.cat(flat, dim=-1), params)
    with pytest.raises(BlissShapeError, match="params"):
        posterior.split(params[..., :-1])


def _check_valid(catalog: TileCatalog, posterior: VariationalPosterior) -> None:
    assert catalog.max_sources == M
    assert ((catalog["n_sources"] >= 0) & (catalog["n_sources"] <= M)).all()
    off = ~catalog.is_on_mask
    for key in catalog.keys():
        if key != "n_sources":
            assert (catalog[key][off] == 0).all(), key
    stars = catalog.star_mask
    for key in GALAXY_FACTOR_KEYS:
        assert (catalog[key][stars] == 0).all(), key
    on = catalog.is_on_mask
    assert ((catalog["locs"][on] >= 0) & (catalog["locs"][on] <= 1)).all()
    assert (catalog["fluxes"][on] > 0).all()
    assert set(catalog.keys()) == {"n_sources", *[f.key for f in posterior.slot_factors.values()]}


def test_sample_and_point_estimate_are_valid_catalogs(posterior) -> None:
    params = _params(posterior)
    sample = posterior.sample(params, tile_slen=4)
    estimate = posterior.point_estimate(params, tile_slen=4)
    for catalog in (sample, estimate):
        _check_valid(catalog, posterior)
        assert catalog.tile_slen == 4
    # with these random logits both stars and galaxies, and empty and full tiles, appear
    assert estimate.star_mask.any() and estimate.galaxy_mask.any()
    assert (estimate["n_sources"] == 0).any() and (estimate["n_sources"] > 0).any()
    # point estimate: slots on where P(n > j) > threshold
    expected = (posterior.prob_source(params) > 0.5).sum(-1)
    assert torch.equal(estimate["n_sources"], expected)
    assert torch.equal(
        posterior.point_estimate(params, 4, threshold=0.999)["n_sources"],
        (posterior.prob_source(params) > 0.999).sum(-1),
    )


def test_prob_galaxy_and_quantiles(posterior) -> None:
    params = _params(posterior)
    prob = posterior.prob_galaxy(params)
    assert prob.shape == (B, HT, WT, M) and ((prob > 0) & (prob < 1)).all()
    low, high = posterior.quantiles(params, 0.1), posterior.quantiles(params, 0.9)
    assert set(low) == {"locs", "source_type", "fluxes", "disk_q", "beta_rad"}
    assert (low["fluxes"] < high["fluxes"]).all()


def test_new_factor_by_name_enters_the_total(posterior, truth) -> None:
    extended = VariationalPosterior(_factors(redshift=NormalFactor("redshift")), M)
    assert extended.n_params == posterior.n_params + M * 2
    redshift = torch.randn(B, HT, WT, M, 1, dtype=torch.float64) * truth.is_on_mask.unsqueeze(-1)
    catalog = truth.replace(redshift=redshift)
    params = _params(extended)
    split = extended.split(params)
    # the same parameters without the redshift block give the old posterior's density
    without = torch.cat(
        [
            split[n].flatten(-2) if n != "n_sources" else split[n]
            for n in extended.names
            if n != "redshift"
        ],
        dim=-1,
    )
    own = NormalFactor("redshift").log_prob(split["redshift"], redshift)
    expected = posterior.log_prob(without, truth) + (own * truth.is_on_mask).sum(-1)
    torch.testing.assert_close(extended.log_prob(params, catalog), expected, atol=1e-10, rtol=1e-10)
    assert "redshift" in extended.sample(params, 4).keys()
    with pytest.raises(BlissValueError, match="redshift"):
        extended.log_prob(params, truth)


def test_new_factor_by_config_override(tmp_path) -> None:
    """A case study adds a factor from YAML alone, without touching core code."""
    base = compose_config(["mode=train", "experiment=debug"], tmp_path)
    cfg = compose_config(
        [
            "mode=train",
            "experiment=debug",
            "+encoder.posterior.factors.redshift={_target_: bliss.posterior.factors.NormalFactor,"
            " key: redshift}",
        ],
        tmp_path,
    )
    before = instantiate(base.encoder.posterior)
    after = instantiate(cfg.encoder.posterior)
    assert "redshift" in after.slot_factors and isinstance(
        after.slot_factors["redshift"], NormalFactor
    )
    assert after.n_params == before.n_params + after.max_sources * 2


def test_interval_ends_bracket_the_median_in_catalog_units(posterior) -> None:
    params = _params(posterior)
    estimate = posterior.point_estimate(params, tile_slen=4)
    out = posterior.with_interval_ends(estimate, params, (0.05, 0.95))
    low, high = out["fluxes@0.05"], out["fluxes@0.95"]
    median = posterior.quantiles(params, 0.5)["fluxes"]
    assert torch.all(low < median) and torch.all(median < high)
    # positions are in pixels of the image, as the estimate's own plocs
    locs = posterior.quantiles(params, 0.05)["locs"]
    torch.testing.assert_close(out["plocs@0.05"], estimate.plocs(locs))
    rows = torch.arange(HT, dtype=out["plocs@0.05"].dtype).view(1, HT, 1, 1) * 4
    assert torch.all(out["plocs@0.05"][..., 0] >= rows) and torch.all(
        out["plocs@0.05"][..., 0] <= rows + 4
    )
    assert set(estimate.keys()) < set(out.keys())
