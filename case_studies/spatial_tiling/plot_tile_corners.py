"""Plot what models do with a bright star on a tile corner or border (``bench_tile_corners.py`` JSONs).

    python case_studies/spatial_tiling/plot_tile_corners.py --runs NAME=results/corners_x.json ... \
        --out results/tile_corner.png

Per model and place: how many of the joint samples hold the star once, miss it or hold it twice
or more (stacked bars), with the point estimate's finds over the noise draws written above.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUTCOMES = (
    ("samples_once", "once", "tab:green"),
    ("samples_missed", "missed", "tab:gray"),
    ("samples_twice_or_more", "twice or more", "tab:red"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=PATH of a bench JSON")
    parser.add_argument("--out", default="tile_corner.png")
    args = parser.parse_args()
    runs = {}
    for entry in args.runs:
        name, _, path = entry.partition("=")
        if not path:
            parser.error(f"--runs {entry!r}: expected NAME=PATH")
        runs[name] = json.loads(Path(path).read_text())["places"]
    places = [p for p in next(iter(runs.values())) if all(p in r for r in runs.values())]
    fig, axes = plt.subplots(1, len(places), figsize=(3.2 * len(places), 3.6), sharey=True)
    for ax, place in zip(axes, places, strict=True):
        bottom = [0.0] * len(runs)
        for key, label, color in OUTCOMES:
            values = [r[place][key] for r in runs.values()]
            ax.bar(list(runs), values, bottom=bottom, color=color, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for i, r in enumerate(runs.values()):
            found = f"{r[place]['point_found_once']}/{r[place]['point_draws']}"
            ax.text(i, bottom[i] + 0.5, found, ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(bottom) * 1.12)
        ax.set_title(place, fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0].set_ylabel("joint samples (point-estimate finds above)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
