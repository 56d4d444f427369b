"""The `dr_drill` pipeline: recover training in a backup region and measure RTO and RPO.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.

    dr_restore ──> verify_checkpoints ──> spot_train ──> dr_report
    (newest backup    (the restored          (resume a short   (RTO: start to first
     step -> drill dir)  step, every file)      run there)        resumed step; RPO)
"""

from kfp import dsl

from vertex_patterns.pipelines.dr_drill_steps import dr_report, dr_restore
from vertex_patterns.pipelines.image import IMAGE
from vertex_patterns.pipelines.spot_train import spot_train
from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints

DEFAULT_DRILL_COMMAND = [
    "python", "-m", "vertex_patterns.train", "--workload", "digits", "--run-dir", "{run_dir}",
    "--max-steps", "{max_steps}", "--checkpoint-every-steps", "100", "--seed", "1",
    "--log-every-steps", "1",
]


@dsl.pipeline(name="dr-drill",
              description="Restore the newest checkpoint from a backup region, verify it, "
                          "resume a short run there, and report the measured RTO and RPO.")
def dr_drill(
    project: str,
    backup_region: str,
    primary_checkpoint_dir: str,
    backup_checkpoint_dir: str,
    drill_run_dir: str,
    trainer_image: str = IMAGE,
    train_command: list = DEFAULT_DRILL_COMMAND,
    machine_type: str = "n1-standard-8",
    accelerator: str = "",
    strategy: str = "STANDARD",
    extra_steps: int = 50,
    poll_seconds: float = 15.0,
) -> None:
    """A DR drill.

    Args:
        project: Google Cloud project of the drill's training job.
        backup_region: The region recovered into (where the backup checkpoints are).
        primary_checkpoint_dir: The primary region's checkpoints (read for the RPO only).
        backup_checkpoint_dir: The backup region's replica of them.
        drill_run_dir: A fresh run directory in the backup region.
        trainer_image: The trainer's image.
        train_command: The trainer command with `{run_dir}` and `{max_steps}`.
        machine_type: Machine type of the drill's job.
        accelerator: `TYPE:COUNT`, empty for CPU only.
        strategy: Scheduling of the drill's job (STANDARD: a drill measures recovery, not
            Spot capacity).
        extra_steps: Steps trained past the restored one.
        poll_seconds: How often the launcher polls the drill's job.
    """
    restore = dr_restore(primary_checkpoint_dir=primary_checkpoint_dir,
                         backup_checkpoint_dir=backup_checkpoint_dir,
                         drill_run_dir=drill_run_dir, train_command=train_command,
                         extra_steps=extra_steps)
    restore.set_caching_options(False)
    verify = verify_checkpoints(checkpoint_dir=restore.outputs["checkpoint_dir"],
                                step=restore.outputs["restored_step"])
    verify.set_caching_options(False)
    resume = spot_train(project=project, regions=[backup_region], image=trainer_image,
                        machine_type=machine_type, command=restore.outputs["command"],
                        run_dir_template=drill_run_dir, accelerator=accelerator,
                        strategy=strategy, max_attempts=3, poll_seconds=poll_seconds)
    resume.after(verify)
    resume.set_caching_options(False)
    report = dr_report(plan=restore.outputs["plan"], drill_run_dir=drill_run_dir)
    report.after(resume)
    report.set_caching_options(False)
