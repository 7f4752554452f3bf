"""This repo's `bliss` side by side with the reference implementation, `bliss-toolkit` 0.4.2.

Usage: python benchmarks/bench_reference.py [--only generate train predict] [--skip-reference]
       [--venv PATH] [--python python3.12] [--workdir DIR] [--gen-batches 6] [--train-steps 3]

Measures, in one run and on matching configurations (256 x 256 px, 5 bands, ~12 sources per
image, SDSS-like sky, zero points and PSF widths, CPU):
  (a) generation images/s and peak RSS: the reference's `generate_one_file` (GalSim, one process)
      against `bench_generate.run` with `simulator=galsim` and `simulator=torch` (one worker);
  (b) training images/s, peak RSS and parameter count: forward + backward + optimizer step on one
      batch of 16 images, the reference's default `Encoder` (its `_compute_loss`, Adam) against
      `bench_train.measure` with the feature width whose parameter count is closest to the
      reference's (one warm-up step first, on both sides);
  (c) seconds and peak RSS to predict one 2048 x 1489 px 5-band SDSS-sized frame: the reference's
      `bliss.main.predict` (survey reader + Lightning `Trainer.predict`) against
      `bench_predict.run_method("bliss", ...)` with the shipped checkpoint, on the same pixels.
Every measurement runs in a fresh process, so its peak RSS is its own; reference and ours
alternate, so a background load hits both. Prints one markdown table with ratios and targets, then
versions and load averages; images per CPU-second (CPU time of the measured process, all threads)
are printed too, since wall-clock rates move with other jobs on the machine.

The reference runs from its own Python 3.12 venv (default ~/.cache/bliss-bench/bliss-toolkit-0.4.2),
created here when missing: `pip install bliss-toolkit==0.4.2 torch==2.7.1 torchvision==0.22.1
"numpy<2" scikit-learn`. bliss-toolkit needs torchvision<0.23, hence torch 2.7.x; on Linux PyPI
only has the CUDA build of it (0.8 GB plus 2.7 GB of nvidia-* wheels; the venv takes 6.1 GB and
installing took 21 minutes on the 2-core machine under load).
Offline it also needs files it would otherwise download or read from a cluster, which this script
writes under the work directory:
  - colour models (`paths.sdss/color_models/{star,gal}_gmm_nmgy.pkl`): scikit-learn Gaussian
    mixtures fitted to log flux ratios drawn from this repo's prior, so both sides share colours;
  - SDSS-format survey files for run 94, camcol 1, field 12 (the reference's default field):
    `frame-{band}` (HDU0 sky-subtracted nanomaggies with WCS, HDU1 calibration, HDU2 sky grid)
    holding the frame `bench_predict.write_frame` simulates, `psField` (HDU6 PSF parameters with
    this repo's per-band FWHM), `photoField` (gains) and empty `fpM` masks;
  - a randomly initialised reference encoder state dict (its prediction time does not depend on
    the weights: the network runs on every tile either way).
and the overrides `surveys.sdss.fields=[94/1/12]`, `surveys.sdss.align_to_band=null` (with an
alignment band its frame reader hands `reproject` a list of WCSs per band and fails),
`decoder.with_dither=false` (dithering needs an alignment band), `predict.device=cpu`,
`predict.trainer.accelerator=cpu`.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # the bench_* modules, also in spawned workers
    sys.path.insert(0, str(BENCH_DIR))

REFERENCE = "bliss-toolkit==0.4.2"
REFERENCE_REQUIREMENTS = [
    REFERENCE,
    "torch==2.7.1",
    "torchvision==0.22.1",
    "numpy<2",
    "scikit-learn",
]
DEFAULT_VENV = Path.home() / ".cache" / "bliss-bench" / "bliss-toolkit-0.4.2"
RUN, CAMCOL, FIELD = 94, 1, 12
BANDS = ("u", "g", "r", "i", "z")
SDSS_GAIN = (1.62, 3.32, 4.71, 5.165, 4.745)  # e-/count, SDSS photoField 94-1, field 12
# psField HDU6 shape relative to the core sigma: r band of SDSS psField-000094-1-0012
PSF_SHAPE = {"sigma2": 2.0, "sigmap": 1.94, "beta": 3.26, "b": 0.049, "p0": 0.0105}
PIXEL_SCALE_ARCSEC = 0.396
FRAME_HEIGHT, FRAME_WIDTH = 1489, 2048
TRAIN_IMAGE_PX, TRAIN_BATCH = 256, 16


# ----------------------------------------------------------------------------------------------
# reference side: runs inside the bliss-toolkit venv (`--driver TASK`), imports only its `bliss`
# ----------------------------------------------------------------------------------------------


def _reference_config(workdir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_module

    import bliss  # noqa: F401  (registers the reference's `range` resolver)

    sdss = workdir / "sdss"
    base = [
        f"paths.sdss={sdss}",
        f"paths.cached_data={workdir / 'cached'}",
        f"paths.output={workdir / 'output'}",
        f"surveys.sdss.fields=[{{run:{RUN},camcol:{CAMCOL},fields:[{FIELD}]}}]",
        "surveys.sdss.align_to_band=null",
        "decoder.with_dither=false",
    ]
    with initialize_config_module("bliss.conf", version_base=None):
        return compose("base_config", overrides=[*base, *overrides])


def _peak_rss_gb() -> float:
    import resource

    return (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1e6
    )


def _cpu_seconds() -> float:
    import resource

    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def _import_targets(node) -> None:
    """Import the module of every `_target_` below `node`, so that timing excludes imports."""
    import importlib

    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and "." in target:
            importlib.import_module(target.rsplit(".", 1)[0])
        for value in node.values():
            _import_targets(value)
    elif isinstance(node, list):
        for value in node:
            _import_targets(value)


def _driver_setup(workdir: Path, _params: dict) -> dict:
    """Colour models from this repo's colour samples, and random encoder weights."""
    import pickle
    import platform

    import numpy as np
    import sklearn
    import torch
    from hydra.utils import instantiate
    from sklearn.mixture import GaussianMixture

    models = workdir / "sdss" / "color_models"
    models.mkdir(parents=True, exist_ok=True)
    for kind, name in (("star", "star_gmm_nmgy.pkl"), ("galaxy", "gal_gmm_nmgy.pkl")):
        log_ratios = np.load(workdir / f"colours_{kind}.npy")
        gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=0)
        with open(models / name, "wb") as f:
            pickle.dump(gmm.fit(log_ratios), f)
    cfg = _reference_config(workdir, [])
    torch.manual_seed(0)
    encoder = instantiate(cfg.encoder)
    torch.save(encoder.state_dict(), workdir / "reference_encoder.pt")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "params": sum(p.numel() for p in encoder.parameters()),
    }


