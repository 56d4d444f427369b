"""What to launch: the job spec and the launch policy, validated before any API call.

Every check a user can fail runs in `__post_init__` and raises `ConfigError` (one line, exit 2
in the CLI), so an impossible job never reaches Vertex AI: unknown regions, machine types that
cannot take the accelerator, bad durations, labels, disks, networks or key names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vertex_patterns.errors import ConfigError
from vertex_patterns.launcher.catalog import check_machine, check_region, normalize_accelerator

STRATEGIES = ("SPOT", "STANDARD", "FLEX_START")
"""Scheduling strategies the launcher uses (SPOT by default)."""
FAILOVER_POLICIES = ("EAGER_NEXT_REGION", "FAILOVER")
"""Region recovery strategies, named as SkyPilot names them."""
BOOT_DISK_TYPES = ("pd-ssd", "pd-standard", "hyperdisk-balanced")

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_NETWORK = re.compile(r"^projects/[^/]+/global/networks/[^/]+$")
_KMS_KEY = re.compile(r"^projects/[^/]+/locations/([^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+$")
_SERVICE_ACCOUNT = re.compile(r"^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def parse_duration(text: str | int | float, what: str = "duration") -> int:
    """Seconds in `text`: ``3600s``, ``1h``, ``1h30m``, ``90m``, or a bare number of seconds.

    Raises:
        ConfigError: Not a positive duration.
    """
    if isinstance(text, (int, float)):
        seconds = int(text)
    else:
        value = text.strip().lower()
        if value.isdigit():
            seconds = int(value)
        else:
            match = _DURATION.match(value)
            if not value or not match:
                raise ConfigError(f"{what}: {text!r} is not a duration (e.g. 3600s, 1h, 1h30m)")
            h, m, s = (int(g) if g else 0 for g in match.groups())
            seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise ConfigError(f"{what} must be positive, got {text!r}")
    return seconds


def check_service_account(email: str) -> None:
    """Raises ConfigError unless `email` is a service account's."""
    if not _SERVICE_ACCOUNT.match(email):
        raise ConfigError(f"service account {email!r} is not a service account email "
                          "(NAME@PROJECT.iam.gserviceaccount.com)")


def check_network(network: str) -> None:
    """Raises ConfigError unless `network` is a VPC network's full name."""
    if not _NETWORK.match(network):
        raise ConfigError(f"network {network!r}: expected projects/NUMBER/global/networks/NAME")


def check_label(key: str, value: str) -> None:
    """Raises ConfigError unless `key=value` is a valid Google Cloud label."""
    if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
        raise ConfigError(f"label {key}={value}: keys start with a lowercase letter; "
                          "keys and values use a-z, 0-9, _ and -, at most 63 characters")


def check_kms_key(key: str, location: str) -> None:
    """Raises ConfigError unless `key` is a Cloud KMS key name in `location` (Vertex AI needs
    the key in the resource's region; ``{region}`` for jobs that move between regions)."""
    match = _KMS_KEY.match(key)
    if not match:
        raise ConfigError(f"encryption key {key!r}: expected projects/P/locations/"
                          f"{location}/keyRings/R/cryptoKeys/K")
    if match.group(1) != location:
        raise ConfigError(f"encryption key location must be {location}: Vertex AI needs the key "
                          "in the resource's region")


def parse_accelerator(text: str) -> tuple[str, int]:
    """``TYPE:COUNT`` (``T4:1``, ``NVIDIA_L4:1``) -> (enum name, count); COUNT defaults to 1.

    Raises:
        ConfigError: Unknown type or a count that is not a positive integer.
    """
    kind, _, count = text.partition(":")
    if count and not count.isdigit():
        raise ConfigError(f"--accelerator {text!r}: COUNT must be a positive integer")
    n = int(count) if count else 1
    if n < 1:
        raise ConfigError(f"--accelerator {text!r}: COUNT must be at least 1")
    return normalize_accelerator(kind), n


