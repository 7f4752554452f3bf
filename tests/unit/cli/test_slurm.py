"""SLURM presets: checked against the trainer before submission, and the sbatch file they make."""

import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.types import HydraContext
from omegaconf import DictConfig

from bliss.cli.slurm import check_slurm_job
from bliss.errors import BlissConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed",
)

GPU_TRAIN = ["mode=train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]


def _job(overrides: list[str]) -> DictConfig:
    with initialize_config_module("bliss.conf", version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_the_presets_pass_their_own_check() -> None:
    check_slurm_job(_job(GPU_TRAIN))
    check_slurm_job(
        _job(["mode=generate", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=cpu"])
    )
    # two GPUs on each of two nodes
    check_slurm_job(
        _job(
            [
                *GPU_TRAIN,
                "trainer.devices=2",
                "trainer.num_nodes=2",
                "hydra.launcher.tasks_per_node=2",
                "hydra.launcher.gpus_per_node=2",
                "hydra.launcher.nodes=2",
            ]
        )
    )


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["mode=train", "hydra/launcher=slurm"], ["hydra.launcher.partition"]),
        ([*GPU_TRAIN, "hydra.launcher.timeout_min=0"], ["hydra.launcher.timeout_min=0"]),
        ([*GPU_TRAIN, "hydra.launcher.mem_gb=null"], ["hydra.launcher.mem_gb"]),
        ([*GPU_TRAIN, "trainer.devices=2"], ["trainer.devices=2", "tasks_per_node=1"]),
        ([*GPU_TRAIN, "trainer.num_nodes=2"], ["trainer.num_nodes=2", "hydra.launcher.nodes=1"]),
        (
            [*GPU_TRAIN, "trainer.accelerator=gpu", "hydra.launcher.gpus_per_node=0"],
            ["gpus_per_node >= 1"],
        ),
        ([*GPU_TRAIN, "trainer.accelerator=cpu"], ["trainer.accelerator=cpu", "slurm_cpu"]),
        (
            [
                "mode=generate",
                "hydra/launcher=slurm_cpu",
                "hydra.launcher.partition=cpu",
                "hydra.launcher.tasks_per_node=4",
            ],
            ["tasks_per_node=4", "4 copies"],
        ),
    ],
)
def test_bad_resources_are_named(overrides: list[str], names: list[str]) -> None:
    with pytest.raises(BlissConfigError) as info:
        check_slurm_job(_job(overrides))
    for name in names:
        assert name in str(info.value)


def _submit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, overrides: list[str]) -> dict:
    """Run the preset's launcher on a two-job sweep, capturing the sbatch file it would submit."""
    import submitit

    from hydra_plugins.bliss_slurm import CheckedSlurmLauncher

    submitted = {}

    def fake_map_array(executor, function, *args):  # noqa: ANN001, ANN002, ANN202
        submitted["n_jobs"] = len(args[0])
        submitted["sbatch"] = executor._executor._make_submission_file_text("python job.py", "0")
        submitted["requeues"] = executor._executor.max_num_timeout
        submitted["parameters"] = dict(executor._executor.parameters)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    # no SLURM here: submitit looks for `srun` before building its executor
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    with initialize_config_module("bliss.conf", version_base="1.3"):
        config = compose(
            "config",
            overrides=[*overrides, f"hydra.sweep.dir={tmp_path}/sweep"],
            return_hydra_config=True,
        )
        settings = {k: v for k, v in config.hydra.launcher.items() if k != "_target_"}
        launcher = CheckedSlurmLauncher(**settings)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        launcher.setup(hydra_context=context, task_function=lambda cfg: None, config=config)
        # a sweeper hands the launcher every job's full override list
        launcher.launch([[*overrides, "seed=1"], [*overrides, "seed=2"]], initial_job_idx=0)
    assert submitted["n_jobs"] == 2
    return submitted


def test_the_gpu_preset_makes_a_valid_sbatch_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    submitted = _submit(
        monkeypatch,
        tmp_path,
        [*GPU_TRAIN, "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=4"],
    )
    sbatch = submitted["sbatch"]
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --nodes=1",
        "#SBATCH --signal=USR2@",  # submitit's requeue on timeout
    ):
        assert line in sbatch, sbatch
    assert submitted["requeues"] == 3  # a timed-out job is requeued, up to 3 times
    assert submitted["parameters"]["array_parallelism"] == 4  # the job array's %4


def test_a_mismatched_sweep_is_refused_before_submission(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BlissConfigError, match="trainer.devices=2"):
        _submit(monkeypatch, tmp_path, [*GPU_TRAIN, "trainer.devices=2"])


def test_hydra_itself_loads_the_checked_launcher(tmp_path: Path) -> None:
    """`bliss -m hydra/launcher=slurm`: Hydra finds the launcher and it refuses a bad sweep.

    Hydra loads launchers only from the `hydra_plugins` namespace; the tests above build the
    class directly and would not notice a launcher Hydra refuses to load.
    """
    import subprocess
    import sys

    script = Path(sys.executable).parent / "bliss"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bliss.cli.main"]
    result = subprocess.run(
        [*command, "-m", *GPU_TRAIN, "trainer.devices=2", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "hydra_plugins package" not in output, output
    assert "trainer.devices=2 but hydra.launcher.tasks_per_node=1" in output, output
