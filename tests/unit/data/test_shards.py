"""Shard generation: manifest, resume, crash safety, determinism and corrupt-file errors."""

import errno
import json

import pytest
import torch

from bliss.data.generate import generate_shards
from bliss.data.shards import (
    MANIFEST_NAME,
    atomic_write_bytes,
    catalog_from_shard,
    load_shard,
    read_manifest,
    shard_path,
)
from bliss.errors import BlissConfigError, BlissIOError
from tests.unit.data.conftest import RECIPE, make_shards


class _Crash(Exception):
    """Stands in for a kill signal."""


def _tmp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def _shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard_*"))}


def _count_calls(monkeypatch, simulator) -> list[int]:
    calls: list[int] = []
    simulate = simulator.simulate

    def counting(n_images, seed):
        calls.append(seed)
        return simulate(n_images, seed=seed)

    monkeypatch.setattr(simulator, "simulate", counting)
    return calls


def test_generate_writes_shards_and_a_manifest(simulator, tmp_path):
    manifest = make_shards(simulator, tmp_path)

    assert manifest == read_manifest(tmp_path)
    assert manifest["n_shards"] == 3 and manifest["n_images"] == 6
    assert manifest["config"] == RECIPE
    expected_files = [shard_path(tmp_path, i).name for i in range(3)]
    assert [s["file"] for s in manifest["shards"]] == expected_files
    assert len({s["seed"] for s in manifest["shards"]}) == 3  # independent streams
    for shard in manifest["shards"]:
        payload = load_shard(tmp_path / shard["file"])
        assert payload["images"].shape == (2, 1, 8, 8)
        assert payload["meta"]["fingerprint"] == manifest["fingerprint"]
        assert payload["meta"]["bands"] == ["r"]
        catalog = catalog_from_shard(payload)
        assert (catalog.batch_size, catalog.n_tiles_h, catalog.n_tiles_w) == (2, 2, 2)
    assert _tmp_files(tmp_path) == []


def test_resume_skips_complete_shards(simulator, tmp_path, monkeypatch):
    make_shards(simulator, tmp_path, n_shards=2)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard_*")}
    calls = _count_calls(monkeypatch, simulator)

    manifest = make_shards(simulator, tmp_path, n_shards=3)

    assert len(calls) == 1  # only shard 2 is new
    assert manifest["n_shards"] == 3
    assert {p: tmp_path.joinpath(p).stat().st_mtime_ns for p in mtimes} == mtimes


def test_a_killed_run_resumes_to_the_same_bytes(simulator, tmp_path, monkeypatch):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    make_shards(simulator, clean)

    def kill_after_first(index):
        raise _Crash(f"killed after shard {index}")

    with pytest.raises(_Crash):
        make_shards(simulator, crashed, on_shard=kill_after_first)
    assert sorted(p.name for p in crashed.glob("shard_*.pt")) == ["shard_000000.pt"]
    assert not (crashed / MANIFEST_NAME).exists()

    calls = _count_calls(monkeypatch, simulator)
    make_shards(simulator, crashed)

    assert len(calls) == 2
    assert _shard_bytes(crashed) == _shard_bytes(clean)
    assert _tmp_files(crashed) == []
    assert read_manifest(crashed)["n_images"] == 6


def test_worker_processes_write_the_same_bytes(simulator, tmp_path):
    make_shards(simulator, tmp_path / "serial")
    make_shards(simulator, tmp_path / "pool", num_workers=2)
    assert _shard_bytes(tmp_path / "pool") == _shard_bytes(tmp_path / "serial")


def test_in_process_generation_keeps_the_torch_thread_count(simulator, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        make_shards(simulator, tmp_path, n_shards=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "shard_000000.pt"

    def half_then_fail(stream):
        stream.write(b"partial")
        raise _Crash("disk full")

    with pytest.raises(_Crash):
        atomic_write_bytes(target, half_then_fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_full_disk_is_an_io_error_and_leaves_no_file(tmp_path, wrapped):
    """torch.save reports ENOSPC as a RuntimeError raised while handling the OSError."""
    target = tmp_path / "shard_000000.pt"

    def fill_the_disk(stream):
        stream.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            if wrapped:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None
            raise

    with pytest.raises(BlissIOError, match="no space left on the device holding"):
        atomic_write_bytes(target, fill_the_disk)
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_pass_through_unchanged(tmp_path):
    def refuse(stream):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        atomic_write_bytes(tmp_path / "x.pt", refuse)


def test_a_truncated_shard_is_an_io_error_naming_the_file(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=1)
    path = shard_path(tmp_path, 0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(BlissIOError, match="shard_000000.pt") as error:
        load_shard(path)
    assert str(path) in str(error.value)


def test_a_file_that_is_not_a_shard_is_an_io_error(tmp_path):
    path = tmp_path / "shard_000000.pt"
    torch.save({"images": torch.zeros(1)}, path)
    with pytest.raises(BlissIOError, match="not a bliss shard"):
        load_shard(path)
    with pytest.raises(BlissIOError, match="does not exist"):
        load_shard(tmp_path / "missing.pt")


def test_a_directory_of_another_config_is_refused(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=1)
    before = _shard_bytes(tmp_path)

    with pytest.raises(BlissIOError, match="fingerprint"):
        make_shards(simulator, tmp_path, n_shards=1, recipe={**RECIPE, "density": 1.0})
    with pytest.raises(BlissIOError, match="fingerprint"):
        make_shards(simulator, tmp_path, n_shards=1, seed=1)  # the seed is part of the recipe
    assert _shard_bytes(tmp_path) == before


def test_a_corrupt_manifest_is_an_io_error(tmp_path):
    with pytest.raises(BlissIOError, match=MANIFEST_NAME):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BlissIOError, match="not valid JSON"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    "key,value",
    [("n_shards", 0), ("images_per_shard", 0), ("shard_offset", -1), ("num_workers", -1)],
)
def test_bad_generate_options_name_the_key(simulator, tmp_path, key, value):
    options = {"seed": 0, "n_shards": 1, "images_per_shard": 1, "recipe": RECIPE, key: value}
    with pytest.raises(BlissConfigError, match=f"generate.{key}"):
        generate_shards(simulator, tmp_path, progress=False, **options)
    assert not any(tmp_path.iterdir())


def test_sidecar_matches_the_shard_meta(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=1, shard_offset=4)
    path = shard_path(tmp_path, 4)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    meta = load_shard(path)["meta"]
    assert sidecar["index"] == meta["index"] == 4
    assert sidecar["seed"] == meta["seed"]
