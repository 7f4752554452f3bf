"""Which predict configs name several inputs, and how inputs are expanded and named."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.errors import BlissConfigError
from bliss.predict.inputs import has_several_inputs, input_name, resolve_inputs
from tests.conftest import compose_config

PLAIN = SimpleNamespace()  # a survey that does not read its own images


def _several(cfg):
    spec = cfg.predict.input
    spec = OmegaConf.to_container(spec) if OmegaConf.is_list(spec) else spec
    return has_several_inputs(spec, instantiate(cfg.survey))


@pytest.mark.parametrize(
    ("overrides", "several"),
    [
        ([], False),
        (["predict.input=a.fits"], False),
        (["predict.input=data/*.fits"], True),
        (["predict.input=[a.fits]"], True),
        (["survey=sdss_frames"], False),
        (["survey=sdss_frames", "survey.fields=[[94,1,12]]"], True),
    ],
)
def test_several_inputs_are_a_list_a_glob_or_sdss_fields(overrides, several, tmp_path):
    cfg = compose_config(["mode=predict", *overrides], tmp_path)
    assert _several(cfg) is several


def test_sdss_frames_with_a_file_glob_is_refused(tmp_path):
    cfg = compose_config(["mode=predict", "survey=sdss_frames", "predict.input=d/*.fits"], tmp_path)
    with pytest.raises(BlissConfigError, match="survey.fields"):
        _several(cfg)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("d/frame-r-0012.fits", "frame-r-0012"),
        ("d/coadd.fits.fz", "coadd"),
        ("d/x.FIT.gz", "x"),
        ("d/table.parquet", "table.parquet"),
    ],
)
def test_input_name_drops_fits_and_compression_suffixes(path, name):
    assert input_name(path) == name


def test_globs_expand_sorted_once_and_an_unmatched_item_stays(tmp_path):
    for name in ("b.fits", "a.fits"):
        (tmp_path / name).touch()
    spec = [str(tmp_path / "*.fits"), str(tmp_path / "a.fits"), str(tmp_path / "none*.fits")]
    inputs = resolve_inputs(spec, PLAIN)
    assert [item.name for item in inputs] == ["a", "b", "none*"]
    assert inputs[0].path == tmp_path / "a.fits"


def test_two_inputs_with_one_name_are_refused(tmp_path):
    with pytest.raises(BlissConfigError, match="both write catalogs named 'f'"):
        resolve_inputs([str(tmp_path / "x" / "f.fits"), str(tmp_path / "y" / "f.fits")], PLAIN)


def test_sdss_fields_are_named_like_sdss_files(tmp_path):
    overrides = ["mode=predict", "survey=sdss_frames", "survey.data_dir=s"]
    cfg = compose_config([*overrides, "survey.fields=[[94,1,12],[94,1,12],[1000,6,3]]"], tmp_path)
    inputs = resolve_inputs("ignored.fits", instantiate(cfg.survey))
    assert [item.name for item in inputs] == ["sdss-000094-1-0012", "sdss-001000-6-0003"]
    assert inputs[1].ids == (1000, 6, 3) and inputs[1].path is None
    assert inputs[1].label.endswith(f"({Path('s')}/1000/6/3)")
