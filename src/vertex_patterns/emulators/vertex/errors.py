"""Errors as Vertex AI reports them: google.rpc status bodies for failed calls, and the
`error` messages a failed job carries.

The job error wordings are Vertex AI's own, from "Understand the serverless training service"
(docs.cloud.google.com/vertex-ai/docs/training/understanding-training-service, section "How
Vertex AI handles training job errors") and "Use Spot VMs with training" (.../training/
use-spot-vms, section "Preemption handling"); the quota wording is the 429 that
`customJobs.create` returns when a request exceeds a quota limit.
"""

from __future__ import annotations

from typing import Any

# google.rpc.Code values used in `error.code` of jobs.
CODE_CANCELLED = 1
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_RESOURCE_EXHAUSTED = 8
CODE_FAILED_PRECONDITION = 9
CODE_INTERNAL = 13

INTERNAL_ERROR_MESSAGE = "Internal error occurred for the current attempt."
CANCELLED_MESSAGE = "CANCELED"


class ApiError(Exception):
    """A failed API call: the HTTP status and the google.rpc status name and message.

    Args:
        http_status: 400, 404, 409, 429, ...
        status: The google.rpc code name, e.g. ``INVALID_ARGUMENT``.
        message: What the caller did wrong, as Vertex AI words it.
    """

    def __init__(self, http_status: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON error body Google APIs return: ``{"error": {code, message, status}}``."""
        return {"error": {"code": self.http_status, "message": self.message,
                          "status": self.status}}


def invalid_argument(message: str) -> ApiError:
    """400 INVALID_ARGUMENT."""
    return ApiError(400, "INVALID_ARGUMENT", message)


def field_errors(errors: list[tuple[str, str]]) -> ApiError:
    """400 INVALID_ARGUMENT listing each bad field the way Vertex AI's validator does."""
    lines = "".join(f"\t{i}.Field: {f}; Message: {m}" for i, (f, m) in enumerate(errors, 1))
    return invalid_argument(f"List of found errors:{lines}\t")


def not_found(name: str) -> ApiError:
    """404 NOT_FOUND for a resource name."""
    return ApiError(404, "NOT_FOUND", f'The resource "{name}" was not found.')


def already_exists(name: str) -> ApiError:
    """409 ALREADY_EXISTS for a resource name."""
    return ApiError(409, "ALREADY_EXISTS", f'The resource "{name}" already exists.')


def failed_precondition(message: str) -> ApiError:
    """400 FAILED_PRECONDITION (an operation the resource's state does not allow)."""
    return ApiError(400, "FAILED_PRECONDITION", message)


def unimplemented(method: str, path: str) -> ApiError:
    """501 UNIMPLEMENTED for a method the emulator does not serve."""
    return ApiError(501, "UNIMPLEMENTED",
                    f"The Vertex AI emulator does not implement {method} {path}.")


def quota_exceeded(metric: str) -> ApiError:
    """429 RESOURCE_EXHAUSTED, as `customJobs.create` returns for a quota over its limit."""
    return ApiError(429, "RESOURCE_EXHAUSTED",
                    f"The following quota metrics exceed quota limits: {metric}")


def stockout_message(region: str) -> str:
    """The error of a job that found no capacity (`code` 8), Spot preemptions included."""
    return (f"Resources are insufficient in region: {region}. "
            "Try a different region or use a different accelerator.")


def replica_exit_message(replica: str, exit_code: int) -> str:
    """The error of a job whose replica exited non-zero (a user code exception).

    A replica killed by signal N reports exit code 128 + N, as a container runtime does.
    """
    status = exit_code if exit_code >= 0 else 128 - exit_code
    return (f"The replica {replica} exited with a non-zero status of {status}. "
            "Termination reason: Error.")


def timeout_message(timeout_seconds: float) -> str:
    """The error of a job stopped for running past its `scheduling.timeout` (`code` 4).

    Vertex AI documents the field as "the maximum job running time" but not the wording of
    the error; this one names the limit and the field to raise.
    """
    return (f"The job exceeded its maximum running time (scheduling.timeout "
            f"{timeout_seconds:g}s) and was stopped.")


def quota_metric(machine_spec: dict[str, Any]) -> str:
    """The quota metric a worker pool's machine spec draws on.

    Examples: ``aiplatform.googleapis.com/custom_model_training_nvidia_l4_gpus`` for
    ``NVIDIA_L4`` (``NVIDIA_TESLA_T4`` -> ``nvidia_t4``), ``..._cpus`` without accelerators.
    """
    accelerator = str(machine_spec.get("acceleratorType", "") or "")
    if accelerator and accelerator != "ACCELERATOR_TYPE_UNSPECIFIED":
        name = accelerator.lower().replace("tesla_", "")
        return f"aiplatform.googleapis.com/custom_model_training_{name}_gpus"
    return "aiplatform.googleapis.com/custom_model_training_cpus"
