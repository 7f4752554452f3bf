"""A bright star on a tile corner and on a tile border: found once by the point estimate and the samples?

Issue 13's checkerboard target: a star exactly on the corner four tiles share is found by the
point estimate in at least 19 of 20 noise draws and held once in at least 95 % of joint samples;
the same on a border. With a tiling margin (``encoder.tiling.margin_px``) the first group's tiles
hold those places well inside, and the ambiguity moves to the corner and edge of their widened
area, 0.5 px out: both are measured too. Per place this prints the point estimate's finds over
``--seeds`` noise draws, the joint samples that hold the star once / miss it / hold it twice
or more (``--samples`` per noise draw, over ``--sample-draws`` draws, torch seed = noise seed),
and the P(source) each tile around the place had when its colour group was decided (noise seed
0), in visiting order. For the samples holding it more than once, the extra detections' median
distance from the star and their r flux against the star's tell a second copy of the star (same
place, similar flux) from a faint neighbour the samples add. A star at a tile's centre is the
control: no neighbouring tile shares it.

    python benchmarks/bench_tile_corners.py [--checkpoint bliss/models/sdss_generalist.ckpt] \
        [--sample-draws 5]

The star (r = 40 nmgy, SDSS colours, Moffat PSFs at the SDSS preset's seeing, Poisson noise) is
drawn by ``star_image`` of the shipped-model tests, at the centre of a ``--size`` px image.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bliss.encoder.checkpoint import load_encoder  # noqa: E402
from bliss.predict.predictor import Predictor  # noqa: E402
from tests.conftest import catalog_columns  # noqa: E402
from tests.integration.test_shipped_model import MODEL, star_image  # noqa: E402

NEAR_PX = 3.0  # a detection this close to the star is the star
TOUCH_PX = 0.1  # the tiles this close to the star's place are the ones that may claim it
STAR_R_NMGY = 40.0  # the star's r flux


def _nearby(catalog, row: float, col: float, band: int) -> list[tuple[float, float]]:
    """(distance px, r flux / the star's) of the detections that hold the star, nearest first."""
    columns = catalog_columns(catalog)
    distance = np.hypot(columns["row"] - row, columns["col"] - col)
    near = np.flatnonzero(distance < NEAR_PX)
    flux = catalog["fluxes"][0, : len(distance), band].numpy()
    return [
        (float(distance[i]), float(flux[i] / STAR_R_NMGY)) for i in near[np.argsort(distance[near])]
    ]


def group_probabilities(predictor: Predictor, image, row: float, col: float) -> list[float]:
    """P(source) of the tiles at ``(row, col)``, each as its group was decided, in visiting order."""
    encoder = predictor.encoder
    features = predictor.tile_features(image)
    _, _, n_h, n_w = features.shape
    colors = encoder.tiling.colors(n_h, n_w, features.device)
    slen = encoder.tile_slen
    # the tiles that may hold the place (widened by the tiling margin, plus TOUCH_PX): four at
    # a corner, two on a border
    reach = TOUCH_PX + encoder.tiling.margin_px
    rows = {int((row - reach) // slen), int((row + reach) // slen)}
    cols = {int((col - reach) // slen), int((col + reach) // slen)}
    tiles = [(r, c) for r in sorted(rows) for c in sorted(cols)]
    with torch.no_grad():
        # each tile's parameters are those its group was decided with, as predict runs it
        _, params = encoder.infer_from_features(features)
    prob = encoder.posterior.prob_source(params)[0].reshape(n_h, n_w)
    order = encoder.tiling.order(False)
    tiles.sort(key=lambda tile: order.index(int(colors[tile])))
    probabilities = [round(float(prob[tile]), 3) for tile in tiles]
    return probabilities


def _star(row: float, col: float, size: int, seed: int):  # noqa: ANN202
    return star_image(row, col, r_nmgy=STAR_R_NMGY, size=size, seed=seed)


def _median(values) -> float | None:  # noqa: ANN001
    values = list(values)
    return float(np.median(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(MODEL))
    parser.add_argument("--size", type=int, default=48, help="image side, px (a multiple of 8)")
    parser.add_argument("--seeds", type=int, default=20, help="noise draws for the point estimate")
    parser.add_argument("--samples", type=int, default=40, help="joint samples per noise draw")
    parser.add_argument(
        "--sample-draws", type=int, default=1, help="noise draws (seeds 0, 1, ...) for the samples"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    encoder, config = load_encoder(args.checkpoint)
    predictor = Predictor(encoder, window_px=config["simulator"]["image_size"], progress=False)
    centre = args.size / 2
    places = {
        "corner": (centre, centre),
        "corner + 0.03 px": (centre + 0.03, centre + 0.03),
        "border": (centre, centre + 2.0),
        # where a model with a 0.5 px tiling margin is ambiguous instead: the corner and the edge
        # of the first group's widened tile
        "corner - 0.5 px": (centre - 0.5, centre - 0.5),
        "border - 0.5 px": (centre - 0.5, centre + 2.0),
        # the control: a tile's centre, where no neighbour shares the star
        "tile centre": (centre + 2.0, centre + 2.0),
    }
    band = encoder.reference_index
    results = {"checkpoint": args.checkpoint, "places": {}}
    for name, (row, col) in places.items():
        finds = [
            len(_nearby(predictor.predict(_star(row, col, args.size, s)), row, col, band))
            for s in range(args.seeds)
        ]
        held, extras = [], []
        for draw in range(args.sample_draws):
            torch.manual_seed(draw)
            _, samples = predictor.predict_and_sample(
                _star(row, col, args.size, draw), n_samples=args.samples
            )
            for sample in samples:
                nearby = _nearby(sample, row, col, band)
                held.append(len(nearby))
                extras += nearby[1:]
        image = _star(row, col, args.size, 0)
        n_samples = args.samples * args.sample_draws
        entry = {
            "point_found_once": finds.count(1),
            "point_draws": args.seeds,
            "samples": n_samples,
            "samples_once": held.count(1),
            "samples_missed": held.count(0),
            "samples_twice_or_more": sum(h >= 2 for h in held),
            "group_p_source": group_probabilities(predictor, image, row, col),
            # the second (and further) detections of the samples holding it twice or more
            "extra_distance_px_median": _median(e[0] for e in extras),
            "extra_flux_ratio_median": _median(e[1] for e in extras),
            "extra_flux_ratio_above_0.25": sum(e[1] > 0.25 for e in extras),
        }
        results["places"][name] = entry
        print(
            f"{name:17s} point estimate once in {entry['point_found_once']}/{args.seeds} | "
            f"samples once/missed/twice+: {entry['samples_once']}/{entry['samples_missed']}/"
            f"{entry['samples_twice_or_more']} of {n_samples} | P(source) by group: "
            f"{entry['group_p_source']}"
        )
        if extras:
            print(
                f"{'':17s} extra detections: {len(extras)}, median distance "
                f"{entry['extra_distance_px_median']:.2f} px, median r flux "
                f"{entry['extra_flux_ratio_median']:.2f} x the star's, "
                f"{entry['extra_flux_ratio_above_0.25']} above 0.25 x"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
