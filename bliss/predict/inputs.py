"""What ``mode=predict`` catalogs: one image, or many (a glob, a list, or SDSS fields).

``predict.input`` names several inputs when it is a list or a glob (``'data/*.fits'``), and so
does ``survey.fields`` with ``survey=sdss_frames``. Each input gets a name, from which its
outputs in the ``predict.output`` directory are named: the file name without ``.fits`` /
``.fit`` / ``.fts`` (and ``.fz`` / ``.gz`` / ``.bz2``), or the name the survey gives its own
image (:meth:`bliss.protocols.ImageSource.inputs`, e.g. ``sdss-<run6>-<camcol>-<field4>``).
"""

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bliss.errors import BlissConfigError
from bliss.protocols import ImageSource, Survey

__all__ = ["MERGED_NAME", "PredictInput", "has_several_inputs", "input_name", "resolve_inputs"]

#: the merged catalog (a Parquet dataset partitioned by input) inside ``predict.output``
MERGED_NAME = "merged.parquet"
_COMPRESSION = (".fz", ".gz", ".bz2")
_FITS = (".fits", ".fit", ".fts")


@dataclass(frozen=True)
class PredictInput:
    """One image to catalog.

    Attributes:
        name: stem of its output files (unique among the inputs of a run).
        label: how messages name it (the path, or the SDSS field and its folder).
        path: the FITS file, or None for an image the survey finds itself.
        ids: what :meth:`~bliss.protocols.ImageSource.for_field` takes for such an image (e.g.
            ``(run, camcol, field)``), else None.
    """

    name: str
    label: str
    path: Path | None = None
    ids: tuple[int, ...] | None = None


def has_several_inputs(spec: str | Path | Sequence[str], survey: Survey) -> bool:
    """Whether ``predict.input`` (``spec``) and the survey ask to catalog several inputs.

    Args:
        spec: ``predict.input``: a file, a glob or a list.
        survey: the survey; one that finds its own images lists them in ``inputs()``.

    Raises:
        BlissConfigError: a survey that finds its own images (e.g. ``survey=sdss_frames``) with
            ``predict.input`` a list or a glob.
    """
    listed = not isinstance(spec, str | Path) or glob.has_magic(str(spec))
    if isinstance(survey, ImageSource):
        if listed:
            raise BlissConfigError(
                f"predict.input={spec} but survey={survey.name} reads its own images and ignores "
                "predict.input; list them in the survey instead, e.g. "
                "survey.fields=[[94,1,12],[94,1,13]]."
            )
        return bool(survey.inputs())
    return listed


def input_name(path: str | Path) -> str:
    """The output stem of an input file: ``data/f-0012.fits.fz`` -> ``f-0012``."""
    name = Path(path).name
    for suffixes in (_COMPRESSION, _FITS):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def resolve_inputs(spec: str | Path | Sequence[str], survey: Survey) -> list[PredictInput]:
    """The inputs of a run with several: files of ``predict.input``, or the survey's own.

    A list item that is a glob expands to its sorted matches; one that matches nothing stays as
    an input that fails (the run reports it and goes on). Repeated files are cataloged once.

    Raises:
        BlissConfigError: no input at all, or two inputs would write the same catalog name.
    """
    if isinstance(survey, ImageSource) and survey.inputs():
        inputs = [PredictInput(i.name, i.label, ids=i.ids) for i in survey.inputs()]
    else:
        items = [spec] if isinstance(spec, str | Path) else list(spec)
        paths: list[Path] = []
        for item in items:
            matched = sorted(glob.glob(str(item))) if glob.has_magic(str(item)) else []
            paths += [Path(m) for m in matched] or [Path(str(item))]
        inputs = [PredictInput(input_name(p), str(p), path=p) for p in dict.fromkeys(paths)]
    if not inputs:
        raise BlissConfigError(
            f"predict.input={spec} names no input; give a FITS file, a list, or a glob such as "
            "'data/*.fits'."
        )
    _check_names(inputs)
    return inputs


def _check_names(inputs: Sequence[PredictInput]) -> None:
    seen: dict[str, PredictInput] = {}
    for item in inputs:
        if item.name in (Path(MERGED_NAME).stem, Path(MERGED_NAME).name):
            raise BlissConfigError(
                f"input {item.label} would write catalogs named {item.name!r}, the name of the "
                f"merged catalog; rename the file."
            )
        other = seen.setdefault(item.name, item)
        if other is not item:
            raise BlissConfigError(
                f"inputs {other.label} and {item.label} would both write catalogs named "
                f"{item.name!r} in predict.output; catalog them into different predict.output "
                "directories, or rename one."
            )
