"""Stage 2 of the weak-lensing models: fit the region heads on a trained encoder's features.

In joint training the image-level shear head sat on a plateau (its output varied by 1e-4 between
images after 1400 steps) although the features measure every galaxy's ellipticity (correlation
0.94 at i < 22.5). With the features fixed, a fresh head leaves that plateau after ~1000 steps
of 64 images. This script simulates ``--n-images`` fresh images (plus ``--val-images``) from the
preset, computes their features once with the stage-1 encoder, fits the head by the same negative
log posterior, keeps the weights of the best validation loss, and writes a small checkpoint (the
stage-1 weights with the new heads and the preset's region factors; ``--preset shear_map`` fits
shear and convergence maps on the constant-shear model's features;
``bliss.encoder.checkpoint.export_checkpoint`` format). It is
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
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm import tqdm

from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import (
    CONFIG_KEY,
    export_checkpoint,
    load_encoder,
    write_checksum_sidecar,
)
from bliss.encoder.region_head import RegionHead
from bliss.posterior.regions import RegionFactor

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_shear import compose_preset  # noqa: E402


def region_factors(cfg) -> dict[str, RegionFactor]:  # noqa: ANN001
    """The preset's region factors, by name (entries set to null dropped)."""
    return {
        name: instantiate(spec) for name, spec in cfg.encoder.regions.items() if spec is not None
    }


@torch.no_grad()
def simulated_features(encoder, simulator, keys, n_images: int, seed: int, batch: int = 64):  # noqa: ANN001, ANN201
    """Features (``n f ht wt``) and the truths ``fields/<key>`` of ``n_images`` fresh images."""
    features, truths = [], {key: [] for key in keys}
    for index in tqdm(range(-(-n_images // batch)), desc="features", unit="batch"):
        images = simulator.simulate(batch, seed=seed + index)
        features.append(encoder.tile_features(images))
        for key in keys:
            truths[key].append(images[f"fields/{key}"])
    return torch.cat(features)[:n_images], {k: torch.cat(v)[:n_images] for k, v in truths.items()}


def fit_head(
    region: RegionFactor,
    head: RegionHead,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> dict:
    """Fit ``head`` on (features, truth) pairs; returns its best state and validation loss."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    best = {"val_loss": float("inf"), "step": -1}
    generator = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc=f"{region.key} head", unit="step"):
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


def new_head(encoder, region: RegionFactor, width: int = 64) -> RegionHead:  # noqa: ANN001
    """A fresh head for ``region`` on ``encoder``'s features."""
    tiles = None if region.region_px is None else region.region_px // encoder.tile_slen
    return RegionHead(encoder.features.width, width, region.n_params, tiles, encoder.features.norm)


def main(argv: list[str] | None = None) -> int:
    """Fit the heads and write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the stage-1 checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="shear_constant", help="experiment with the regions")
    parser.add_argument("--n-images", type=int, default=4096)
    parser.add_argument("--val-images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=5_000_000)
    args = parser.parse_args(argv)
    encoder, _ = load_encoder(args.checkpoint)
    cfg = compose_preset(args.preset)
    regions = region_factors(cfg)
    keys = [region.key for region in regions.values()]
    simulator = build_simulator(cfg)
    train = simulated_features(encoder, simulator, keys, args.n_images, args.seed)
    val = simulated_features(encoder, simulator, keys, args.val_images, args.seed + 100_000)
    states, report = {}, {}
    for name, region in regions.items():
        head = new_head(encoder, region)
        best = fit_head(
            region,
            head,
            (train[0], train[1][region.key]),
            (val[0], val[1][region.key]),
            args.steps,
            args.batch,
            args.lr,
            args.seed,
        )
        head.load_state_dict(best["state"])
        with torch.no_grad():
            loc, _ = region.factor._loc_scale(head(val[0]))
        truth = val[1][region.key]
        rmse = float((loc - truth).pow(2).mean().sqrt())
        corr = [
            float(np.corrcoef(loc[..., i].ravel(), truth[..., i].ravel())[0, 1])
            for i in range(truth.shape[-1])
        ]
        print(
            f"{name}: best validation loss {best['val_loss']:.4f} at step {best['step']}; "
            f"rmse {rmse:.4f}, correlation {[round(c, 3) for c in corr]}"
        )
        states[name] = best["state"]
        report[name] = {"val_loss": best["val_loss"], "val_rmse": rmse, "val_corr": corr}
    # the stage-1 weights with the preset's region heads, and its region config
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"region_heads": vars(args) | {"fit": report}}
    export_checkpoint(args.checkpoint, args.out, extra={"stage2": str(record)})
    small = torch.load(args.out, map_location="cpu", weights_only=False)
    weights = {k: v for k, v in small["state_dict"].items() if not k.startswith("region_heads.")}
    for name, state in states.items():
        weights.update({f"region_heads.{name}.{k}": v.half() for k, v in state.items()})
    small["state_dict"] = weights
    small[CONFIG_KEY]["encoder"]["regions"] = OmegaConf.to_container(
        cfg.encoder.regions, resolve=True
    )
    small[CONFIG_KEY]["simulator"] = OmegaConf.to_container(cfg.simulator, resolve=True)
    torch.save(small, args.out)
    write_checksum_sidecar(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
