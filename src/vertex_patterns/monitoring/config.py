"""What the monitoring resources are rendered for: one project, its RPO tier, its budget."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vertex_patterns.errors import ConfigError
from vertex_patterns.health.config import rpo_seconds

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_BILLING = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
_TOPIC = re.compile(r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")

PREFIX = "vertex-patterns"
"""Every display name starts with this; `apply` matches resources by display name."""


@dataclass(kw_only=True, frozen=True)
class MonitoringConfig:
    """The inputs of `render`.

    Raises:
        ConfigError: A malformed project, billing account, topic, tier or amount.
    """

    project: str
    """The Google Cloud project id the training jobs run in."""
    rpo: str = "production"
    """RPO tier (research, production, critical): the checkpoint-staleness window."""
    hang_minutes: int = 30
    """No training progress logged for this long opens the hang alert."""
    utilization_min: float = 0.5
    """Accelerator utilisation (a fraction) below which the low-utilisation alert opens."""
    utilization_minutes: int = 30
    """... when it stays below for this long."""
    attempts_per_hour_max: int = 6
    """Cost anomaly: more job attempts started in an hour than this is a runaway restart loop
    burning accelerator hours."""
    billing_account: str | None = None
    """`XXXXXX-XXXXXX-XXXXXX`: render the budget (none without it)."""
    budget_amount: int = 1000
    """Budget per calendar month, in whole units of `currency`."""
    currency: str = "USD"
    """ISO 4217 code of the billing account's currency."""
    budget_topic: str = "vertex-patterns-budget"
    """Pub/Sub topic (in `project`) the budget notifies at 50/75/90/100%."""
    notification_channels: tuple[str, ...] = ()
    """`projects/P/notificationChannels/ID` that every alert notifies."""

    def __post_init__(self) -> None:
        if not _PROJECT.match(self.project):
            raise ConfigError(f"--project {self.project!r} is not a project id (6-30 lowercase "
                              "letters, digits, hyphens)")
        rpo_seconds(self.rpo)
        if self.billing_account is not None and not _BILLING.match(self.billing_account):
            raise ConfigError(f"--billing-account {self.billing_account!r} must look like "
                              "012345-6789AB-CDEF01")
        if self.budget_amount <= 0:
            raise ConfigError(f"--budget-amount must be > 0, got {self.budget_amount}")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ConfigError(f"--currency {self.currency!r} must be an ISO 4217 code (USD)")
        if not _TOPIC.match(self.budget_topic) or self.budget_topic.startswith("goog"):
            raise ConfigError(f"--budget-topic {self.budget_topic!r} is not a Pub/Sub topic id")
        if self.hang_minutes < 2 or self.utilization_minutes < 1 or \
                self.attempts_per_hour_max < 1:
            raise ConfigError("--hang-minutes must be >= 2, --utilization-minutes and "
                              "--attempts-per-hour-max >= 1")
        if not 0 < self.utilization_min < 1:
            raise ConfigError("--utilization-min is a fraction in (0, 1)")
        prefix = f"projects/{self.project}/notificationChannels/"
        for channel in self.notification_channels:
            if not channel.startswith(prefix) or "/" in channel[len(prefix):]:
                raise ConfigError(f"--notification-channel {channel!r} must be {prefix}ID")
