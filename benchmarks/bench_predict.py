"""Prediction throughput and peak memory for a full 2048 x 1489 5-band SDSS-sized frame, vs `sep`.

Usage: python benchmarks/bench_predict.py [--checkpoint PATH] [--height 1489 --width 2048]
       [--device cpu|cuda] [--precision 32-true|bf16-mixed]

The frame is simulated once (default `sdss` preset and prior) and written to a temporary FITS
file; bliss and sep each run in a fresh subprocess so their peak RSS is measured separately.
`seconds` covers loading the model, reading the FITS file (sky estimated with sep) and the
catalog; the one-off imports of each process (torch for bliss) are timed apart.
Reference `bliss-toolkit` 0.4.2: about 43 s and 10.7 GB on 2 cores (sep: about 1.1 s).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CKPT = Path(__file__).resolve().parents[1] / "bliss" / "models" / "sdss_generalist.ckpt"

_CHILD = r"""
import json, resource, sys, time
from hydra.utils import instantiate
from omegaconf import OmegaConf
import bliss  # registers resolvers
from bliss.surveys.fits_reader import read_fits_image
which, path, checkpoint, device = sys.argv[1:5]
precision = sys.argv[6] if len(sys.argv) > 6 else "32-true"
survey = instantiate(OmegaConf.load(sys.argv[5]))
begin = time.perf_counter()
if which == "bliss":  # imports once per process (torch, Lightning): timed apart
    import torch
    from bliss.encoder.checkpoint import load_encoder
    from bliss.predict.predictor import Predictor
else:
    from bliss.evaluate.baseline import sep_catalog
start = time.perf_counter()
if which == "bliss":
    encoder, config = load_encoder(checkpoint)
    image = read_fits_image(path, survey, encoder.bands)
    window = int(config["simulator"]["image_size"])
    predictor = Predictor(
        encoder, window_px=window, batch_chunks=16, device=device, progress=False,
        precision=precision,
    )
    n = int(predictor.predict(image)["n_sources"][0])
else:
    image = read_fits_image(path, survey)
    n = len(sep_catalog(image, survey.reference_band, survey.pixel_scale_arcsec)["plocs"][0])
elapsed = time.perf_counter() - start
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(json.dumps({"seconds": elapsed, "import_s": start - begin, "n": n, "peak_gb": peak_gb}))
"""


def write_frame(directory: Path, height: int, width: int) -> tuple[Path, Path]:
    """Simulate one `sdss` field, crop it to `height` x `width` px and write it to `directory`.

    Returns:
        The frame FITS path (one HDU per band, electrons with sky) and a YAML file holding the
        resolved survey config; ``directory/truth.fits`` holds the catalog, with the sky per band
        in its ``SKY`` meta.
    """
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bliss.cli.generate import build_simulator
    from bliss.simulator.field import write_simulated_field

    size = max(height, width)
    size += (-size) % 4
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config", overrides=["mode=predict", f"simulator.image_size={size}", "paths.run_dir=."]
        )
    full = directory / "full.fits"
    write_simulated_field(build_simulator(cfg), 5, full, directory / "truth.fits")
    from astropy.io import fits

    with fits.open(full) as hdus:  # crop the square field to the frame shape
        for hdu in hdus[1:]:
            hdu.data = hdu.data[:height, :width]
        path = directory / "frame.fits"
        hdus.writeto(path)
    survey_yaml = directory / "survey.yaml"
    survey_yaml.write_text(OmegaConf.to_yaml(cfg.survey, resolve=True))
    return path, survey_yaml


def run_method(
    which: str,
    path: Path,
    checkpoint: str,
    device: str,
    survey_yaml: Path,
    precision: str = "32-true",
) -> dict:
    """Predict `path` with ``bliss`` (``precision``: ``predict.precision``) or ``sep`` in a fresh subprocess.

    Returns:
        ``seconds``, ``n`` (sources) and ``peak_gb`` (the subprocess's peak RSS), or
        ``error`` (the subprocess's last stderr line) when it failed.
    """
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            which,
            str(path),
            checkpoint,
            device,
            str(survey_yaml),
            precision,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    parser.add_argument("--height", type=int, default=1489)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as directory:
        path, survey_yaml = write_frame(Path(directory), args.height, args.width)
        print(
            f"frame {args.height} x {args.width} px x 5 bands; python={sys.version.split()[0]} "
            f"torch={torch.__version__} device={args.device} precision={args.precision} "
            f"threads={torch.get_num_threads()}"
        )
        print("| method | seconds | Mpix/s per band | peak RSS GB | sources | imports s |")
        print("|---|---|---|---|---|---|")
        for which in ("bliss", "sep"):
            r = run_method(which, path, args.checkpoint, args.device, survey_yaml, args.precision)
            if "error" in r:
                print(f"| {which} | failed: {r['error']} | | | | |")
                continue
            mpix = args.height * args.width / 1e6
            print(
                f"| {which} | {r['seconds']:.2f} | {mpix / r['seconds']:.2f} | {r['peak_gb']:.2f} "
                f"| {r['n']} | {r['import_s']:.2f} |"
            )


if __name__ == "__main__":
    main()
