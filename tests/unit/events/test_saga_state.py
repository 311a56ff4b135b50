"""The saga state machine as data: histories in, states and next commands out; templates."""

from typing import Any

import pytest

from gossamer.events.saga import RetryPolicy, Saga, Step, StepContext, call, http, publish
from gossamer.events.saga_state import (
    TRANSITIONS,
    Append,
    GaveUp,
    InvalidHistoryError,
    Refused,
    RunAction,
    RunCompensation,
    SagaRecord,
    SagaState,
    SagaStatus,
    Succeeded,
    Transition,
    apply,
    classify_status,
    decide,
    record_for,
    resumed,
    started,
)


async def _nothing(context: StepContext) -> None:
    return None


SAGA = Saga(
    "order",
    steps=[
        Step(
            "reserve", http("POST", "http://stock/{item}/reserve"), http("POST", "http://stock/x")
        ),
        Step("note", call(_nothing)),  # nothing to undo
        Step("charge", http("POST", "http://pay/charge"), http("POST", "http://pay/refund")),
        Step("ship", publish("orders", {"id": "{sagaId}"})),
    ],
)


def run(saga: Saga, outcomes: list[Any]) -> tuple[SagaState, list[SagaRecord]]:
    """Drive a saga through decide/record_for/apply, taking each call's outcome from a list."""
    records = [started("s1", saga, {"item": "book"})]
    state = apply(None, records[0])
    while (command := decide(state, saga)) is not None:
        if isinstance(command, Append):
            record = command.record
        else:
            record = record_for(state, command, outcomes.pop(0))
        records.append(record)
        state = apply(state, record)
    assert not outcomes, "every outcome was used"
    return state, records


def kinds(records: list[SagaRecord]) -> list[str]:
    return [f"{r.transition.value}:{r.step or ''}" for r in records]


def test_every_step_succeeding_completes_the_saga() -> None:
    state, records = run(SAGA, [Succeeded()] * 4)
    assert state.status is SagaStatus.COMPLETED
    assert state.done == ("reserve", "note", "charge", "ship")
    assert kinds(records) == [
        "SagaStarted:",
        "StepDone:reserve",
        "StepDone:note",
        "StepDone:charge",
        "StepDone:ship",
        "SagaCompleted:",
    ]
    assert [r.seq for r in records] == list(range(6))
    assert [r.event_id for r in records[:2]] == ["s1.0", "s1.1"]


def test_a_refused_step_compensates_the_done_steps_last_first_skipping_those_without() -> None:
    state, records = run(SAGA, [*[Succeeded()] * 3, Refused("409 Conflict"), *[Succeeded()] * 2])
    assert state.status is SagaStatus.ABORTED
    assert kinds(records)[4:] == [
        "StepFailed:ship",
        "Compensating:",
        "StepCompensated:charge",
        "StepCompensated:reserve",
        "SagaAborted:",
    ]
    assert records[5].plan == ("charge", "reserve")
    assert state.error == "409 Conflict"
    assert state.compensated == ("charge", "reserve")


def test_a_step_whose_retries_ran_out_is_compensated_too_as_it_may_have_happened() -> None:
    state, records = run(
        SAGA, [Succeeded(), Succeeded(), GaveUp(3, "503"), Succeeded(), Succeeded()]
    )
    assert records[3].uncertain
    assert state.error == "gave up after 3 attempts: 503"
    assert records[4].plan == ("charge", "reserve")
    assert state.status is SagaStatus.ABORTED


def test_a_failing_first_step_that_was_refused_aborts_with_nothing_to_undo() -> None:
    state, records = run(SAGA, [Refused("400 Bad Request")])
    assert kinds(records) == ["SagaStarted:", "StepFailed:reserve", "Compensating:", "SagaAborted:"]
    assert state.status is SagaStatus.ABORTED


@pytest.mark.parametrize("failure", [Refused("400 no"), GaveUp(10, "503")])
def test_a_compensation_that_fails_leaves_the_saga_stuck_until_resumed(failure: Any) -> None:
    state, records = run(SAGA, [Succeeded(), Succeeded(), Succeeded(), Refused("409"), failure])
    assert state.status is SagaStatus.STUCK
    assert records[-1].transition is Transition.STUCK and records[-1].step == "charge"
    assert decide(state, SAGA) is None
    state = apply(state, resumed(state))
    assert decide(state, SAGA) == RunCompensation("charge")


