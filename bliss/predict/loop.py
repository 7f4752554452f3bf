"""``mode=predict`` over many inputs: a Lightning predict loop, one catalog per input, resumable.

Lightning's distributed sampler hands every rank (``trainer.devices`` x ``trainer.num_nodes``) a
disjoint share of the inputs; each predict step catalogs one input with
:func:`bliss.predict.cataloging.predict_file` into the ``predict.output`` directory:

* ``<name>.<format>``: the catalog, its meta as in single-file mode plus ``FPRINT``;
* ``<name>_samples.<format>`` (``predict.n_samples > 0``) and ``<name>.png`` (``predict.plot``);
* ``<name>.json``: the record written last (input, fingerprint, sources, files, rank). An
  input whose record and files exist is skipped, so a re-run resumes; one made with another
  catalog config fails and is named;
* ``config-<CFGHASH>.yaml``: the run's config, the one each catalog's ``CFGHASH`` names.

Rank 0 then refreshes ``merged.parquet`` (see :mod:`bliss.predict.merge`). An input that cannot
be read or written (a missing file, a full disk) is reported and the others go on; the run prints
its summary, then raises at the end, listing every failure, a failed merge included. Temporary
files that a killed run left are removed when the next one starts.
"""

import dataclasses
import glob
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from bliss.atomic import atomic_path, remove_stale_temporaries
from bliss.catalog.io import CATALOG_FORMATS
from bliss.encoder.encoder import Encoder
from bliss.errors import BlissConfigError, BlissIOError
from bliss.predict.cataloging import predict_file
from bliss.predict.inputs import PredictInput
from bliss.predict.merge import read_records, write_merged_catalog
from bliss.predict.predictor import Predictor, PredictorSettings, build_predictor
from bliss.predict.regional import CrowdedModel, RegionalPredictor, build_regional
from bliss.protocols import ImageSource, ModelConditions, Survey

__all__ = ["CatalogSettings", "InputCataloger", "catalog_input", "predict_inputs"]

_log = logging.getLogger(__name__)

_SUFFIXES = {suffix for suffix, _ in CATALOG_FORMATS.values()}


@dataclass
class CatalogSettings:
    """Where and how each input is cataloged (``predict`` keys, resolved once per run)."""

    output_dir: Path
    suffix: str
    threshold: float
    n_samples: int
    plot: bool
    meta: dict[str, Any]
    fingerprint: str
    seed: int = 0
    sky: str = "included"
    check_images: bool = False
    marginal_samples: int = 0

    def sample_seed(self, name: str) -> int:
        """The seed of input ``name``'s posterior samples: the same on any rank, in any order."""
        digest = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def __post_init__(self) -> None:
        if self.output_dir.suffix.lower() in {*_SUFFIXES, ".fit"} or self.output_dir.is_file():
            raise BlissConfigError(
                f"predict.output={self.output_dir} names a file, but predict.input names several "
                "inputs; give a directory for their catalogs, e.g. predict.output=catalogs/."
            )
        if self.suffix not in _SUFFIXES:
            raise BlissConfigError(
                f"catalog suffix {self.suffix!r}; expected one of {sorted(_SUFFIXES)} "
                f"(predict.format one of {sorted(CATALOG_FORMATS)})."
            )

    def files(self, name: str) -> list[str]:
        """Output files of input ``name``, the catalog first."""
        files = [f"{name}{self.suffix}"]
        if self.n_samples:
            files.append(f"{name}_samples{self.suffix}")
        if self.plot:
            files.append(f"{name}.png")
        if self.check_images:
            files.append(f"{name}_check.fits")
            if self.plot:
                files.append(f"{name}_check.png")
        return files


