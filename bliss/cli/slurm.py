"""Checks of a SLURM job's resources against its config, run before anything is queued.

A job whose resources do not match its Lightning trainer fails only after it has waited in the
queue (Lightning refuses ``trainer.devices=2`` in a job with one task per node), so the
``hydra/launcher=slurm`` presets submit through
:class:`hydra_plugins.bliss_slurm.CheckedSlurmLauncher`, which runs :func:`check_slurm_job` on every
job of the sweep in the submitting process.
"""

from omegaconf import DictConfig

from bliss.errors import BlissConfigError

__all__ = ["check_slurm_job"]

#: modes that run a Lightning trainer, one task per device
TRAINER_MODES = {"train", "predict"}
#: launcher keys that must be positive integers
POSITIVE_KEYS = ("timeout_min", "nodes", "tasks_per_node", "cpus_per_task")


def check_slurm_job(cfg: DictConfig) -> None:
    """Check one job's SLURM resources against its trainer.

    Args:
        cfg: the job's composed config, with ``hydra.launcher`` (``return_hydra_config=True``).

    Raises:
        BlissConfigError: a required key is missing or not positive, or the tasks, nodes and
            GPUs do not match ``trainer.devices``, ``trainer.num_nodes`` and
            ``trainer.accelerator``.
    """
    launcher = cfg.hydra.launcher
    if not launcher.get("partition"):
        raise BlissConfigError(
            "hydra.launcher.partition is not set; pass hydra.launcher.partition=<name> "
            "(`sinfo -s` lists your cluster's partitions)."
        )
    for key in POSITIVE_KEYS:
        value = launcher.get(key)
        if not isinstance(value, int) or value < 1:
            raise BlissConfigError(f"hydra.launcher.{key}={value}; expected an integer >= 1.")
    if not (launcher.get("mem_gb") or launcher.get("mem_per_cpu") or launcher.get("mem_per_gpu")):
        raise BlissConfigError(
            "hydra.launcher.mem_gb is not set (nor mem_per_cpu / mem_per_gpu); expected the "
            "memory per node in GB, e.g. hydra.launcher.mem_gb=32."
        )
    tasks, nodes = launcher.tasks_per_node, launcher.nodes
    gpus = launcher.get("gpus_per_node") or 0
    if cfg.mode not in TRAINER_MODES:
        if tasks != 1 or nodes != 1:
            raise BlissConfigError(
                f"mode={cfg.mode} runs as one process, but hydra.launcher.tasks_per_node={tasks} "
                f"and hydra.launcher.nodes={nodes} would start {tasks * nodes} copies of it; set "
                "both to 1 (split a generation over an array with generate.shard_offset)."
            )
        return
    trainer = cfg.trainer
    devices = trainer.devices
    if isinstance(devices, int) and devices != tasks:
        raise BlissConfigError(
            f"trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}; Lightning "
            "runs one SLURM task per device, so set them equal."
        )
    if trainer.num_nodes != nodes:
        raise BlissConfigError(
            f"trainer.num_nodes={trainer.num_nodes} but hydra.launcher.nodes={nodes}; set them "
            "equal."
        )
    accelerator = str(trainer.accelerator)
    if accelerator in ("gpu", "cuda") and gpus < tasks:
        raise BlissConfigError(
            f"trainer.accelerator={accelerator} with {tasks} tasks per node needs "
            f"hydra.launcher.gpus_per_node >= {tasks}, not {gpus}."
        )
    if accelerator == "cpu" and gpus:
        raise BlissConfigError(
            f"trainer.accelerator=cpu but hydra.launcher.gpus_per_node={gpus}: the GPUs would sit "
            "idle; use hydra/launcher=slurm_cpu or trainer.accelerator=gpu."
        )
