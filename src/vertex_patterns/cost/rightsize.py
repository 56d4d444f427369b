"""Right-sizing: profile a few steps of a workload, then pick the machine that fits it with
headroom at the lowest cost per training step.

The profile (`profile_workload`) runs one optimizer step under `torch.profiler` with memory
profiling, then `steps - 1` timed ones without it, and records: parameter count, the bytes of
parameters, gradients and optimizer state, the activations the forward pass keeps for
backward (the profiler's memory record of the forward), peak host memory of the process
(`ru_maxrss`), peak device memory (CUDA's allocator peak on a GPU; state plus activations on
CPU) and the median step time.

The recommendation (`recommend`) keeps the configurations whose host memory and per-GPU
memory hold the need times (1 + headroom) — data parallel, each GPU holds a full replica —
and ranks them by cost per step. Step time on a candidate is the profiled step time scaled by
peak tensor TFLOPS (`shapes.GPU_TFLOPS`) and, for several GPUs, by 0.9 x their count: a
first-order guess, said so in the output. A profile taken on CPU gives no GPU step time; the
ranking then uses hourly price per effective TFLOPS, which orders candidates the same way.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from vertex_patterns.cost.catalog import PriceCatalog
from vertex_patterns.cost.shapes import GPU_TFLOPS, MachineShape, gpu_candidates
from vertex_patterns.errors import ConfigError
from vertex_patterns.formatting import format_table

GB = 1024**3
MULTI_GPU_EFFICIENCY = 0.9
"""Data-parallel scaling assumed per GPU beyond the first."""


@dataclass(frozen=True, kw_only=True)
class WorkloadProfile:
    """What a short profiled run measured (`profile_workload`), or what a user states."""

    workload: str
    parameters: int
    state_gb: float
    """Parameters + gradients + optimizer state."""
    activations_gb: float
    peak_host_gb: float
    peak_device_gb: float
    step_s: float
    device: str
    """``cpu`` or the accelerator enum name it ran on (e.g. ``NVIDIA_L4``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the `--profile FILE` format)."""
        return asdict(self)

    @classmethod
    def from_file(cls, path: str) -> WorkloadProfile:
        """Reads a profile written by `to_dict` (or by hand).

        Raises:
            ConfigError: Missing file, not JSON, missing or negative fields.
        """
        try:
            with open(path, encoding="utf-8") as f:
                body = json.load(f)
            profile = cls(**body)
        except OSError as exc:
            raise ConfigError(f"--profile {path}: cannot read ({exc.strerror or exc})") from exc
        except (TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--profile {path}: not a workload profile ({exc})") from exc
        for name in ("state_gb", "activations_gb", "peak_host_gb", "peak_device_gb", "step_s"):
            value = getattr(profile, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--profile {path}: {name} must be a number >= 0")
        return profile


def profile_workload(workload: str, *, steps: int = 5, seed: int = 0) -> WorkloadProfile:
    """Builds `workload` and profiles `steps` optimizer steps (module docstring).

    Raises:
        ConfigError: An unknown workload or steps < 2.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from vertex_patterns.training.sampler import EpochSampler
    from vertex_patterns.training.workload import resolve_workload

    if steps < 2:
        raise ConfigError(f"--steps must be >= 2 (the first step warms up), got {steps}")
    factory = resolve_workload(workload)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    w = factory(seed=seed, device=device)
    w.model.to(device)
    sampler = EpochSampler(w.dataset_size, w.batch_size, seed)
    position = sampler.start_position()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def one_step() -> float:
        nonlocal position
        started = time.perf_counter()
        batch = w.get_batch(sampler.batch_ids(position))
        w.optimizer.zero_grad(set_to_none=True)
        with record_function("vp_forward"):
            loss = w.loss_fn(w.model, batch)
        loss.backward()
        w.optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        position = sampler.next_position(position)
        return time.perf_counter() - started

    # The first step runs under the profiler for memory (it also creates the optimizer
    # state); the others are timed without it, whose overhead would inflate step time.
    with profile(activities=activities, profile_memory=True) as prof:
        one_step()
    times = [one_step() for _ in range(steps - 1)]
    forward = [e for e in prof.events() if e.name == "vp_forward"]
    field = "device_memory_usage" if cuda else "cpu_memory_usage"
    activations = max((max(getattr(e, field, 0) or 0, 0) for e in forward), default=0)
    params = [p for p in w.model.parameters()]
    state = sum(p.numel() * p.element_size() for p in params)
    state += sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    for per_param in w.optimizer.state.values():
        state += sum(t.numel() * t.element_size() for t in per_param.values()
                     if isinstance(t, torch.Tensor))
    peak_device = torch.cuda.max_memory_allocated() if cuda else state + activations
    gpu = "cpu"
    if cuda:
        from vertex_patterns.launcher.catalog import normalize_accelerator
        name = torch.cuda.get_device_name().upper()
        gpu = next((normalize_accelerator(a) for a in ("H200", "H100", "A100", "L4", "T4",
                                                       "V100", "P100", "P4") if a in name),
                   "cuda")
    return WorkloadProfile(
        workload=workload, parameters=sum(p.numel() for p in params), state_gb=state / GB,
        activations_gb=activations / GB,
        peak_host_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        peak_device_gb=peak_device / GB, step_s=statistics.median(times), device=gpu)


