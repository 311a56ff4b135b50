"""`gossamer up` on one host: a mesh's processes, supervised, restarted and stopped in order."""

from gossamer.runtime.backoff import BackoffPolicy
from gossamer.runtime.spec import (
    ProcessSpec,
    ReadinessCheck,
    ReadinessProbe,
    RestartPolicy,
    SpecError,
)
from gossamer.runtime.status import (
    Change,
    EventStream,
    ExitStatus,
    Phase,
    ProcessEvent,
    ProcessStatus,
)
from gossamer.runtime.supervisor import EventCallback, Supervisor

__all__ = [
    "BackoffPolicy",
    "Change",
    "EventCallback",
    "EventStream",
    "ExitStatus",
    "Phase",
    "ProcessEvent",
    "ProcessSpec",
    "ProcessStatus",
    "ReadinessCheck",
    "ReadinessProbe",
    "RestartPolicy",
    "SpecError",
    "Supervisor",
]