def catalog_input(
    predictor: Predictor | RegionalPredictor,
    survey: Survey,
    item: PredictInput,
    settings: CatalogSettings,
    rank: int = 0,
) -> dict[str, Any]:
    """Catalog one input unless its outputs are complete; return its status and source count.

    ``rank`` (the global rank that made it) is kept in the record, for the record.

    Raises:
        BlissIOError: the input is missing or unreadable, or its existing outputs were made with
            another catalog config (fingerprint).
    """
    record_path = settings.output_dir / f"{item.name}.json"
    files = settings.files(item.name)
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") != settings.fingerprint:
            raise BlissIOError(
                f"{record_path} was made with another catalog config (fingerprint "
                f"{record.get('fingerprint')} != {settings.fingerprint}); write to another "
                "predict.output, or delete that input's files to redo it."
            )
        if all((settings.output_dir / name).exists() for name in files):
            return {"status": "skipped", "n_sources": int(record["n_sources"])}
    if item.ids is not None and isinstance(survey, ImageSource):
        survey = survey.for_field(*item.ids)
    elif glob.has_magic(str(item.path)) and not item.path.exists():
        raise BlissIOError(f"predict.input pattern {item.path} matches no file.")
    torch.manual_seed(settings.sample_seed(item.name))
    result = predict_file(
        predictor,
        survey,
        item.path,
        settings.output_dir / files[0],
        threshold=settings.threshold,
        n_samples=settings.n_samples,
        marginal_samples=settings.marginal_samples,
        plot=settings.plot,
        meta={**settings.meta, "FPRINT": settings.fingerprint},
        sky=settings.sky,
        check_images=settings.check_images,
    )
    n_sources = len(result["table"])
    record = {
        "name": item.name,
        "input": item.label,
        "fingerprint": settings.fingerprint,
        "cfghash": settings.meta["CFGHASH"],
        "n_sources": n_sources,
        "files": files,
        "rank": rank,
    }
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return {"status": "done", "n_sources": n_sources}


class InputCataloger(pl.LightningModule):
    """Catalogs input ``i`` at each predict step; the batches are input indices.

    Args:
        encoder: the trained encoder (moved to each rank's device by Lightning).
        model: what the model assumes about its images (from its checkpoint).
        predictor_settings: how the predictor cuts images (its ``device`` is this rank's).
        inputs: every input of the run.
        survey: the survey (a per-field copy is read for SDSS fields).
        settings: where and how to write.
        crowded: a crowded-field model for the crowded blocks of each image, or None.
    """

    def __init__(
        self,
        encoder: Encoder,
        model: ModelConditions,
        predictor_settings: PredictorSettings,
        inputs: list[PredictInput],
        survey: Survey,
        settings: CatalogSettings,
        crowded: CrowdedModel | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        # a submodule, so that Lightning moves it to each rank's device with the main encoder
        self.crowded_encoder = None if crowded is None else crowded.encoder
        self.crowded = crowded
        self.model = model
        self.predictor_settings = predictor_settings
        self.inputs = inputs
        self.survey = survey
        self.settings = settings
        self.statuses: list[dict[str, Any]] = []
        self._predictor: Predictor | RegionalPredictor | None = None

    def on_predict_start(self) -> None:
        """Build the predictor on this rank's device."""
        settings = dataclasses.replace(self.predictor_settings, device=str(self.device))
        self._predictor = build_predictor(
            settings, self.encoder, self.model, progress=False, survey=self.survey
        )
        if self.crowded is not None:
            self._predictor = build_regional(self._predictor, self.crowded, settings)

    def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Any] | None:
        """Catalog one input; a failure is recorded, not raised, so the other inputs go on."""
        index = int(batch[0])
        if index >= len(self.inputs):  # padding: Lightning gives every rank at least one batch
            return None
        item = self.inputs[index]
        try:
            status = catalog_input(
                self._predictor, self.survey, item, self.settings, rank=self.global_rank
            )
        except Exception as err:  # every failure is re-raised at the end of the run, listed
            named = item.path is not None and str(item.path) in str(err)
            message = str(err) if named else f"{item.label}: {err}"
            status = {"status": "failed", "message": f"{type(err).__name__}: {message}"}
            _log.error("failed: %s", status["message"])
        if status["status"] == "skipped":
            _log.info(
                "skip %s: its catalog in %s is complete", item.label, self.settings.output_dir
            )
        status.update(index=index, name=item.name, label=item.label)
        self.statuses.append(status)
        return status