def _check_image(image: str) -> None:
    """Only ``{region}`` may be filled in: anything else would reach the registry verbatim."""
    rest = image.replace("{region}", "")
    placeholder = _PLACEHOLDER.search(rest)
    if placeholder or "{" in rest or "}" in rest:
        found = placeholder.group(0) if placeholder else "an unmatched brace"
        raise ConfigError(f"--image {image!r}: only {{region}} may be filled in, found {found}")


@dataclass(kw_only=True, frozen=True)
class JobSpec:
    """One CustomJob's worth of configuration, the same in every region it is tried in."""

    display_name: str
    """Job name prefix; each attempt is ``<display_name>-<region>-a<N>``."""
    image: str
    """Container image URI; ``{region}`` is filled in per region, so that a job that fails
    over pulls from its own region's registry (``{region}-docker.pkg.dev/...``)."""
    command: tuple[str, ...]
    """Container command and args; ``{region}`` and ``{run_dir}`` are filled in per region."""
    machine_type: str
    """E.g. ``n1-standard-8``, ``a2-highgpu-1g``, ``g2-standard-8``."""
    accelerator_type: str | None = None
    """AcceleratorType enum name or alias (``T4``), None for CPU only."""
    accelerator_count: int = 0
    """Accelerators per replica (set to 1 when a type is given without a count)."""
    replica_count: int = 1
    """Replicas in all: the primary in pool 0, the rest in pool 1 (as Vertex AI requires)."""
    env: tuple[tuple[str, str], ...] = ()
    """Container environment variables."""
    boot_disk_type: str = "pd-ssd"
    """Boot disk type."""
    boot_disk_size_gb: int = 100
    """Boot disk size (100 - 64000 GB)."""
    strategy: str = "SPOT"
    """SPOT, STANDARD or FLEX_START."""
    max_wait_duration_s: int | None = None
    """FLEX_START only: how long to wait for capacity."""
    timeout_s: int | None = None
    """Maximum run time of one job."""
    restart_job_on_worker_restart: bool = False
    """Restart every replica when one restarts (for collective jobs)."""
    service_account: str | None = None
    """Service account email the job runs as."""
    network: str | None = None
    """VPC: ``projects/NUMBER/global/networks/NAME``."""
    reserved_ip_ranges: tuple[str, ...] = ()
    """Reserved IP range names in `network`."""
    encryption_spec_key_name: str | None = None
    """CMEK key; its location must be the job's region (``{region}`` is filled in)."""
    labels: tuple[tuple[str, str], ...] = ()
    """Job labels."""

    def __post_init__(self) -> None:
        if not self.display_name.strip():
            raise ConfigError("display name must not be empty")
        if not self.image.strip():
            raise ConfigError("--image must not be empty")
        _check_image(self.image)
        if not self.command:
            raise ConfigError("no command: give it after `--`, e.g. -- python -m trainer")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        accelerator = self.accelerator_type
        if accelerator is not None:
            accelerator = normalize_accelerator(accelerator)
            object.__setattr__(self, "accelerator_type", accelerator)
            if self.accelerator_count < 1:
                object.__setattr__(self, "accelerator_count", 1)
        elif self.accelerator_count:
            raise ConfigError("accelerator count given without an accelerator type")
        check_machine(self.machine_type, accelerator, self.accelerator_count)
        if self.replica_count < 1:
            raise ConfigError(f"--replica-count must be at least 1, got {self.replica_count}")
        if self.boot_disk_type not in BOOT_DISK_TYPES:
            raise ConfigError(f"boot disk type {self.boot_disk_type!r}: use one of "
                              f"{', '.join(BOOT_DISK_TYPES)}")
        if not 100 <= self.boot_disk_size_gb <= 64000:
            raise ConfigError(f"boot disk size must be 100-64000 GB, got {self.boot_disk_size_gb}")
        if self.max_wait_duration_s is not None and self.strategy != "FLEX_START":
            raise ConfigError("max wait duration applies to --strategy flex-start only")
        for what, seconds in (("timeout", self.timeout_s),
                              ("max wait duration", self.max_wait_duration_s)):
            if seconds is not None and seconds <= 0:
                raise ConfigError(f"{what} must be positive, got {seconds}")
        self._check_access()
        for key, value in self.labels:
            check_label(key, value)
        for name, _ in self.env:
            if not name or "=" in name:
                raise ConfigError(f"environment variable name {name!r} is not valid")

    def image_uri(self, region: str) -> str:
        """The image the job in `region` pulls: `image` with ``{region}`` filled in."""
        return self.image.replace("{region}", region)

    def _check_access(self) -> None:
        if self.service_account is not None:
            check_service_account(self.service_account)
        if self.network is not None:
            check_network(self.network)
        if self.reserved_ip_ranges and self.network is None:
            raise ConfigError("reserved IP ranges need a network")
        if self.encryption_spec_key_name is not None:
            check_kms_key(self.encryption_spec_key_name, "{region}")