def _driver_generate(workdir: Path, params: dict) -> dict:
    """`generate_one_file`: one warm-up file of one batch, then a timed file of n batches."""
    import torch
    from bliss.main import generate_one_file
    from omegaconf import open_dict

    cfg = _reference_config(workdir, ["generate.n_processes=1", *params["overrides"]])
    gen = cfg.generate
    Path(gen.cached_data_path).mkdir(parents=True, exist_ok=True)
    with open_dict(gen):
        gen.n_batches_per_file = 1
    generate_one_file(gen, 0)  # warm-up: imports, survey files, GalSim tables
    with open_dict(gen):
        gen.n_batches_per_file = params["batches"]
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    generate_one_file(gen, 1)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    path = next(Path(gen.cached_data_path).glob("dataset_1_size_*.pt"))
    data = torch.load(path, weights_only=False)
    n_sources = sum(int(d["tile_catalog"]["n_sources"].sum()) for d in data)
    return {
        "images_per_s": len(data) / elapsed,
        "images_per_cpu_s": len(data) / cpu,
        "sources_per_image": n_sources / len(data),
        "image_px": list(data[0]["images"].shape),
        "mb_per_image": path.stat().st_size / len(data) / 1e6,
        "peak_rss_gb": _peak_rss_gb(),
    }