def test_replaying_a_history_gives_the_same_state_and_the_next_command_resumes_it() -> None:
    final, records = run(SAGA, [*[Succeeded()] * 3, Refused("409"), *[Succeeded()] * 2])
    state = None
    for record in records[:7]:  # ... up to the compensation of charge, which was recorded
        state = apply(state, record)
    assert state is not None
    assert decide(state, SAGA) == RunCompensation("reserve")
    again = state
    for record in records:  # the whole history again, from the beginning: changes nothing done
        again = apply(again, record)
    assert again == final


def test_a_record_applied_twice_changes_nothing_and_a_gap_is_refused() -> None:
    state = apply(None, started("s1", SAGA, {"item": "book"}))
    done = record_for(state, RunAction("reserve"), Succeeded())
    state = apply(state, done)
    assert apply(state, done) == state
    later = SagaRecord("s1", 5, Transition.STEP_DONE, "order", step="note")
    with pytest.raises(InvalidHistoryError, match="record 5, 2 next"):
        apply(state, later)


def test_transitions_outside_the_table_are_refused() -> None:
    state = apply(None, started("s1", SAGA, {}))
    with pytest.raises(InvalidHistoryError, match="StepCompensated cannot follow running"):
        apply(state, SagaRecord("s1", 1, Transition.STEP_COMPENSATED, "order", step="reserve"))
    with pytest.raises(InvalidHistoryError, match="SagaStarted cannot follow running"):
        apply(state, SagaRecord("s1", 1, Transition.STARTED, "order"))
    with pytest.raises(InvalidHistoryError, match="not stuck"):
        resumed(state)
    finished = {status for (_, _), status in TRANSITIONS.items() if status.finished}
    assert not any(
        before in finished for before, _ in TRANSITIONS if before is not SagaStatus.STUCK
    )


def test_a_record_round_trips_through_its_event_payload() -> None:
    record = SagaRecord(
        "s1", 3, Transition.STEP_FAILED, "order", step="charge", error="x", uncertain=True
    )
    payload = record.payload(SagaStatus.FAILED)
    assert payload == {
        "sagaId": "s1",
        "saga": "order",
        "seq": 3,
        "status": "failed",
        "step": "charge",
        "error": "x",
        "uncertain": True,
    }
    assert SagaRecord.parse("StepFailed", payload) == record
    with pytest.raises(InvalidHistoryError):
        SagaRecord.parse("UserAdded", payload)
    with pytest.raises(InvalidHistoryError):
        SagaRecord.parse("StepDone", {"seq": 1})


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        (200, Succeeded()),
        (204, Succeeded()),
        (400, Refused("400 Bad")),
        (404, Refused("404 Bad")),
        (409, Refused("409 Bad")),
        (408, None),
        (429, None),
        (500, None),
        (503, None),
        (302, Refused("302 Bad")),
    ],
)
def test_http_statuses_are_success_refusal_or_retry(status: int, meaning: Any) -> None:
    assert classify_status(status, "Bad") == meaning


def test_templates_fill_urls_encoded_and_bodies_typed() -> None:
    action = http(
        "post",
        "http://auth-svc:8080/users/{userId}/revoke?saga={sagaId}",
        {"user": "{userId}", "amount": "{amount}", "note": "for {userId}", "n": [1, "{amount}"]},
        headers={"x-user": "{userId}"},
    )
    context = {"userId": "a b/c", "amount": 12.5, "sagaId": "s1"}
    rendered = action.render(context)
    assert rendered.method == "POST"
    assert rendered.url == "http://auth-svc:8080/users/a%20b%2Fc/revoke?saga=s1"
    assert rendered.body == {"user": "a b/c", "amount": 12.5, "note": "for a b/c", "n": [1, 12.5]}
    assert rendered.headers == {"x-user": "a b/c"}
    with pytest.raises(KeyError, match="missing"):
        http("GET", "http://x/{missing}").render(context)


def test_a_saga_checks_its_declaration_and_input() -> None:
    with pytest.raises(ValueError, match="unique"):
        Saga("s", [Step("a", call(_nothing)), Step("a", call(_nothing))])
    with pytest.raises(ValueError, match="at least one step"):
        Saga("s", [])
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(attempts=0)
    with pytest.raises(KeyError, match="item"):
        SAGA.check_input("s1", {})
    SAGA.check_input("s1", {"item": "book"})


def test_backoff_doubles_up_to_its_bound_and_jitter_takes_at_most_half() -> None:
    policy = RetryPolicy(attempts=10, backoff_s=0.1, backoff_max_s=0.5)
    assert [policy.pause_s(n, 0.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.pause_s(2, 1.0) == pytest.approx(0.1)
