"""Running sagas: start one by appending to the log topic, drive each to its end, recover
unfinished ones after a crash by reading the topic from the beginning.

```python
runner = SagaRunner(events, [unsubscribe])
saga_id = await runner.start("unsubscribe-user", {"userId": "u1", "plan": "pro"})
await runner.run(stop_event)        # recovers, then drives every saga it sees
```

The log topic is the only state: a step's action (or compensation) is run again after a crash
unless its completion is in the log, and then with the same idempotency key. One runner process
drives the sagas of one log topic; `start` may be called from any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gossamer.events import tracecontext
from gossamer.events.client import BrokerError, EventsClient, ReceivedEvent
from gossamer.events.model import new_event_id
from gossamer.events.outbox import REFUSED_FOR_GOOD
from gossamer.events.saga import Saga, StepContext, template_context
from gossamer.events.saga_actions import ActionPerformer, Phase, idempotency_key
from gossamer.events.saga_state import (
    Append,
    InvalidHistoryError,
    Outcome,
    Refused,
    RunAction,
    RunCompensation,
    SagaRecord,
    SagaState,
    SagaStatus,
    apply,
    decide,
    record_for,
    resumed,
    started,
)

log = logging.getLogger(__name__)

__all__ = ["RunnerSettings", "SagaRunner", "SagaState", "SagaStatus"]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """The log topic and the runner's bounds."""

    topic: str = "sagas"
    partitions: int = 4  # when the runner creates the topic
    max_active: int = 64  # sagas driven at once; others wait their turn
    keep_finished: int = 10_000  # completed or aborted sagas whose status stays in memory
    log_backoff_s: float = 0.2  # retrying the broker (appending, reconnecting), doubling...
    log_backoff_max_s: float = 5.0  # ...up to this
    graceful_s: float = 10.0  # on stop, how long running steps may take to finish

    def topic_spec(self) -> dict[str, Any]:
        """The Topic spec the runner declares when the log topic does not exist."""
        return {"partitions": self.partitions, "description": "saga transitions, keyed by id"}


