"""Stage 2 of the constant-shear model: fit the shear head on the trained encoder's features.

In joint training the image-level shear head sat on a plateau (its output varied by 1e-4 between
images after 1400 steps) although the features measure every galaxy's ellipticity (correlation
0.94 at i < 22.5). With the features fixed, a fresh head leaves that plateau after ~1000 steps
of 64 images. This script simulates ``--n-images`` fresh images (plus ``--val-images``) from the
preset, computes their features once with the stage-1 encoder, fits the head by the same negative
log posterior, keeps the weights of the best validation loss, and writes a small checkpoint (the
stage-1 weights with the new head; ``bliss.encoder.checkpoint.export_checkpoint`` format). It is
still neural posterior estimation: ``q(g | image)`` with the image summarised by features that the
catalog posterior taught. Usage::

    python case_studies/weak_lensing/fit_shear_head.py --checkpoint STAGE1.ckpt \
        --out case_studies/weak_lensing/models/shear_constant.ckpt
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import export_checkpoint, load_encoder, write_checksum_sidecar
from bliss.encoder.region_head import RegionHead

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_shear import compose_config  # noqa: E402

NAME = "shear"


@torch.no_grad()
def simulated_features(encoder, simulator, n_images: int, seed: int, batch: int = 64):  # noqa: ANN001, ANN201
    """Features (``n f ht wt``) and true shears (``n 2``) of ``n_images`` fresh images."""
    features, truth = [], []
    for index in tqdm(range(-(-n_images // batch)), desc="features", unit="batch"):
        images = simulator.simulate(batch, seed=seed + index)
        features.append(encoder.tile_features(images))
        truth.append(images["fields/shear"])
    return torch.cat(features)[:n_images], torch.cat(truth)[:n_images]


def fit_head(encoder, train, val, steps: int, batch: int, lr: float, seed: int) -> dict:  # noqa: ANN001
    """A fresh region head fitted on (features, truth) pairs; returns its best state and losses."""
    torch.manual_seed(seed)
    old = encoder.region_heads[NAME]
    head = RegionHead(
        encoder.features.width,
        old.regions[0].out_channels,
        encoder.regions[NAME].n_params,
        old.tiles_per_region,
        norm=encoder.features.norm,
    )
    region = encoder.regions[NAME]
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    best = {"val_loss": float("inf"), "step": -1}
    generator = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc="shear head", unit="step"):
        index = torch.randint(len(train[0]), (batch,), generator=generator)
        loss = -region.log_prob(head(train[0][index]), train[1][index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 99 or step == steps - 1:
            with torch.no_grad():
                val_loss = float(-region.log_prob(head(val[0]), val[1]).mean())
            if val_loss < best["val_loss"]:
                best = {"val_loss": val_loss, "step": step, "state": head.state_dict()}
    return best


def main(argv: list[str] | None = None) -> int:
    """Fit the head and write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the stage-1 checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-images", type=int, default=4096)
    parser.add_argument("--val-images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=5_000_000)
    args = parser.parse_args(argv)
    encoder, _ = load_encoder(args.checkpoint)
    simulator = build_simulator(compose_config("in_prior"))
    train = simulated_features(encoder, simulator, args.n_images, args.seed)
    val = simulated_features(encoder, simulator, args.val_images, args.seed + 100_000)
    best = fit_head(encoder, train, val, args.steps, args.batch, args.lr, args.seed)
    print(f"best validation loss {best['val_loss']:.4f} at step {best['step']}")
    encoder.region_heads[NAME].load_state_dict(best["state"])
    with torch.no_grad():
        params = encoder.region_heads[NAME](val[0])
    loc, _ = encoder.regions[NAME].factor._loc_scale(params[:, 0, 0])
    truth = val[1][:, 0, 0]
    corr = [float(np.corrcoef(loc[:, i], truth[:, i])[0, 1]) for i in range(2)]
    rmse = float((loc - truth).pow(2).mean().sqrt())
    print(f"validation: rmse {rmse:.4f}, correlation {corr[0]:.3f} / {corr[1]:.3f}")
    # the stage-1 checkpoint with the new head: export it, then swap the head's weights in
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stage2 = {"shear_head": vars(args) | {"val_loss": best["val_loss"], "val_rmse": rmse}}
    export_checkpoint(args.checkpoint, args.out, extra={"stage2": str(stage2)})
    small = torch.load(args.out, map_location="cpu", weights_only=False)
    for key, value in best["state"].items():
        small["state_dict"][f"region_heads.{NAME}.{key}"] = value.half()
    torch.save(small, args.out)
    write_checksum_sidecar(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
