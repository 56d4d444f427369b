"""What a machine type is made of: vCPUs, memory, and the memory of each accelerator.

The launcher's catalog (`vertex_patterns.launcher.catalog`) says which machine types and
accelerators Vertex AI accepts; this module adds the sizes that pricing (resource-based for
N1/N2/E2) and right-sizing (does the workload fit?) need. Figures follow Compute Engine's
machine family pages (general-purpose and accelerator-optimized).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vertex_patterns.errors import ConfigError
from vertex_patterns.launcher.catalog import allowed_accelerators, check_machine

# GB of memory per vCPU of the resource-priced families.
_MEMORY_PER_VCPU = {
    "n1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9},
    "n2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "e2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
}
_RESOURCE_PRICED = re.compile(r"^(n1|n2|e2)-(standard|highmem|highcpu)-(\d+)$")

# Accelerator-optimized machine types: (vCPUs, memory GB); the GPUs come from the launcher.
_ACCELERATOR_OPTIMIZED = {
    "a2-highgpu-1g": (12, 85), "a2-highgpu-2g": (24, 170), "a2-highgpu-4g": (48, 340),
    "a2-highgpu-8g": (96, 680), "a2-megagpu-16g": (96, 1360),
    "a2-ultragpu-1g": (12, 170), "a2-ultragpu-2g": (24, 340), "a2-ultragpu-4g": (48, 680),
    "a2-ultragpu-8g": (96, 1360),
    "a3-highgpu-1g": (26, 234), "a3-highgpu-2g": (52, 468), "a3-highgpu-4g": (104, 936),
    "a3-highgpu-8g": (208, 1872), "a3-megagpu-8g": (208, 1872), "a3-ultragpu-8g": (224, 2952),
    "g2-standard-4": (4, 16), "g2-standard-8": (8, 32), "g2-standard-12": (12, 48),
    "g2-standard-16": (16, 64), "g2-standard-24": (24, 96), "g2-standard-32": (32, 128),
    "g2-standard-48": (48, 192), "g2-standard-96": (96, 384),
}

GPU_MEMORY_GB = {
    "NVIDIA_TESLA_T4": 16, "NVIDIA_TESLA_V100": 16, "NVIDIA_TESLA_P100": 16,
    "NVIDIA_TESLA_P4": 8, "NVIDIA_TESLA_A100": 40, "NVIDIA_A100_80GB": 80, "NVIDIA_L4": 24,
    "NVIDIA_H100_80GB": 80, "NVIDIA_H100_MEGA_80GB": 80, "NVIDIA_H200_141GB": 141,
}
"""Memory of one accelerator, GB (NVIDIA data sheets)."""

GPU_TFLOPS = {
    "NVIDIA_TESLA_P4": 5.5, "NVIDIA_TESLA_P100": 18.7, "NVIDIA_TESLA_T4": 65.0,
    "NVIDIA_L4": 121.0, "NVIDIA_TESLA_V100": 125.0, "NVIDIA_TESLA_A100": 312.0,
    "NVIDIA_A100_80GB": 312.0, "NVIDIA_H100_80GB": 989.0, "NVIDIA_H100_MEGA_80GB": 989.0,
    "NVIDIA_H200_141GB": 989.0,
}
"""Peak dense FP16/BF16 tensor TFLOPS of one accelerator (NVIDIA data sheets; P4, P100: FP16
without tensor cores). Right-sizing scales step time by these ratios, a first-order guess."""


@dataclass(frozen=True)
class MachineShape:
    """One machine configuration: a machine type and what is attached to it.

    Attributes:
        machine_type: E.g. ``n1-standard-8``.
        vcpus: Virtual CPUs.
        memory_gb: Host memory, GB.
        accelerator: AcceleratorType enum name (None: CPU only).
        accelerator_count: How many.
        family: ``n1``, ``n2``, ``e2`` (resource-priced) or ``accelerator_optimized``.
    """

    machine_type: str
    vcpus: int
    memory_gb: float
    accelerator: str | None
    accelerator_count: int
    family: str

    @property
    def gpu_memory_gb(self) -> float:
        """Memory of one attached accelerator (0 without)."""
        return float(GPU_MEMORY_GB.get(self.accelerator or "", 0))

    @property
    def label(self) -> str:
        """``n1-standard-8 + 1 x NVIDIA_TESLA_T4``."""
        if self.accelerator is None or self.family == "accelerator_optimized":
            return self.machine_type
        return f"{self.machine_type} + {self.accelerator_count} x {self.accelerator}"


def machine_shape(machine_type: str, accelerator: str | None = None,
                  count: int = 0) -> MachineShape:
    """The shape of `machine_type` with `count` x `accelerator` (checked like the launcher does).

    For A2, A3 and G2 the accelerator may be omitted: it comes with the machine type.

    Raises:
        ConfigError: An unknown machine type, an impossible pair, or a type without sizes here.
    """
    if accelerator is None and machine_type in _ACCELERATOR_OPTIMIZED:
        ((accelerator, counts),) = allowed_accelerators(machine_type).items()
        count = counts[0]
    check_machine(machine_type, accelerator, count)
    match = _RESOURCE_PRICED.match(machine_type)
    if match:
        family, kind, vcpus = match.group(1), match.group(2), int(match.group(3))
        return MachineShape(machine_type=machine_type, vcpus=vcpus,
                            memory_gb=vcpus * _MEMORY_PER_VCPU[family][kind],
                            accelerator=accelerator, accelerator_count=count if accelerator
                            else 0, family=family)
    if machine_type in _ACCELERATOR_OPTIMIZED:
        vcpus, memory = _ACCELERATOR_OPTIMIZED[machine_type]
        return MachineShape(machine_type=machine_type, vcpus=vcpus, memory_gb=float(memory),
                            accelerator=accelerator, accelerator_count=count,
                            family="accelerator_optimized")
    raise ConfigError(f"no sizes known for machine type {machine_type!r}: cost analysis covers "
                      "n1/n2/e2 standard, highmem, highcpu and the a2/a3/g2 types")


def gpu_candidates() -> list[MachineShape]:
    """Every GPU configuration right-sizing considers: N1 with each of its GPUs and counts
    (on an n1-standard with 8 vCPUs per GPU, at least 8), and every A2, A3 and G2 type."""
    out = []
    for gpu, counts in allowed_accelerators("n1-standard-8").items():
        for n in counts:
            vcpus = max(8, min(8 * n, 64))
            out.append(machine_shape(f"n1-standard-{vcpus}", gpu, n))
    out += [machine_shape(m) for m in _ACCELERATOR_OPTIMIZED]
    return out
