"""The saga state machine, sans-IO: log records in, state out; state and definition in, next
command out.

A saga's history is a sequence of records (events of the log topic, keyed by saga id, numbered
by `seq` from 0). `apply` folds one record into a state through the transition table;
`decide` says what the runner must do next; `record_for` turns the result of doing it into the
next record. Nothing here waits, sends or reads a clock, so every path is a unit test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from gossamer.events.saga import Saga


class SagaStatus(StrEnum):
    """Where a saga is: still going forward, undoing, or finished one way or another."""

    RUNNING = "running"
    FAILED = "failed"  # a step failed for good; the compensation plan is recorded next
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    ABORTED = "aborted"  # every completed step was compensated
    STUCK = "stuck"  # a compensation failed for good: a person must look

    @property
    def finished(self) -> bool:
        """Nothing more happens on its own (a stuck saga waits for `resume`)."""
        return self in (SagaStatus.COMPLETED, SagaStatus.ABORTED, SagaStatus.STUCK)


class Transition(StrEnum):
    """A record's kind; the event `type` in the log topic."""

    STARTED = "SagaStarted"
    STEP_DONE = "StepDone"
    STEP_FAILED = "StepFailed"
    COMPENSATING = "Compensating"
    STEP_COMPENSATED = "StepCompensated"
    COMPLETED = "SagaCompleted"
    ABORTED = "SagaAborted"
    STUCK = "SagaStuck"
    RESUMED = "SagaResumed"


_S, _T = SagaStatus, Transition
# (status before, record) -> status after; a pair not here is an invalid history.
TRANSITIONS: Mapping[tuple[SagaStatus | None, Transition], SagaStatus] = {
    (None, _T.STARTED): _S.RUNNING,
    (_S.RUNNING, _T.STEP_DONE): _S.RUNNING,
    (_S.RUNNING, _T.STEP_FAILED): _S.FAILED,
    (_S.RUNNING, _T.COMPLETED): _S.COMPLETED,
    (_S.FAILED, _T.COMPENSATING): _S.COMPENSATING,
    (_S.COMPENSATING, _T.STEP_COMPENSATED): _S.COMPENSATING,
    (_S.COMPENSATING, _T.ABORTED): _S.ABORTED,
    (_S.COMPENSATING, _T.STUCK): _S.STUCK,
    (_S.STUCK, _T.RESUMED): _S.COMPENSATING,
}