@dataclass(frozen=True)
class Candidate:
    """One configuration considered."""

    shape: MachineShape
    hourly: float | None
    fits: bool
    why: str
    effective_tflops: float
    step_s: float | None

    @property
    def cost_per_step(self) -> float | None:
        """USD per step (None when the step time or the price is unknown)."""
        if self.hourly is None or self.step_s is None:
            return None
        return self.hourly * self.step_s / 3600

    @property
    def price_per_tflops(self) -> float:
        """Hourly USD per effective TFLOPS (the ranking without a GPU step time)."""
        return math.inf if self.hourly is None else self.hourly / self.effective_tflops


@dataclass(frozen=True)
class Recommendation:
    """The cheapest fitting configuration and everything else considered."""

    profile: WorkloadProfile
    region: str
    strategy: str
    headroom: float
    best: Candidate
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        """`cost rightsize --json`."""
        b = self.best
        return {"machine_type": b.shape.machine_type, "accelerator": b.shape.accelerator,
                "accelerator_count": b.shape.accelerator_count, "hourly": b.hourly,
                "step_seconds": b.step_s, "cost_per_step": b.cost_per_step,
                "region": self.region, "strategy": self.strategy,
                "profile": self.profile.to_dict(),
                "considered": [{"config": c.shape.label, "fits": c.fits, "why": c.why,
                                "hourly": c.hourly} for c in self.candidates]}

    def to_text(self) -> str:
        """The pick, why, and a table of the others."""
        p = self.profile
        b = self.best
        need_dev = p.peak_device_gb * (1 + self.headroom)
        need_host = p.peak_host_gb * (1 + self.headroom)
        lines = [f"profile of {p.workload} on {p.device}: {p.parameters:,} parameters, state "
                 f"{p.state_gb:.3g} GB, activations {p.activations_gb:.3g} GB, peak device "
                 f"{p.peak_device_gb:.3g} GB, peak host {p.peak_host_gb:.3g} GB, step "
                 f"{p.step_s * 1000:.3g} ms",
                 f"needs with {100 * self.headroom:g}% headroom: {need_dev:.3g} GB per GPU, "
                 f"{need_host:.3g} GB host",
                 f"recommended: {b.shape.label} in {self.region} ({self.strategy}) at "
                 f"${b.hourly:,.4f}/h: {b.why}"]
        fitting = sorted((c for c in self.candidates if c.fits), key=_rank)
        rows = []
        for c in fitting[:8]:
            per_step = "-" if c.cost_per_step is None else f"${c.cost_per_step * 1000:,.4f}"
            rows.append([c.shape.label, f"${c.hourly:,.4f}" if c.hourly is not None else "-",
                         f"{c.effective_tflops:g}", per_step,
                         f"{c.price_per_tflops / b.price_per_tflops:.2f}x"])
        lines += format_table(["fits (cheapest first)", "USD/h", "TFLOPS", "USD/1k steps",
                               "vs best"], rows, left={0})
        misfits = [c for c in self.candidates if not c.fits]
        if misfits:
            lines.append("did not fit or could not be priced:")
            lines += [f"  {c.shape.label}: {c.why}" for c in misfits]
        lines.append("step times on GPUs scale the profiled one by peak tensor TFLOPS (and 0.9 "
                     "x the GPU count): a first-order guess; profile on the target to confirm")
        return "\n".join(lines) + "\n"