@dataclass(kw_only=True, frozen=True)
class LaunchPolicy:
    """Where to try, how often, and what to do with each outcome."""

    project: str
    """Google Cloud project ID."""
    regions: tuple[str, ...]
    """Regions in order of preference."""
    run_dir_template: str
    """Run directory per region, e.g. ``gs://bucket-{region}/runs/NAME``."""
    failover: str = "EAGER_NEXT_REGION"
    """EAGER_NEXT_REGION: next region on any capacity failure. FAILOVER: the same region
    again first (`retries_per_region` times), then the next."""
    max_attempts: int = 10
    """Jobs created in all, over all regions."""
    retries_per_region: int = 1
    """FAILOVER: extra tries in a region after a capacity failure before moving on."""
    spot_preemption_budget: int | None = 3
    """After this many preempted attempts, fall back from SPOT to STANDARD (None: never)."""
    retry_exit_codes: tuple[int, ...] = ()
    """User exit codes worth retrying in place; any other non-zero exit fails fast."""
    hang_retries: int = 2
    """Hung attempts (trainer exit 4) retried in place, in the same region, before failing."""
    replica_flag: str | None = "--replica"
    """Flag appended per other region with its checkpoint directory (None: append nothing)."""
    poll_seconds: float = 15.0
    """How often a running job's state is read."""
    regions_checked: bool = field(default=True, repr=False)
    """Validate regions against the catalog (tests of unknown regions turn this off)."""

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", self.project):
            raise ConfigError(f"--project {self.project!r} is not a project ID")
        if not self.regions:
            raise ConfigError("--regions: give at least one region")
        if len(set(self.regions)) != len(self.regions):
            raise ConfigError(f"--regions lists a region twice: {','.join(self.regions)}")
        if self.regions_checked:
            for region in self.regions:
                check_region(region)
        if "{region}" not in self.run_dir_template and len(self.regions) > 1:
            raise ConfigError("--run-dir-template must contain {region} so that each region "
                              "writes to its own bucket, e.g. gs://bucket-{region}/runs/NAME")
        try:
            self.run_dir(self.regions[0])
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"--run-dir-template: only {{region}} may be filled in ({exc})"
                              ) from exc
        if self.failover not in FAILOVER_POLICIES:
            raise ConfigError(f"failover {self.failover!r}: use one of "
                              f"{', '.join(FAILOVER_POLICIES)}")
        if self.hang_retries < 0:
            raise ConfigError(f"hang_retries must be >= 0, got {self.hang_retries}")
        if self.max_attempts < 1 or self.retries_per_region < 0:
            raise ConfigError("--max-attempts must be >= 1 and retries per region >= 0")
        if self.spot_preemption_budget is not None and self.spot_preemption_budget < 0:
            raise ConfigError("the preemption budget must be >= 0")
        if any(code <= 0 or code > 255 for code in self.retry_exit_codes):
            raise ConfigError("--retry-exit-codes must be between 1 and 255")
        if self.poll_seconds <= 0:
            raise ConfigError("--poll-seconds must be positive")

    def run_dir(self, region: str) -> str:
        """The run directory of `region`."""
        return self.run_dir_template.format(region=region).rstrip("/")

    def checkpoint_dir(self, region: str) -> str:
        """Where the job in `region` writes checkpoints (Vertex AI's AIP_CHECKPOINT_DIR)."""
        return f"{self.run_dir(region)}/checkpoints"