def _gather(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's statuses, on every rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return statuses
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, statuses)
    return [status for part in gathered for status in part]


def _complete(
    statuses: list[dict[str, Any]], inputs: list[PredictInput], settings: CatalogSettings
) -> list[dict[str, Any]]:
    """One status per input; an input no rank reported on is judged by its record on disk."""
    by_index = {status["index"]: status for status in statuses}
    records = {}
    if len(by_index) < len(inputs):  # only then: reading every record is slow for many inputs
        records = read_records(settings.output_dir, settings.fingerprint)
    result = []
    for index, item in enumerate(inputs):
        status = by_index.get(index)
        if status is None:
            if item.name in records:
                status = {"status": "done", "n_sources": records[item.name]["n_sources"]}
            else:
                status = {
                    "status": "failed",
                    "message": f"{item.label}: no rank reported it (a process crashed?)",
                }
            status.update(index=index, name=item.name, label=item.label)
        result.append(status)
    return result


def predict_inputs(
    trainer: pl.Trainer,
    module: InputCataloger,
) -> dict[str, Any]:
    """Catalog every input of ``module`` with ``trainer`` (see the module docstring).

    Args:
        trainer: a Lightning trainer for prediction (no logger or checkpoints, Lightning's
            distributed sampler), whose ranks share the inputs.
        module: the cataloger, with the inputs and where and how to write them.

    Returns:
        ``inputs`` (one status per input: ``done``, ``skipped`` or ``failed``), ``merged`` (the
        Parquet dataset, on rank 0) and ``n_sources`` (its rows).

    Raises:
        BlissIOError: after every other input is done, on rank 0, when some input failed; the
            message lists each with its reason.
    """
    inputs, settings = module.inputs, module.settings
    remove_stale_temporaries(settings.output_dir)  # only those of writers that no longer run
    # Lightning's sampler refuses a rank without inputs: pad with indices predict_step skips
    loader = DataLoader(range(max(len(inputs), trainer.world_size)), batch_size=1, shuffle=False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    statuses = _complete(_gather(module.statuses), inputs, settings)
    result: dict[str, Any] = {"inputs": statuses, "merged": None, "n_sources": None}
    if not trainer.is_global_zero:
        return result
    merge_error = None
    try:
        result["merged"], result["n_sources"], kept = write_merged_catalog(
            settings.output_dir, settings.fingerprint
        )
    except BlissIOError as err:  # reported with the inputs' failures, after the summary
        merge_error, kept = err, True
    counts = {
        key: sum(s["status"] == key for s in statuses) for key in ("done", "skipped", "failed")
    }
    if merge_error is not None:
        merged = "the merged catalog was not refreshed"
    elif kept:
        merged = (
            f"{result['merged']} kept as it was ({result['n_sources']} sources): it holds "
            "another catalog config's results, or this run cataloged nothing"
        )
    else:
        merged = f"{result['n_sources']} sources in {result['merged']}"
    print(
        f"{len(inputs)} inputs: {counts['done']} cataloged, {counts['skipped']} already complete, "
        f"{counts['failed']} failed; {merged}"
    )
    failed = [s for s in statuses if s["status"] == "failed"]
    if failed or merge_error is not None:
        listing = "\n".join(f"  {s['message']}" for s in failed)
        if merge_error is not None:
            listing += f"\n  merge: {merge_error}"
        raise BlissIOError(
            f"{len(failed)} of {len(inputs)} inputs failed"
            f"{' and the merge failed' if merge_error is not None else ''} (the others are "
            f"cataloged in {settings.output_dir}; fix these and re-run the same command to do "
            f"only them):\n{listing}"
        )
    return result
