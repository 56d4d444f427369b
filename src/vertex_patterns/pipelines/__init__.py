"""KFP definitions: thin components over the core, the pipelines, and the compile step.

The only area that imports kfp. A user's own pipeline reuses the pieces directly:
`from vertex_patterns.pipelines import replicate_data, spot_training`.
"""

from vertex_patterns.pipelines.cost_report import cost_report
from vertex_patterns.pipelines.data_replication import data_replication
from vertex_patterns.pipelines.dr_drill import dr_drill
from vertex_patterns.pipelines.dr_drill_steps import dr_report, dr_restore
from vertex_patterns.pipelines.fan_out_checkpoints import fan_out_checkpoints
from vertex_patterns.pipelines.health_check import health_check
from vertex_patterns.pipelines.health_incident import health_incident
from vertex_patterns.pipelines.publish_report import publish_report
from vertex_patterns.pipelines.replicate_data import replicate_data
from vertex_patterns.pipelines.spot_train import spot_train
from vertex_patterns.pipelines.spot_training import spot_training
from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints
from vertex_patterns.pipelines.verify_replicas import verify_replicas

__all__ = [
    "cost_report", "data_replication", "dr_drill", "dr_report", "dr_restore", "fan_out_checkpoints",
    "health_check", "health_incident",
    "publish_report", "replicate_data", "spot_train", "spot_training", "verify_checkpoints",
    "verify_replicas",
]