def _rank(c: Candidate) -> tuple[float, float]:
    per_step = c.cost_per_step
    return (per_step if per_step is not None else c.price_per_tflops, c.hourly or math.inf)


def recommend(profile: WorkloadProfile, catalog: PriceCatalog, *, region: str,
              strategy: str = "spot", headroom: float = 0.2) -> Recommendation:
    """The cheapest configuration per step that fits `profile` with `headroom`.

    Raises:
        ConfigError: A bad headroom or strategy, or nothing fits / can be priced in `region`.
    """
    if not math.isfinite(headroom) or headroom < 0:
        raise ConfigError(f"--headroom must be >= 0, got {headroom}")
    if strategy not in ("spot", "on-demand"):
        raise ConfigError(f"--strategy must be spot or on-demand, got {strategy!r}")
    need_dev = profile.peak_device_gb * (1 + headroom)
    need_host = profile.peak_host_gb * (1 + headroom)
    ref = GPU_TFLOPS.get(profile.device)
    out = []
    for shape in gpu_candidates():
        assert shape.accelerator is not None
        n = shape.accelerator_count
        tflops = GPU_TFLOPS[shape.accelerator] * (1 + MULTI_GPU_EFFICIENCY * (n - 1))
        step = profile.step_s * ref / tflops if ref else None
        try:
            price = catalog.price_shape(shape, region)
            hourly: float | None = price.spot if strategy == "spot" else price.on_demand
        except ConfigError as exc:
            out.append(Candidate(shape, None, False, f"not priced: {exc}", tflops, step))
            continue
        if shape.gpu_memory_gb < need_dev:
            why = f"{shape.gpu_memory_gb:g} GB per GPU < {need_dev:.2f} GB needed"
            out.append(Candidate(shape, hourly, False, why, tflops, step))
        elif shape.memory_gb < need_host:
            why = f"{shape.memory_gb:g} GB host < {need_host:.2f} GB needed"
            out.append(Candidate(shape, hourly, False, why, tflops, step))
        else:
            why = (f"{shape.gpu_memory_gb:g} GB per GPU and {shape.memory_gb:g} GB host hold "
                   f"{need_dev:.3g} / {need_host:.3g} GB")
            out.append(Candidate(shape, hourly, True, why, tflops, step))
    fitting = [c for c in out if c.fits]
    if not fitting:
        raise ConfigError(f"nothing in {region} fits {need_dev:.1f} GB per GPU and "
                          f"{need_host:.1f} GB host: the model needs sharding across GPUs, "
                          "which right-sizing does not plan")
    best = min(fitting, key=_rank)
    reason = ("lowest cost per step" if best.cost_per_step is not None else
              "lowest price per effective TFLOPS (profiled on CPU: no GPU step time)")
    best = Candidate(best.shape, best.hourly, True, f"{reason}; {best.why}",
                     best.effective_tflops, best.step_s)
    return Recommendation(profile=profile, region=region, strategy=strategy, headroom=headroom,
                          best=best, candidates=tuple(out))