def _driver_train(workdir: Path, params: dict) -> dict:
    """Forward + backward + Adam step of the default reference encoder on one cached batch."""
    import warnings

    import torch
    from hydra.utils import instantiate
    from torch.utils.data import default_collate

    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached
    files = sorted((workdir / "cached").glob("dataset_*_size_*.pt"), key=lambda p: p.stat().st_size)
    data = torch.load(files[-1], weights_only=False)[: params["batch"]]
    if len(data) < params["batch"]:
        raise RuntimeError(f"{files[-1]} holds {len(data)} images; need {params['batch']}")
    batch = default_collate(data)
    cfg = _reference_config(workdir, params["overrides"])
    torch.manual_seed(0)
    encoder = instantiate(cfg.encoder)
    encoder.train()
    optimizer = encoder.configure_optimizers()[0][0]

    def step() -> None:
        optimizer.zero_grad()
        encoder._compute_loss(batch, "train").backward()  # what training_step returns
        optimizer.step()

    step()  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(params["steps"]):
        step()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "images_per_s": params["steps"] * params["batch"] / elapsed,
        "images_per_cpu_s": params["steps"] * params["batch"] / cpu,
        "s_per_step": elapsed / params["steps"],
        "params": sum(p.numel() for p in encoder.parameters()),
        "image_px": list(batch["images"].shape),
        "peak_rss_gb": _peak_rss_gb(),
    }


def _driver_predict(workdir: Path, params: dict) -> dict:
    """`bliss.main.predict` on the SDSS-format frame, on the CPU, timed end to end."""
    from bliss.main import predict

    cfg = _reference_config(
        workdir,
        [
            "mode=predict",
            f"predict.weight_save_path={workdir / 'reference_encoder.pt'}",
            "predict.device=cpu",
            "predict.trainer.accelerator=cpu",
            "+predict.trainer.devices=1",
            "+predict.trainer.enable_progress_bar=false",
            "+predict.trainer.enable_model_summary=false",
            "surveys.sdss.load_image_data=true",
            *params["overrides"],
        ],
    )
    from omegaconf import OmegaConf

    begin = time.perf_counter()
    _import_targets(OmegaConf.to_container(cfg.predict, resolve=True))  # as bench_predict does
    start = time.perf_counter()
    catalogs = predict(cfg.predict)
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "import_s": start - begin,
        "n": sum(int(c["n_sources"].sum()) for c in catalogs.values()),
        "peak_rss_gb": _peak_rss_gb(),
    }


DRIVERS = {
    "setup": _driver_setup,
    "generate": _driver_generate,
    "train": _driver_train,
    "predict": _driver_predict,
}


def _run_driver(task: str, workdir: str, params: str) -> None:
    result = DRIVERS[task](Path(workdir), json.loads(params))
    print(json.dumps(result))


# ----------------------------------------------------------------------------------------------
# orchestration: runs in this repo's venv
# ----------------------------------------------------------------------------------------------


def _find_python312(explicit: str | None) -> str:
    """A Python 3.12 interpreter that runs (pyenv shims may exist but refuse to)."""
    candidates = [explicit] if explicit else []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv / "versions" / "3.12*" / "bin" / "python3.12")))
    candidates.append(shutil.which("python3.12"))
    check = "import sys; assert sys.version_info[:2] == (3, 12)"
    for candidate in candidates:
        if candidate and shutil.which(candidate) and _quiet([candidate, "-c", check]) == 0:
            return candidate
    raise SystemExit(
        "no working Python 3.12 found (bliss-toolkit 0.4.2 requires >=3.12; its torch pin has "
        "wheels for 3.12); pass --python PATH or install one (e.g. `pyenv install 3.12`)."
    )


