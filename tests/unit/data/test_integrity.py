"""Shard checksums, the pre-flight pass, the content's support, and generation's re-validation."""

import json

import pytest
import torch

from bliss.data.integrity import (
    check_shard_content,
    file_crc32,
    shard_problem,
    verify_shards,
)
from bliss.data.shards import load_shard, read_manifest, shard_path
from bliss.errors import BlissIOError, BlissValueError
from tests.unit.data.conftest import make_shards


def _payload() -> dict:
    """One image, 2 x 2 tiles of one slot: a star at tile (0, 0), a galaxy at (1, 1)."""
    n_sources = torch.tensor([[[1, 0], [0, 1]]])
    source_type = torch.zeros(1, 2, 2, 1, 1)
    source_type[0, 1, 1] = 1
    galaxy = torch.zeros(1, 2, 2, 1, 1)
    galaxy[0, 1, 1] = 0.5
    fluxes = n_sources[..., None, None] * torch.ones(1, 2, 2, 1, 2)  # zero padding elsewhere
    return {
        "images": torch.ones(1, 2, 8, 8),
        "background": torch.ones(1, 2),
        "psf_fwhm_arcsec": torch.ones(1, 2),
        "catalog/n_sources": n_sources,
        "catalog/locs": torch.full((1, 2, 2, 1, 2), 0.5),
        "catalog/fluxes": fluxes,
        "catalog/source_type": source_type,
        "catalog/disk_q": galaxy.clone(),
        "catalog/disk_hlr_arcsec": galaxy.clone(),
    }


def test_a_sound_payload_passes_and_padding_is_not_checked() -> None:
    payload = _payload()
    # zero padding in empty tiles and zero shapes for the star are not sources or galaxies
    assert payload["catalog/fluxes"][0, 0, 1].sum() == 0
    check_shard_content(payload, "ok.pt")


@pytest.mark.parametrize(
    ("key", "index", "value", "message"),
    [
        ("images", (0, 0, 3, 3), float("nan"), "`images` values are not finite"),
        ("background", (0, 1), 0.0, "`background` values are not finite or not positive"),
        ("catalog/fluxes", (0, 1, 1, 0, 0), 0.0, r"`fluxes` values .* outside \(0, inf\)"),
        ("catalog/fluxes", (0, 0, 0, 0, 1), -2.0, "`fluxes`"),
        ("catalog/disk_q", (0, 1, 1, 0, 0), 1.5, r"`disk_q` values of its 1 galaxies .*\(0, 1\]"),
        ("catalog/disk_q", (0, 1, 1, 0, 0), 0.0, "`disk_q`"),
        ("catalog/locs", (0, 0, 0, 0, 0), float("inf"), "`locs`"),
    ],
)
def test_values_outside_the_support_are_refused(key, index, value, message) -> None:
    payload = _payload()
    payload[key][index] = value
    with pytest.raises(BlissValueError, match=message) as info:
        check_shard_content(payload, "shard_000007.pt")
    assert "shard_000007.pt" in str(info.value)


def test_q_of_one_is_inside_the_support() -> None:
    payload = _payload()
    payload["catalog/disk_q"][0, 1, 1] = 1.0  # the prior draws [q_min, 1]
    check_shard_content(payload, "ok.pt")


def test_generated_shards_record_size_and_checksum(simulator, tmp_path) -> None:
    manifest = make_shards(simulator, tmp_path)
    for entry in manifest["shards"]:
        path = tmp_path / entry["file"]
        assert entry["bytes"] == path.stat().st_size
        assert entry["crc32"] == file_crc32(path)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert (sidecar["bytes"], sidecar["crc32"]) == (entry["bytes"], entry["crc32"])
    checked = verify_shards(tmp_path, manifest["shards"])
    assert checked["n_shards"] == 3 and checked["unverified"] == 0


def test_a_flipped_byte_is_found_by_the_checksum_and_on_load(simulator, tmp_path) -> None:
    manifest = make_shards(simulator, tmp_path)
    path = shard_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    entry = manifest["shards"][1]

    assert "its bytes changed" in shard_problem(path, entry)
    assert shard_problem(path, entry, checksum=False) is None  # the size is unchanged
    with pytest.raises(BlissIOError, match=r"1 shard\(s\) .* shard_000001\.pt \(CRC-32"):
        verify_shards(tmp_path, manifest["shards"])
    verify_shards(tmp_path, manifest["shards"], checksums=False)
    with pytest.raises(BlissIOError, match="damaged"):
        load_shard(path, entry)


def test_missing_and_truncated_shards_are_listed_together(simulator, tmp_path) -> None:
    manifest = make_shards(simulator, tmp_path)
    shard_path(tmp_path, 0).unlink()
    with open(shard_path(tmp_path, 2), "r+b") as stream:
        stream.truncate(100)
    with pytest.raises(BlissIOError) as info:
        verify_shards(tmp_path, manifest["shards"], checksums=False)
    assert "2 shard(s)" in str(info.value)
    assert "shard_000000.pt (missing)" in str(info.value)
    assert "shard_000002.pt (100 bytes" in str(info.value)


def test_generate_regenerates_damaged_shards_and_keeps_the_others(
    simulator, tmp_path, caplog
) -> None:
    make_shards(simulator, tmp_path)
    before = {i: shard_path(tmp_path, i).read_bytes() for i in range(3)}
    mtime = shard_path(tmp_path, 0).stat().st_mtime_ns
    data = bytearray(before[1])
    data[-200] ^= 0xFF
    shard_path(tmp_path, 1).write_bytes(bytes(data))
    with open(shard_path(tmp_path, 2), "r+b") as stream:
        stream.truncate(1000)

    with caplog.at_level("WARNING", logger="bliss.data.generate"):
        manifest = make_shards(simulator, tmp_path)

    assert {i: shard_path(tmp_path, i).read_bytes() for i in range(3)} == before
    assert shard_path(tmp_path, 0).stat().st_mtime_ns == mtime  # the sound one was kept
    assert sum("is damaged" in message for message in caplog.messages) == 2
    assert manifest == read_manifest(tmp_path)
    verify_shards(tmp_path, manifest["shards"])


def test_a_simulator_that_writes_nan_is_stopped_before_the_file(simulator, tmp_path, monkeypatch):
    simulate = simulator.simulate

    def broken(n_images, seed):
        batch = simulate(n_images, seed=seed)
        batch["images"][0, 0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(simulator, "simulate", broken)
    with pytest.raises(BlissValueError, match="shard_000000.pt: 1 of .* `images` values"):
        make_shards(simulator, tmp_path, n_shards=1)
    assert not list(tmp_path.glob("shard_*"))
