"""Checkpoints are verified before they are unpickled: zip CRC-32s and SHA-256 sidecars."""

import zipfile
from pathlib import Path

import pytest
import torch

from bliss.encoder.checkpoint import verify_checkpoint_file, write_checksum_sidecar
from bliss.errors import BlissIOError


def _checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, path)
    return path


def _data_offset(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    lengths = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + lengths


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_sound_checkpoint_passes(tmp_path) -> None:
    path = _checkpoint(tmp_path / "a.ckpt")
    verify_checkpoint_file(path)
    write_checksum_sidecar(path)
    assert (tmp_path / "a.ckpt.sha256").read_text().endswith("  a.ckpt\n")
    verify_checkpoint_file(path)


def test_a_flipped_weight_byte_fails_its_crc(tmp_path) -> None:
    path = _checkpoint(tmp_path / "a.ckpt")
    _flip(path, _data_offset(path) + 1000)
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(BlissIOError, match="a.ckpt is damaged .*Bad CRC-32"):
        verify_checkpoint_file(path)


def test_a_sidecar_names_any_change(tmp_path) -> None:
    path = _checkpoint(tmp_path / "a.ckpt")
    write_checksum_sidecar(path)
    _flip(path, _data_offset(path) + 1000)
    with pytest.raises(BlissIOError, match="SHA-256 is .*a.ckpt.sha256 records"):
        verify_checkpoint_file(path)


def test_a_truncated_checkpoint_is_damaged(tmp_path) -> None:
    path = _checkpoint(tmp_path / "a.ckpt")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BlissIOError, match="damaged"):
        verify_checkpoint_file(path)


def test_formats_without_checksums_pass(tmp_path) -> None:
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    verify_checkpoint_file(legacy)
    from torch.utils.serialization import config

    with config.patch({"save.compute_crc32": False}):  # as bliss writes shards
        _checkpoint(tmp_path / "no_crc.ckpt")
    verify_checkpoint_file(tmp_path / "no_crc.ckpt")
