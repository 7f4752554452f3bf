"""``bliss mode=download``: fetch the files of SDSS fields from the SAS."""

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from bliss.errors import BlissConfigError

__all__ = ["run_download"]


def run_download(cfg: DictConfig) -> list[Path]:
    """Fetch the files of ``survey=sdss_frames``'s field(s) into ``survey.data_dir``.

    Raises:
        BlissConfigError: the survey is not ``sdss_frames``.
    """
    from tqdm import tqdm

    from bliss.surveys.sdss.download import download_sdss_field
    from bliss.surveys.sdss.survey import SdssFrameSurvey

    survey = instantiate(cfg.survey)
    if not isinstance(survey, SdssFrameSurvey):
        raise BlissConfigError(
            f"mode=download fetches SDSS fields; survey={cfg.survey.name} is not one. Use "
            "survey=sdss_frames survey.data_dir=DIR survey.run=R survey.camcol=C survey.field=F."
        )
    fields = survey.fields or [(survey.run, survey.camcol, survey.field)]
    paths = []
    for ids in tqdm(fields, desc="download", unit="field", disable=len(fields) < 2):
        paths += download_sdss_field(
            *ids, survey.data_dir, bands=tuple(survey.bands), **cfg.download
        )
    print(f"{len(paths)} files of {len(fields)} field(s) in {survey.data_dir}")
    return paths
