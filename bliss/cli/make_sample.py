"""Regenerate ``sdss_sample.fits`` and its truth table: ``python -m bliss.cli.make_sample``.

A 256 x 256 px, 5-band field from the default ``sdss`` survey and prior at the density of the
quality-gate fields (~9 sources per square arcminute), nominal seeing and sky, seed 2052.
"""

from pathlib import Path

from hydra import compose, initialize_config_module

HERE = Path(__file__).parents[1] / "sample_data"
SEED = 2052  # a field with several r < 20 stars and galaxies, for the demo in the README


def main() -> None:
    """Write the sample image and truth next to this file."""
    from bliss.cli.generate import build_simulator
    from bliss.simulator.field import write_simulated_field

    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "mode=predict",
                "simulator.image_size=256",
                "prior.density_per_arcmin2=9.0",
                "paths.run_dir=.",
            ],
        )
    write_simulated_field(
        build_simulator(cfg),
        SEED,
        HERE / "sdss_sample.fits",
        HERE / "sdss_sample_truth.fits",
        compress=True,
    )


if __name__ == "__main__":
    main()
