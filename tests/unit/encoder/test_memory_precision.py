"""Stem activation checkpointing and bfloat16 mixed precision leave the training maths intact."""

import torch

from bliss.encoder.features import FeatureNet
from tests.unit.encoder.test_encoder import _encoder, _random_batch


def _gradients(net: FeatureNet, x: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad()
    (net(x) ** 2).mean().backward()
    return [p.grad.clone() for p in net.parameters()]


def test_checkpointed_stem_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = FeatureNet(3, tile_slen=4, width=16, dilations=(1,), checkpoint_stem=False).train()
    saved = FeatureNet(3, tile_slen=4, width=16, dilations=(1,), checkpoint_stem=True).train()
    saved.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    for a, b in zip(_gradients(plain, x), _gradients(saved, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_checkpointed_stem_keeps_fewer_tensors_for_backward() -> None:
    """Count the bytes autograd saves: the stem's activations must not be among them."""

    def saved_bytes(net: FeatureNet) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.randn(2, 3, 32, 32))
        return total

    torch.manual_seed(0)
    plain = FeatureNet(3, tile_slen=4, width=32, dilations=(1,), checkpoint_stem=False).train()
    saved = FeatureNet(3, tile_slen=4, width=32, dilations=(1,), checkpoint_stem=True).train()
    # the stem (8 channels at 32 x 32) holds 4 of the ~6 large saved tensors
    assert saved_bytes(saved) < 0.6 * saved_bytes(plain)


def test_batch_norm_stem_is_never_recomputed() -> None:
    """Recomputing would update the running statistics twice per step."""
    net = FeatureNet(3, tile_slen=4, width=16, norm="batch", checkpoint_stem=True)
    assert not net.checkpoint_stem


def test_bf16_autocast_keeps_posterior_parameters_float32(tmp_path) -> None:
    """The features may run in bfloat16; the posterior parameters and the loss may not."""
    encoder = _encoder(tmp_path).train()
    batch = _random_batch()
    torch.manual_seed(1)
    full = encoder.nll(batch)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = encoder.nll(batch)
        features = encoder.tile_features(batch)
        b, _, n_h, n_w = features.shape
        params = encoder.head(
            features,
            torch.zeros(b, encoder.context.n_channels, n_h, n_w),
            torch.ones(n_h, n_w, dtype=torch.bool),  # every tile in the current group
        )
    assert params.dtype == torch.float32
    assert mixed.dtype == torch.float32
    # bfloat16 rounds each feature to 2**-8 relative; over hundreds of nats the errors largely
    # cancel (0.08 % measured), so 1 % only catches a broken mixed-precision path
    assert abs(mixed.item() - full.item()) < 0.01 * abs(full.item())
    mixed.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_channels_last_changes_the_layout_not_the_numbers(tmp_path) -> None:
    plain = _encoder(tmp_path).train()
    last = _encoder(tmp_path, "encoder.channels_last=true").train()
    last.load_state_dict(plain.state_dict())
    conv = last.features.net[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = _random_batch()
    features = last.tile_features(batch)
    assert features.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(features, plain.tile_features(batch), rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    loss_plain = plain.nll(batch)
    loss_plain.backward()
    torch.manual_seed(1)
    loss_last = last.nll(batch)
    loss_last.backward()
    torch.testing.assert_close(loss_last, loss_plain, rtol=1e-5, atol=1e-4)
    for a, b in zip(last.parameters(), plain.parameters(), strict=True):
        # the two layouts run different conv kernels (another float32 summation order), whose
        # rounding grows through the backward pass; on AVX-512 CPUs single elements of a conv
        # weight's gradient differ by up to 4e-3 of themselves, 3e-5 absolute. A layout bug
        # (a transposed or misaligned tensor) moves gradients by their own size: 1e-3 of each
        # tensor's largest gradient separates the two by orders of magnitude.
        scale = float(b.grad.abs().max())
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=max(1e-5, 1e-3 * scale))