class InvalidHistoryError(Exception):
    """A record that cannot follow the saga's state (a gap, or a transition not in the table)."""


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One transition of one saga, as its event in the log topic carries it."""

    saga_id: str
    seq: int
    transition: Transition
    saga: str
    step: str | None = None
    data: Mapping[str, Any] | None = None  # the input, on SagaStarted only
    error: str | None = None
    uncertain: bool = False  # StepFailed: the action may have taken effect (retries ran out)
    plan: tuple[str, ...] = ()  # Compensating: the steps to undo, in order

    @property
    def event_id(self) -> str:
        """The event's id: a record written twice (a retried publish) is stored once."""
        return f"{self.saga_id}.{self.seq}"

    def payload(self, status: SagaStatus) -> dict[str, Any]:
        """The event's payload; `status` is the saga's status after this record (for SQL)."""
        body: dict[str, Any] = {
            "sagaId": self.saga_id,
            "saga": self.saga,
            "seq": self.seq,
            "status": status.value,
        }
        optional = {"step": self.step, "data": self.data, "error": self.error}
        body.update((name, value) for name, value in optional.items() if value is not None)
        if self.uncertain:
            body["uncertain"] = True
        if self.transition is Transition.COMPENSATING:
            body["plan"] = list(self.plan)
        return body

    @classmethod
    def parse(cls, kind: str | None, payload: Any) -> SagaRecord:
        """From an event's type and payload; InvalidHistoryError if it is not a saga record."""
        try:
            transition = Transition(kind or "")
            return cls(
                str(payload["sagaId"]),
                int(payload["seq"]),
                transition,
                str(payload["saga"]),
                payload.get("step"),
                payload.get("data"),
                payload.get("error"),
                bool(payload.get("uncertain", False)),
                tuple(payload.get("plan", ())),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidHistoryError(f"not a saga record ({kind}): {error}") from None


@dataclass(frozen=True, slots=True)
class SagaState:
    """What a saga's records so far say: its status, steps done, compensations still to do."""

    saga_id: str
    saga: str
    data: Mapping[str, Any]
    status: SagaStatus
    seq: int  # the seq the next record takes
    done: tuple[str, ...] = ()  # steps whose action was recorded done, in order
    to_compensate: tuple[str, ...] = ()  # in the order they are to be undone
    compensated: tuple[str, ...] = ()
    failed_step: str | None = None
    failure_uncertain: bool = False  # the failed step may have taken effect
    error: str | None = None  # why it failed or is stuck


def apply(state: SagaState | None, record: SagaRecord) -> SagaState:
    """The state after `record`. A record already applied (seq below the state's) changes
    nothing, so a history may be read twice; a gap or a transition not in the table raises."""
    if state is not None and record.seq < state.seq:
        return state
    expected = 0 if state is None else state.seq
    if record.seq != expected:
        raise InvalidHistoryError(f"saga {record.saga_id}: record {record.seq}, {expected} next")
    status = TRANSITIONS.get((None if state is None else state.status, record.transition))
    if status is None:
        before = "nothing" if state is None else state.status.value
        raise InvalidHistoryError(
            f"saga {record.saga_id}: {record.transition.value} cannot follow {before}"
        )
    if state is None:
        return SagaState(record.saga_id, record.saga, record.data or {}, status, 1)
    state = replace(state, status=status, seq=state.seq + 1)
    match record.transition:
        case Transition.STEP_DONE:
            return replace(state, done=(*state.done, _step(record)))
        case Transition.STEP_FAILED:
            failed = _step(record)
            return replace(
                state, failed_step=failed, failure_uncertain=record.uncertain, error=record.error
            )
        case Transition.COMPENSATING:
            return replace(state, to_compensate=record.plan)
        case Transition.STEP_COMPENSATED:
            if state.to_compensate[:1] != (record.step,):
                raise InvalidHistoryError(
                    f"saga {record.saga_id}: {record.step} compensated out of order"
                )
            compensated = (*state.compensated, _step(record))
            return replace(state, to_compensate=state.to_compensate[1:], compensated=compensated)
        case Transition.STUCK:
            return replace(state, error=record.error)
        case _:
            return state


def _step(record: SagaRecord) -> str:
    if record.step is None:
        raise InvalidHistoryError(f"saga {record.saga_id}: {record.transition.value} needs a step")
    return record.step


@dataclass(frozen=True, slots=True)
class RunAction:
    """Perform a step's action."""

    step: str


@dataclass(frozen=True, slots=True)
class RunCompensation:
    """Perform a step's compensation."""

    step: str


@dataclass(frozen=True, slots=True)
class Append:
    """Record a decision that needs no call (the plan, the end)."""

    record: SagaRecord


Command = RunAction | RunCompensation | Append


def decide(state: SagaState, definition: Saga) -> Command | None:
    """What to do next for a saga, or None when it is finished (or stuck)."""
    if state.status is SagaStatus.RUNNING:
        if len(state.done) < len(definition.steps):
            return RunAction(definition.steps[len(state.done)].name)
        return Append(_next(state, Transition.COMPLETED))
    if state.status is SagaStatus.FAILED:
        return Append(replace(_next(state, Transition.COMPENSATING), plan=plan(state, definition)))
    if state.status is SagaStatus.COMPENSATING:
        if state.to_compensate:
            return RunCompensation(state.to_compensate[0])
        return Append(_next(state, Transition.ABORTED))
    return None


def plan(state: SagaState, definition: Saga) -> tuple[str, ...]:
    """The steps to undo, last first: every step done, and the failed step too when it may
    have taken effect (its retries ran out rather than being refused); steps without a
    compensation are skipped."""
    undo = list(state.done)
    if state.failed_step is not None and state.failure_uncertain:
        undo.append(state.failed_step)
    steps = {step.name: step for step in definition.steps}
    return tuple(name for name in reversed(undo) if steps[name].compensation is not None)


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The action or compensation took effect (or had already, by its idempotency key)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """It failed for good: the receiver refused it, so it did not take effect."""

    reason: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """Every attempt failed in a way that might have passed; the effect is unknown."""

    attempts: int
    reason: str


Outcome = Succeeded | Refused | GaveUp


def record_for(
    state: SagaState, command: RunAction | RunCompensation, outcome: Outcome
) -> SagaRecord:
    """The record that the outcome of running `command` adds to the saga's history."""
    if isinstance(command, RunAction):
        match outcome:
            case Succeeded():
                return replace(_next(state, Transition.STEP_DONE), step=command.step)
            case Refused(reason):
                return replace(
                    _next(state, Transition.STEP_FAILED), step=command.step, error=reason
                )
            case GaveUp(attempts, reason):
                error = f"gave up after {attempts} attempts: {reason}"
                failed = _next(state, Transition.STEP_FAILED)
                return replace(failed, step=command.step, error=error, uncertain=True)
    match outcome:
        case Succeeded():
            return replace(_next(state, Transition.STEP_COMPENSATED), step=command.step)
        case Refused(reason):
            return replace(_next(state, Transition.STUCK), step=command.step, error=reason)
        case GaveUp(attempts, reason):
            error = f"gave up after {attempts} attempts: {reason}"
            return replace(_next(state, Transition.STUCK), step=command.step, error=error)


def started(saga_id: str, definition: Saga, data: Mapping[str, Any]) -> SagaRecord:
    """The first record of a new saga."""
    return SagaRecord(saga_id, 0, Transition.STARTED, definition.name, data=dict(data))


def resumed(state: SagaState) -> SagaRecord:
    """The record that sends a stuck saga back to compensating, from the step it stuck on."""
    if state.status is not SagaStatus.STUCK:
        raise InvalidHistoryError(f"saga {state.saga_id} is {state.status.value}, not stuck")
    return _next(state, Transition.RESUMED)


def _next(state: SagaState, transition: Transition) -> SagaRecord:
    return SagaRecord(state.saga_id, state.seq, transition, state.saga)


RETRYABLE_STATUSES = frozenset({408, 429})
"""4xx statuses that say "not now" rather than "no": retried like a 5xx."""


def classify_status(status: int, reason: str) -> Outcome | None:
    """An HTTP reply's meaning for a step: Succeeded (2xx), Refused (any other 1xx-4xx but 408
    and 429), or None: retry (408, 429, 5xx)."""
    if 200 <= status < 300:
        return Succeeded()
    if status in RETRYABLE_STATUSES or status >= 500:
        return None
    return Refused(f"{status} {reason}".strip())