def ensure_reference(venv: Path, python: str | None) -> Path:
    """The venv's python, after creating the venv and installing the reference if needed."""
    executable = venv / "bin" / "python"
    check = (
        "import importlib.metadata as m, numpy, sklearn, torch; "
        "assert m.version('bliss-toolkit') == '0.4.2'; assert numpy.__version__ < '2'"
    )
    if executable.exists() and _quiet([str(executable), "-c", check]) == 0:
        return executable
    if not executable.exists():
        base = _find_python312(python)
        print(f"creating {venv} with {base}", flush=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    print(f"installing {' '.join(REFERENCE_REQUIREMENTS)} into {venv} (~4.5 GB)", flush=True)
    start = time.perf_counter()
    command = [str(executable), "-m", "pip", "install", *REFERENCE_REQUIREMENTS]
    subprocess.run(["nice", "-n", "10", *command], check=True)
    print(f"installed in {time.perf_counter() - start:.0f} s", flush=True)
    if _quiet([str(executable), "-c", check]):
        raise SystemExit(f"{venv}: the install finished but `{check}` fails")
    return executable


def _quiet(command: list[str]) -> int:
    return subprocess.run(command, capture_output=True, check=False).returncode


def run_reference(
    executable: Path, task: str, workdir: Path, params: dict, overrides: list[str] = ()
) -> dict:
    """One reference task in a fresh process of the reference venv; its log goes to workdir."""
    params = {**params, "overrides": list(overrides)}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [str(executable), str(Path(__file__).resolve()), "--driver", task]
    out = subprocess.run(
        [*command, str(workdir), json.dumps(params)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=workdir,
    )
    (workdir / f"reference_{task}.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        lines = out.stderr.strip().splitlines() or ["no output"]
        return {"error": lines[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_fresh_process(function, *args):  # noqa: ANN001, ANN201 - any picklable function
    """``function(*args)`` in a fresh spawned process (its own peak memory, its own kernels);
    an exception comes back as ``{"error": ...}`` so one failed row does not end a benchmark."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(function, *args).result()
        except Exception as err:  # report it in the table, keep the other rows
            return {"error": f"{type(err).__name__}: {err}"}


def _generate(renderer: str, n_images: int) -> dict:
    """`bench_generate.run`: 256 px, CPU, one worker process, Poisson noise, shards of 50."""
    import inspect

    import bench_generate

    kwargs = {"device": "cpu", "image_size": 256, "n_images": n_images, "workers": 1}
    if "noise" in inspect.signature(bench_generate.run).parameters:
        kwargs["noise"] = "poisson"
    return bench_generate.run(renderer, per_shard=50, **kwargs)


def write_reference_inputs(workdir: Path) -> tuple[Path, Path]:
    """Simulate the frame, then write the SDSS-format files and colour samples for the reference.

    Returns:
        This repo's frame FITS and survey YAML, for `bench_predict.run_method`.
    """
    from bench_predict import write_frame

    frame_dir = workdir / "frame"
    frame_dir.mkdir(parents=True, exist_ok=True)
    frame, survey_yaml = write_frame(frame_dir, FRAME_HEIGHT, FRAME_WIDTH)
    _write_sdss_files(frame, frame_dir / "truth.fits", workdir / "sdss")
    _write_colour_samples(workdir)
    return frame, survey_yaml


def _write_sdss_files(frame: Path, truth: Path, root: Path) -> None:
    """SDSS DR8+ file layout for one field, from this repo's simulated frame.

    frame-{band}: HDU0 sky-subtracted nanomaggies (float32) with the frame's WCS, HDU1 the
    calibration (nanomaggies per count), HDU2 the sky (counts) on a coarse grid with the
    XINTERP / YINTERP maps; psField HDU6: PSF parameters (pixels) whose core matches each band's
    FWHM; photoField: FIELD and GAIN; fpM: empty (the reference only checks they exist).
    """
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    field_dir = root / str(RUN) / str(CAMCOL) / str(FIELD)
    field_dir.mkdir(parents=True, exist_ok=True)
    sky = [float(v) for v in Table.read(truth).meta["SKY"].split(",")]  # electrons per pixel
    fwhm_px = []
    with fits.open(frame) as hdus:
        for b, band in enumerate(BANDS):
            hdu = hdus[band]
            e_per_nmgy = 10 ** ((hdu.header["MAGZERO"] - 22.5) / 2.5)
            fwhm_px.append(hdu.header["PSF_FWHM"] / PIXEL_SCALE_ARCSEC)
            height, width = hdu.data.shape
            image = ((hdu.data - sky[b]) / e_per_nmgy).astype(np.float32)
            calibration = np.full(width, SDSS_GAIN[b] / e_per_nmgy, dtype=np.float32)
            grid = np.full((12, 16), sky[b] / SDSS_GAIN[b], dtype=np.float32)  # counts
            columns = [
                fits.Column("ALLSKY", format=f"{grid.size}E", dim="(16, 12)", array=grid[None]),
                fits.Column("XINTERP", format=f"{width}E", array=np.linspace(0, 15, width)[None]),
                fits.Column("YINTERP", format=f"{height}E", array=np.linspace(0, 11, height)[None]),
            ]
            header = WCS(hdu.header).to_header()
            name = f"frame-{band}-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits"
            fits.HDUList(
                [
                    fits.PrimaryHDU(image, header=header),
                    fits.ImageHDU(calibration),
                    fits.BinTableHDU.from_columns(columns),
                ]
            ).writeto(field_dir / name, overwrite=True)
            fits.PrimaryHDU().writeto(
                field_dir / f"fpM-{RUN:06d}-{band}{CAMCOL}-{FIELD:04d}.fits", overwrite=True
            )
    sigma1 = np.array(fwhm_px) / (2 * np.sqrt(2 * np.log(2)))
    psf = {
        "psf_sigma1": sigma1,
        "psf_sigma2": sigma1 * PSF_SHAPE["sigma2"],
        "psf_sigmap": sigma1 * PSF_SHAPE["sigmap"],
        "psf_beta": np.full(5, PSF_SHAPE["beta"]),
        "psf_b": np.full(5, PSF_SHAPE["b"]),
        "psf_p0": np.full(5, PSF_SHAPE["p0"]),
    }
    columns = [fits.Column(k, format="5E", array=v[None]) for k, v in psf.items()]
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU() for _ in BANDS]
    hdus.append(fits.BinTableHDU.from_columns(columns))
    psfield = field_dir / f"psField-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits"
    fits.HDUList(hdus).writeto(psfield, overwrite=True)
    columns = [
        fits.Column("FIELD", format="J", array=np.array([FIELD])),
        fits.Column("GAIN", format="5E", array=np.array([SDSS_GAIN])),
    ]
    photofield = root / str(RUN) / str(CAMCOL) / f"photoField-{RUN:06d}-{CAMCOL}.fits"
    fits.BinTableHDU.from_columns(columns).writeto(photofield, overwrite=True)


def _write_colour_samples(workdir: Path) -> None:
    """Log flux ratios ln(f[k+1] / f[k]) of stars and galaxies drawn from this repo's prior."""
    import numpy as np
    import torch
    from einops import rearrange
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=["mode=generate", "paths.run_dir=."])
    prior = instantiate(cfg.prior)
    catalog = prior.sample(32, 256, 256, torch.Generator().manual_seed(0))
    on = rearrange(catalog["n_sources"] > 0, "b ht wt -> b ht wt 1") & torch.ones(
        catalog["fluxes"].shape[:4], dtype=torch.bool
    )
    fluxes = catalog["fluxes"][on]  # n c
    is_galaxy = catalog["source_type"][on][:, 0] > 0.5
    log_ratios = torch.log(fluxes[:, 1:] / fluxes[:, :-1])
    np.save(workdir / "colours_star.npy", log_ratios[~is_galaxy].numpy())
    np.save(workdir / "colours_galaxy.npy", log_ratios[is_galaxy].numpy())


def _closest_width(target_params: int) -> tuple[int, int]:
    """The `encoder.features.width` (multiple of 32) whose parameter count is closest in ratio."""
    import math

    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    best = (0, 0)
    for width in range(64, 769, 32):
        with initialize_config_module("bliss.conf", version_base="1.3"):
            cfg = compose(
                "config",
                overrides=["mode=train", f"encoder.features.width={width}", "paths.run_dir=."],
            )
        n = sum(p.numel() for p in instantiate(cfg.encoder).parameters())
        if not best[0] or abs(math.log(n / target_params)) < abs(math.log(best[1] / target_params)):
            best = (width, n)
        if n > 2 * target_params:
            break
    return best


# ----------------------------------------------------------------------------------------------
# table
# ----------------------------------------------------------------------------------------------


def _value(result: dict | None, key: str, fmt: str) -> str:
    if result is None:
        return "not run"
    if "error" in result:
        return f"failed: {result['error'][:80]}"
    return format(result[key], fmt) if key in result else "n/a"


def _row(
    label: str,
    ref: dict | None,
    ours: dict | None,
    key: str,
    fmt: str,
    ratio: str = "",
    target: str = "",
) -> list[str]:
    """One table row.

    ``ratio``: "faster" (ours / ref), "seconds" (ref / ours), "share" (ours / ref) or "".
    ``target``: ">= Nx" / "<= Nx" on the ratio, "comparable" (ratio within 1.5x either way) or
    "<= N GB" on our value.
    """
    ok_ref = ref is not None and key in ref
    ok_ours = ours is not None and key in ours
    shown, met = "", ""
    if ok_ref and ok_ours and ratio:
        value = ref[key] / ours[key] if ratio == "seconds" else ours[key] / ref[key]
        shown = f"{value:.1f}x" if ratio in ("faster", "seconds") else f"{value:.2f}x"
        if target.endswith("x") and target[:2] in (">=", "<="):
            bound = float(target[2:-1])
            met = "yes" if (value >= bound if target[:2] == ">=" else value <= bound) else "no"
        elif target == "comparable":  # within a factor 1.5
            met = "yes" if 1 / 1.5 <= value <= 1.5 else "no"
    if target.startswith("<=") and target.endswith("GB") and ok_ours:
        met = "yes" if ours[key] <= float(target[2:-2]) else "no"
    if target and not met:
        met = "n/a"
    return [label, _value(ref, key, fmt), _value(ours, key, fmt), shown, target, met]


# label, reference result, our result, key, format, ratio kind, target (see `_row`)
TABLE = [
    ("generation, images/s, GalSim", "ref_generate", "gen_galsim", "images_per_s", ".2f", "faster", ">= 10x"),
    ("generation, images/s, torch renderer", "ref_generate", "gen_torch", "images_per_s", ".2f", "faster", ">= 50x"),
    ("generation, images/CPU-s, GalSim", "ref_generate", "gen_galsim", "images_per_cpu_s", ".2f", "faster", ""),
    ("generation, images/CPU-s, torch renderer", "ref_generate", "gen_torch", "images_per_cpu_s", ".2f", "faster", ""),
    ("generation, peak RSS GB, GalSim", "ref_generate", "gen_galsim", "peak_rss_gb", ".2f", "share", ""),
    ("generation, peak RSS GB, torch renderer", "ref_generate", "gen_torch", "peak_rss_gb", ".2f", "share", ""),
    ("generation, sources/image (GalSim)", "ref_generate", "gen_galsim", "sources_per_image", ".1f", "", ""),
    ("training, encoder parameters (M)", "ref_train", "train", "params_m", ".2f", "share", "comparable"),
    ("training, images/s (batch 16, 256 px)", "ref_train", "train", "images_per_s", ".3f", "faster", ">= 2x"),
    ("training, images/CPU-s", "ref_train", "train", "images_per_cpu_s", ".3f", "faster", ""),
    ("training, peak RSS GB", "ref_train", "train", "peak_rss_gb", ".2f", "share", "<= 0.5x"),
    ("training bf16-mixed (ours), images/s", "ref_train", "train_bf16", "images_per_s", ".3f", "faster", ">= 2x"),
    ("training bf16-mixed (ours), peak RSS GB", "ref_train", "train_bf16", "peak_rss_gb", ".2f", "share", "<= 0.5x"),
    ("predict 2048 x 1489 px x 5 bands, seconds", "ref_predict", "predict", "seconds", ".1f", "seconds", ">= 5x"),
    ("predict, peak RSS GB", "ref_predict", "predict", "peak_rss_gb", ".2f", "share", "<= 3 GB"),
    ("predict, detections (reference: random weights)", "ref_predict", "predict", "n", "d", "", ""),
]  # fmt: skip


def print_table(results: dict) -> None:
    for key in ("ref_train", "train", "train_bf16"):  # parameters in millions
        if "params" in results.get(key, {}):
            results[key]["params_m"] = results[key]["params"] / 1e6
    rows = [
        _row(label, results.get(ref), results.get(ours), key, fmt, ratio, target)
        for label, ref, ours, key, fmt, ratio, target in TABLE
        if ref in results or ours in results
    ]
    header = ["measurement", "bliss-toolkit 0.4.2", "bliss (this repo)", "ratio", "target", "met?"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


# ----------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":  # inside the reference venv
        _run_driver(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["generate", "train", "predict"])
    parser.add_argument("--skip-reference", action="store_true", help="only this repo's side")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="reference venv")
    parser.add_argument("--python", help="Python 3.12 used to create the venv")
    parser.add_argument("--workdir", type=Path, help="keep inputs and logs here [default: temp]")
    parser.add_argument("--gen-batches", type=int, default=6, help="reference: 8 images each")
    parser.add_argument("--gen-images", type=int, default=200, help="ours, per renderer")
    parser.add_argument("--train-steps", type=int, default=3, help="timed, after one warm-up")
    parser.add_argument(
        "--train-width", type=int, help="our feature width [default: closest parameter count]"
    )
    parser.add_argument(
        "--no-train-bf16",
        dest="train_bf16",
        action="store_false",
        help="skip our bf16-mixed training row (slow where the CPU lacks bfloat16 instructions)",
    )
    parser.add_argument(
        "--reference-overrides",
        nargs="+",
        default=[],
        help="Hydra overrides for every reference task",
    )
    parser.add_argument("--checkpoint", help="our model for predict [default: the shipped one]")
    args = parser.parse_args()
    load_before = os.getloadavg()
    import torch

    executable = None if args.skip_reference else ensure_reference(args.venv, args.python)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_reference_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    frame, survey_yaml = write_reference_inputs(workdir)
    versions = {}
    if executable:
        versions = run_reference(executable, "setup", workdir, {})
        if "error" in versions:
            raise SystemExit(f"reference setup failed: {versions['error']} (see {workdir})")
    results = measure_all(args, executable, workdir, frame, survey_yaml)
    (workdir / "results.json").write_text(json.dumps({**results, "reference": versions}))
    load_after = os.getloadavg()

    print()
    print_table(results)
    if results.get("train_overrides"):
        print(f"\nour training config: {' '.join(results['train_overrides'])}")
    loads = ", ".join(
        f"{key} {r['load']:.1f}"
        for key, r in results.items()
        if isinstance(r, dict) and "load" in r
    )
    reference = (
        f"reference: python={versions['python']} torch={versions['torch']} "
        f"numpy={versions['numpy']} scikit-learn={versions['sklearn']}; "
        if versions
        else "reference: not run; "
    )
    print(
        f"\ncpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"ours: python={sys.version.split()[0]} torch={torch.__version__}; {reference}"
        f"load average (1/5/15 min) before {_load(load_before)}, after {_load(load_after)}; "
        f"1-min load when each measurement ended: {loads}"
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"inputs and reference logs kept in {workdir}")


def measure_all(
    args: argparse.Namespace,
    executable: Path | None,
    workdir: Path,
    frame: Path,
    survey_yaml: Path,
) -> dict:
    """Reference and ours in turn, each measurement in a fresh process."""
    import bench_predict
    import bench_train

    tasks = args.only or ["generate", "train", "predict"]
    extra = args.reference_overrides
    results = {}

    def record(key: str, run, *run_args) -> dict:
        print(f"{key} ...", end=" ", flush=True)
        start = time.perf_counter()
        result = run(*run_args)
        result.setdefault("load", os.getloadavg()[0])
        print(f"{time.perf_counter() - start:.0f} s", flush=True)
        results[key] = result
        return result

    if "generate" in tasks:
        if executable:
            params = {"batches": args.gen_batches}
            record("ref_generate", run_reference, executable, "generate", workdir, params, extra)
        for renderer in ("galsim", "torch"):
            record(f"gen_{renderer}", in_fresh_process, _generate, renderer, args.gen_images)

    if "train" in tasks:
        width = args.train_width
        if executable:
            if not list((workdir / "cached").glob("dataset_*_size_*.pt")):
                run_reference(executable, "generate", workdir, {"batches": 2}, extra)
            params = {"batch": TRAIN_BATCH, "steps": args.train_steps}
            reference = record(
                "ref_train", run_reference, executable, "train", workdir, params, extra
            )
            if width is None and "error" not in reference:
                width = _closest_width(reference["params"])[0]
        # the memory-saving option a user training a model this wide would turn on
        overrides = [
            *([f"encoder.features.width={width}"] if width else []),
            "encoder.features.checkpoint_stem=true",
        ]
        job = (TRAIN_IMAGE_PX, TRAIN_BATCH, args.train_steps, "cpu", overrides)
        record("train", in_fresh_process, bench_train.measure, *job)
        results["train_overrides"] = overrides
        if args.train_bf16:  # the reference trains in float32; bf16 is our option on top
            bf16 = (*job[:-1], [*overrides, "trainer.precision=bf16-mixed"])
            record("train_bf16", in_fresh_process, bench_train.measure, *bf16)

    if "predict" in tasks:
        if executable:
            record("ref_predict", run_reference, executable, "predict", workdir, {}, extra)
        checkpoint = args.checkpoint or str(bench_predict.DEFAULT_CKPT)
        ours = record(
            "predict", bench_predict.run_method, "bliss", frame, checkpoint, "cpu", survey_yaml
        )
        if "peak_gb" in ours:
            ours["peak_rss_gb"] = ours.pop("peak_gb")
    return results


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