class SagaRunner:
    """Starts sagas, drives them, and answers their status; one per process and log topic."""

    def __init__(
        self,
        events: EventsClient,
        sagas: Sequence[Saga],
        *,
        settings: RunnerSettings | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or RunnerSettings()
        self.definitions: Mapping[str, Saga] = {saga.name: saga for saga in sagas}
        if len(self.definitions) != len(sagas):
            raise ValueError("saga names must be unique")
        self.ready = asyncio.Event()  # set once the log has been read to its end
        self._events = events
        self._own_http = http is None
        # trust_env: HTTP_PROXY and friends, so a call by service name goes through the sidecar.
        self._http = http or httpx.AsyncClient(trust_env=True)
        self._performer = ActionPerformer(self._http, events)
        self._active: dict[str, SagaState] = {}
        self._finished: OrderedDict[str, SagaState] = OrderedDict()
        self._traces: dict[str, tracecontext.TraceContext | None] = {}
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Semaphore(self.settings.max_active)
        self._changed = asyncio.Event()
        self._declaring = asyncio.Lock()
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"<SagaRunner {self.settings.topic}: {len(self._drivers)} driven, "
            f"{len(self._active)} unfinished, {len(self._finished)} finished>"
        )

    async def aclose(self) -> None:
        """Close the HTTP client the runner made (not the events client)."""
        if self._own_http:
            await self._http.aclose()

    def status(self, saga_id: str) -> SagaState | None:
        """What the log says of a saga, as far as this runner has read it."""
        return self._active.get(saga_id) or self._finished.get(saga_id)

    async def finished(self, saga_id: str) -> SagaState:
        """Wait until a saga is completed, aborted or stuck (wrap in a timeout)."""
        while True:
            changed = self._changed
            state = self.status(saga_id)
            if state is not None and state.status.finished:
                return state
            await changed.wait()

    async def start(self, name: str, data: Mapping[str, Any], *, saga_id: str | None = None) -> str:
        """Append a new saga to the log; its id. Starting again with the same `saga_id` is
        recognised by the broker and changes nothing. ValueError for an unknown saga or an
        input that misses a name the steps use."""
        definition = self.definitions.get(name)
        if definition is None:
            raise ValueError(f"no saga named {name!r}")
        saga_id = saga_id or new_event_id()
        try:
            definition.check_input(saga_id, data)
        except (KeyError, IndexError, AttributeError) as error:
            raise ValueError(f"saga {name}: the input has no {error}") from None
        record = started(saga_id, definition, data)
        await self._publish(record, SagaStatus.RUNNING)
        return saga_id

    async def resume(self, saga_id: str) -> None:
        """Send a stuck saga back to compensating, from the step it stuck on."""
        state = self.status(saga_id)
        if state is None:
            raise ValueError(f"no saga {saga_id} in the log")
        await self._append(state, resumed(state))
        self._drive(saga_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the log (recovering unfinished sagas), drive every saga, until `stop` is set.

        On stop, steps being performed get `graceful_s` to finish; the rest are cancelled and
        run again (with the same idempotency keys) by the next runner.
        """
        follower = asyncio.create_task(self._follow(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait((follower, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping = True
            stopped.cancel()
            follower.cancel()
            drivers = list(self._drivers.values())
            if drivers:
                _, late = await asyncio.wait(drivers, timeout=self.settings.graceful_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*drivers, return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await follower  # raises what ended the follower, if it was not the stop

    async def _follow(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self._follow_once()
                problem = "the broker ended the stream"
            except (httpx.HTTPError, BrokerError) as error:
                problem = str(error) or type(error).__name__
            failures += 1
            log.warning("saga log %s: %s; reading it again", self.settings.topic, problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._backoff(failures))

    async def _follow_once(self) -> None:
        """Fold the whole topic into states; once at its end, drive what is unfinished."""
        await self._ensure_topic()
        description = await self._events.describe(self.settings.topic)
        # Read up to the ends as they are now before driving anything: a saga's later records
        # (steps done by a runner before a crash) must be known before its next step is run.
        partitions = description["partitions"]
        behind = {p["partition"]: p["end"] for p in partitions if p["end"] > p["start"]}
        if not behind:
            self._caught_up()
        stream = self._events.tail(self.settings.topic, start="beginning")
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                saga_id = self._fold(event)
                if not behind:
                    if saga_id is not None:
                        self._drive(saga_id)
                    continue
                if event.offset + 1 >= behind.get(event.partition, 0):
                    behind.pop(event.partition, None)
                    if not behind:
                        self._caught_up()

    def _caught_up(self) -> None:
        if not self.ready.is_set():
            unfinished = len(self._active)
            log.info("saga log %s read: %d unfinished sagas", self.settings.topic, unfinished)
        self.ready.set()
        for saga_id in list(self._active):
            self._drive(saga_id)

    def _fold(self, event: ReceivedEvent) -> str | None:
        """Apply one event of the log; the saga's id, or None if the event was not applied."""
        try:
            record = SagaRecord.parse(event.type, event.payload)
            state = apply(self.status(record.saga_id), record)
        except InvalidHistoryError as error:
            log.warning("saga log %s offset %d: %s", self.settings.topic, event.offset, error)
            return None
        if record.seq == 0:
            self._traces[record.saga_id] = event.trace_context
        self._store(state)
        return record.saga_id

    def _drive(self, saga_id: str) -> None:
        state = self._active.get(saga_id)
        if self._stopping or state is None or state.status.finished or saga_id in self._drivers:
            return
        if state.saga not in self.definitions:
            log.warning("saga %s: no definition named %s here; not driven", saga_id, state.saga)
            return
        task = asyncio.create_task(self._run_saga(saga_id), name=f"saga-{saga_id}")
        self._drivers[saga_id] = task
        task.add_done_callback(lambda _: self._drivers.pop(saga_id, None))

    async def _run_saga(self, saga_id: str) -> None:
        try:
            await self._drive_steps(saga_id)
        except Exception:
            # A bug or a log refusing a record for good: leave the saga for the next runner.
            log.exception("saga %s: stopped driving it", saga_id)

    async def _drive_steps(self, saga_id: str) -> None:
        async with self._room:
            with tracecontext.use(self._traces.get(saga_id)):
                while not self._stopping:
                    state = self._active.get(saga_id)
                    if state is None:
                        return
                    definition = self.definitions[state.saga]
                    command = decide(state, definition)
                    if command is None:
                        return
                    if isinstance(command, Append):
                        record = command.record
                    else:
                        outcome = await self._perform(state, definition, command)
                        record = record_for(state, command, outcome)
                    await self._append(state, record)

    async def _perform(
        self, state: SagaState, definition: Saga, command: RunAction | RunCompensation
    ) -> Outcome:
        step = definition.steps[definition.index(command.step)]
        phase: Phase = "action" if isinstance(command, RunAction) else "compensation"
        if isinstance(command, RunAction):
            action, retry = step.action, step.retry or definition.retry
        else:
            assert step.compensation is not None, "a plan holds only steps with a compensation"
            action, retry = step.compensation, definition.compensation_retry
        key = idempotency_key(state.saga_id, step.name, phase)
        context = StepContext(state.saga_id, state.saga, step.name, state.data, key)
        try:
            rendered = action.render(template_context(state.saga_id, state.saga, state.data))
        except (KeyError, IndexError, AttributeError) as error:
            return Refused(f"the input has no {error}")
        log.info("saga %s: %s of %s", state.saga_id, phase, step.name)
        return await self._performer.perform(rendered, context, retry)

    async def _append(self, state: SagaState, record: SagaRecord) -> None:
        """Publish a record (retrying until the broker stores it), then apply it."""
        after = apply(state, record)
        await self._publish(record, after.status)
        current = self.status(record.saga_id)
        self._store(apply(current, record) if current is not None else after)
        level = logging.WARNING if after.status is SagaStatus.STUCK else logging.INFO
        log.log(
            level, "saga %s: %s %s", record.saga_id, record.transition.value, record.error or ""
        )

    async def _publish(self, record: SagaRecord, status: SagaStatus) -> None:
        failures = 0
        declared = False
        while True:
            try:
                await self._events.publish(
                    self.settings.topic,
                    record.payload(status),
                    key=record.saga_id,
                    type=record.transition.value,
                    id=record.event_id,
                )
                return
            except BrokerError as error:
                if error.status in REFUSED_FOR_GOOD:
                    raise
                problem: Exception = error
                if error.status == 404 and not declared:  # the first saga: no topic yet
                    declared = True
                    with contextlib.suppress(BrokerError, httpx.HTTPError):
                        await self._ensure_topic()
                        continue
            except httpx.HTTPError as error:
                problem = error
            failures += 1
            log.warning("saga %s: appending to the log failed: %s", record.saga_id, problem)
            await asyncio.sleep(self._backoff(failures))

    async def _ensure_topic(self) -> None:
        # One declaration at a time: `start` and the follower may both find the topic missing.
        async with self._declaring:
            try:
                await self._events.describe(self.settings.topic)
            except BrokerError as error:
                if error.status != 404:
                    raise
                await self._events.declare(self.settings.topic, self.settings.topic_spec())

    def _store(self, state: SagaState) -> None:
        if state.status in (SagaStatus.COMPLETED, SagaStatus.ABORTED):
            self._active.pop(state.saga_id, None)
            self._traces.pop(state.saga_id, None)
            self._finished[state.saga_id] = state
            self._finished.move_to_end(state.saga_id)
            while len(self._finished) > self.settings.keep_finished:
                self._finished.popitem(last=False)
        else:
            self._active[state.saga_id] = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _backoff(self, failures: int) -> float:
        pause = self.settings.log_backoff_s * 2.0 ** min(failures - 1, 16)
        return float(min(self.settings.log_backoff_max_s, pause))
