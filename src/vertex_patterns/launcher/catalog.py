"""What Vertex AI custom training accepts: regions, machine types and which accelerators (and
how many) each machine type takes.

The tables follow Vertex AI's "Configure compute resources for custom training" and "Locations"
pages for the common families (N1, N2, E2, C2, A2, A3, G2). They are checked before any API call
so that an impossible job is a one-line error instead of a 400 after minutes of queueing; a
machine type outside these families is refused rather than guessed at.
"""

from __future__ import annotations

import re

from vertex_patterns.errors import ConfigError

REGIONS = (
    "us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1", "us-west2",
    "us-west3", "us-west4", "northamerica-northeast1", "northamerica-northeast2",
    "southamerica-east1", "southamerica-west1", "europe-central2", "europe-north1",
    "europe-southwest1", "europe-west1", "europe-west2", "europe-west3", "europe-west4",
    "europe-west6", "europe-west8", "europe-west9", "europe-west12", "me-central1",
    "me-central2", "me-west1", "asia-east1", "asia-east2", "asia-northeast1",
    "asia-northeast2", "asia-northeast3", "asia-south1", "asia-southeast1", "asia-southeast2",
    "australia-southeast1", "australia-southeast2", "africa-south1",
)
"""Regions where Vertex AI runs custom training jobs."""

# Short names users type -> the AcceleratorType enum name Vertex AI takes.
ACCELERATOR_ALIASES = {
    "T4": "NVIDIA_TESLA_T4", "V100": "NVIDIA_TESLA_V100", "P100": "NVIDIA_TESLA_P100",
    "P4": "NVIDIA_TESLA_P4", "A100": "NVIDIA_TESLA_A100", "A100-80GB": "NVIDIA_A100_80GB",
    "L4": "NVIDIA_L4", "H100": "NVIDIA_H100_80GB", "H100-MEGA": "NVIDIA_H100_MEGA_80GB",
    "H200": "NVIDIA_H200_141GB",
}

# N1 takes the older GPUs, attached in these counts.
_N1_ACCELERATORS = {
    "NVIDIA_TESLA_T4": (1, 2, 4),
    "NVIDIA_TESLA_V100": (1, 2, 4, 8),
    "NVIDIA_TESLA_P100": (1, 2, 4),
    "NVIDIA_TESLA_P4": (1, 2, 4),
}
# G2: vCPUs -> the number of L4s the machine type comes with.
_G2_L4 = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}

_N1 = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")
_CPU_ONLY = re.compile(r"^(n2|n2d|e2|c2|c2d|m1)-(standard|highmem|highcpu|megamem|ultramem)"
                       r"-(\d+)$")
_A2 = re.compile(r"^a2-(highgpu|megagpu|ultragpu)-(\d+)g$")
_A3 = re.compile(r"^a3-(highgpu|megagpu|ultragpu)-(\d+)g$")
_G2 = re.compile(r"^g2-standard-(\d+)$")


def normalize_accelerator(name: str) -> str:
    """The AcceleratorType enum name for `name` (an alias such as ``T4`` or the enum name).

    Raises:
        ConfigError: An accelerator Vertex AI custom training does not offer.
    """
    upper = name.strip().upper()
    if upper in ACCELERATOR_ALIASES:
        return ACCELERATOR_ALIASES[upper]
    if upper in ACCELERATOR_ALIASES.values():
        return upper
    raise ConfigError(f"unknown accelerator {name!r}; use one of "
                      f"{', '.join(ACCELERATOR_ALIASES)} (or their NVIDIA_* names)")


def allowed_accelerators(machine_type: str) -> dict[str, tuple[int, ...]]:
    """Accelerator type -> the counts `machine_type` takes ({} for CPU-only machines).

    Raises:
        ConfigError: A machine type outside the known families.
    """
    if _N1.match(machine_type):
        return dict(_N1_ACCELERATORS)
    if _CPU_ONLY.match(machine_type):
        return {}
    match = _A2.match(machine_type)
    if match:
        kind, gpus = match.group(1), int(match.group(2))
        valid = {"highgpu": (1, 2, 4, 8), "megagpu": (16,), "ultragpu": (1, 2, 4, 8)}[kind]
        if gpus in valid:
            return {"NVIDIA_A100_80GB" if kind == "ultragpu" else "NVIDIA_TESLA_A100": (gpus,)}
    match = _A3.match(machine_type)
    if match:
        kind, gpus = match.group(1), int(match.group(2))
        valid = {"highgpu": (1, 2, 4, 8), "megagpu": (8,), "ultragpu": (8,)}[kind]
        if gpus in valid:
            return {{"highgpu": "NVIDIA_H100_80GB", "megagpu": "NVIDIA_H100_MEGA_80GB",
                     "ultragpu": "NVIDIA_H200_141GB"}[kind]: (gpus,)}
    match = _G2.match(machine_type)
    if match and int(match.group(1)) in _G2_L4:
        return {"NVIDIA_L4": (_G2_L4[int(match.group(1))],)}
    raise ConfigError(f"unknown machine type {machine_type!r}: expected an n1/n2/e2/c2/a2/a3/g2 "
                      "type such as n1-standard-8, a2-highgpu-1g or g2-standard-8")


def requires_accelerator(machine_type: str) -> bool:
    """True for machine types that come with GPUs attached (A2, A3, G2)."""
    return bool(_A2.match(machine_type) or _A3.match(machine_type) or _G2.match(machine_type))


def check_machine(machine_type: str, accelerator: str | None, count: int) -> None:
    """Checks that `machine_type` takes `count` of `accelerator` (None: no accelerator).

    Raises:
        ConfigError: The pair is impossible; the message says what the machine takes.
    """
    allowed = allowed_accelerators(machine_type)
    if accelerator is None:
        if requires_accelerator(machine_type):
            ((kind, counts),) = allowed.items()
            raise ConfigError(f"machine type {machine_type} comes with GPUs: add "
                              f"--accelerator {kind}:{counts[0]}")
        return
    if accelerator not in allowed:
        offer = ", ".join(sorted(allowed)) or "no accelerators"
        raise ConfigError(f"machine type {machine_type} cannot take {accelerator}; "
                          f"it takes {offer}")
    if count not in allowed[accelerator]:
        takes = ", ".join(str(c) for c in allowed[accelerator])
        raise ConfigError(f"machine type {machine_type} takes {takes} x {accelerator}, "
                          f"not {count}")


def check_region(region: str) -> None:
    """Raises ConfigError for a region where Vertex AI does not run custom training."""
    if region not in REGIONS:
        close = [r for r in REGIONS if r.split("-")[0] == region.split("-")[0]]
        hint = f" (did you mean one of {', '.join(close[:6])}?)" if close else ""
        raise ConfigError(f"unknown Vertex AI region {region!r}{hint}")
