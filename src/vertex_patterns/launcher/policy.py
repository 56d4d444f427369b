"""Which region and strategy the next attempt uses, given how the previous ones ended.

Region recovery strategies are named as SkyPilot names its spot recovery strategies:

- `EagerNextRegion` (EAGER_NEXT_REGION): any capacity failure moves on to the next region at
  once. A region that stocked out or refused quota is dropped; one that preempted a running job
  had capacity and stays in the rotation, behind the others.
- `Failover` (FAILOVER): the same region is tried again first, `retries_per_region` times in a
  row, and then dropped (stockout, quota) or rotated behind the others (preemption, internal).

On top of either, `RegionPlanner` applies what does not depend on the strategy: stop on success
or a cancel; fail fast on a user error unless its exit code is one the user listed (then retry
in place); stop on an unhealthy run (trainer exit 3), retry a hung one (exit 4) in place up
to `hang_retries` times; fall back from SPOT to STANDARD once the preemption budget is spent
(regions dropped for Spot stockouts come back, Standard capacity is separate); stop after
`max_attempts` jobs or when no region is left, with each region's last reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vertex_patterns.launcher.outcome import Classified, Outcome
from vertex_patterns.launcher.spec import LaunchPolicy


@dataclass
class PlannerState:
    """What the planner knows: the rotation of regions still open and each one's history."""

    rotation: list[str]
    """Regions still open, the next one to try first."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Region -> why it was dropped."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Region -> its last failure (outcome: error)."""
    consecutive: int = 0
    """Attempts in a row in the region at the head of the rotation."""


class RecoveryStrategy(Protocol):
    """Moves the rotation after a capacity or internal failure in `region`."""

    def after_failure(self, state: PlannerState, region: str, outcome: Outcome) -> None:
        """Updates `state.rotation` (its head is the next region to try)."""
        ...


def _drop_or_rotate(state: PlannerState, region: str, outcome: Outcome) -> None:
    state.rotation.remove(region)
    state.consecutive = 0
    if outcome in (Outcome.STOCKOUT, Outcome.QUOTA):
        state.dropped[region] = state.reasons[region]
    else:  # it had capacity (preempted) or hit a transient fault: try it again later
        state.rotation.append(region)


class EagerNextRegion:
    """EAGER_NEXT_REGION: move to the next region on any capacity failure."""

    def after_failure(self, state: PlannerState, region: str, outcome: Outcome) -> None:
        """Drops or rotates `region` at once."""
        _drop_or_rotate(state, region, outcome)


class Failover:
    """FAILOVER: retry the same region `retries_per_region` times, then move on."""

    def __init__(self, retries_per_region: int) -> None:
        self.retries_per_region = retries_per_region

    def after_failure(self, state: PlannerState, region: str, outcome: Outcome) -> None:
        """Keeps `region` at the head until its consecutive retries are spent."""
        if state.consecutive <= self.retries_per_region:
            return
        _drop_or_rotate(state, region, outcome)


def recovery_strategy(policy: LaunchPolicy) -> RecoveryStrategy:
    """The strategy `policy.failover` names."""
    if policy.failover == "FAILOVER":
        return Failover(policy.retries_per_region)
    return EagerNextRegion()


@dataclass(frozen=True)
class Next:
    """Where the next attempt runs."""

    region: str
    strategy: str


class RegionPlanner:
    """Feeds attempt outcomes in, hands the next region and strategy out, or says why it stopped.

    Args:
        policy: Regions, failover strategy and budgets.
        strategy: The job spec's scheduling strategy (the first attempts use it).
    """

    def __init__(self, policy: LaunchPolicy, strategy: str) -> None:
        self.policy = policy
        self.strategy = strategy
        self.recovery = recovery_strategy(policy)
        self.state = PlannerState(rotation=list(policy.regions))
        self.attempts = 0
        self.preemptions = 0
        self.hangs = 0
        self.final: Outcome | None = None
        """Set once the launch is over: the outcome it ended with."""
        self.final_region: str | None = None
        self.failure: str | None = None
        """Why the launch failed, listing each region's reason."""

    def next(self) -> Next | None:
        """The next attempt, or None when the launch is over (see `final`)."""
        if self.final is not None:
            return None
        return Next(self.state.rotation[0], self.strategy)

    def observe(self, region: str, result: Classified) -> None:
        """Records how the attempt in `region` ended and decides what comes next."""
        self.attempts += 1
        state = self.state
        if region in state.rotation and state.rotation[0] == region:
            state.consecutive += 1
        outcome = result.outcome
        if outcome in (Outcome.SUCCEEDED, Outcome.CANCELLED):
            return self._stop(outcome, region, None)
        state.reasons[region] = f"{outcome.value}: {result.error or 'no message'}"
        if outcome == Outcome.UNHEALTHY:
            return self._stop(outcome, region, f"{region}: {state.reasons[region]} (not "
                              "retried: the trainer stopped on a health incident)")
        if outcome == Outcome.HUNG:
            self.hangs += 1
            if self.hangs > self.policy.hang_retries:
                return self._stop(outcome, region, f"{region}: {state.reasons[region]} "
                                  f"({self.hangs} hung attempts, hang_retries "
                                  f"{self.policy.hang_retries})")
        elif outcome == Outcome.USER_ERROR:
            if result.exit_code not in self.policy.retry_exit_codes:
                return self._stop(outcome, region, f"{region}: {state.reasons[region]} "
                                  "(not retried: a user error)")
        elif region in state.rotation:
            if outcome == Outcome.PREEMPTED:
                self.preemptions += 1
                self._maybe_fall_back()
            self.recovery.after_failure(state, region, outcome)
        if not state.rotation:
            return self._stop(outcome, region, "every region failed: " + self._reasons())
        if self.attempts >= self.policy.max_attempts:
            return self._stop(outcome, region, f"{self.attempts} attempts made (--max-attempts)"
                              f": {self._reasons()}")
        return None

    def _maybe_fall_back(self) -> None:
        budget = self.policy.spot_preemption_budget
        if self.strategy != "SPOT" or budget is None or self.preemptions < budget:
            return
        self.strategy = "STANDARD"
        for region in self.policy.regions:  # Standard capacity is not Spot capacity
            if region in self.state.dropped:
                del self.state.dropped[region]
                self.state.rotation.append(region)

    def _reasons(self) -> str:
        return "; ".join(f"{r}: {self.state.reasons[r]}" for r in self.policy.regions
                         if r in self.state.reasons)

    def _stop(self, outcome: Outcome, region: str, failure: str | None) -> None:
        self.final, self.final_region, self.failure = outcome, region, failure
