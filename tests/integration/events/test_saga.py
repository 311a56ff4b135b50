"""Sagas against a real broker and real HTTP services: completion, compensation in reverse,
retries, a stuck compensation, and a runner killed with kill -9 mid-saga and started again."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gossamer.events.client import EventsClient, ReceivedEvent
from gossamer.events.saga import RetryPolicy, Saga, Step, StepContext, StepRefused, call, http
from gossamer.events.saga import publish as publish_action
from gossamer.events.saga_runner import SagaRunner
from gossamer.events.saga_state import SagaStatus
from gossamer.events.server import BrokerServer

from .harness import Backend, eventually

FAST = RetryPolicy(attempts=4, backoff_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def backend() -> Backend:
    """Sagas use only the broker's API, which both logs serve alike (the broker's own tests
    cover JetStream): one log is enough here."""
    return Backend("sqlite")


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's HTTP client trusts the environment; keep a developer's proxy off 127.0.0.1."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@dataclass
class Receiver:
    """An HTTP service that makes each Idempotency-Key's effect happen once: a repeated key is
    answered as the first time, and changes nothing. `script[path]` lists the statuses of the
    next new requests (then 200); a path in `hold` takes effect and then never answers its
    first request, like a service that worked while its caller died."""

    script: dict[str, list[int]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, key)
    effects: Counter[str] = field(default_factory=Counter)
    answers: dict[str, int] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    url: str = ""
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def keys(self, path: str) -> set[str]:
        return {key for p, key in self.requests if p == path}

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            lines = head.split("\r\n")
            path = lines[0].split()[1]
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.answer(path, headers.get("idempotency-key", ""))
            if path in self.hold:
                self.hold.discard(path)
                self.held.append(path)
                await self._release.wait()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, path: str, key: str) -> int:
        self.requests.append((path, key))
        if key in self.answers:
            return self.answers[key]
        queue = self.script.get(path)
        status = queue.pop(0) if queue else 200
        if status < 500 and status not in (408, 429):  # an answer for good is kept for the key
            self.answers[key] = status
            if status < 300:
                self.effects[path] += 1
        return status


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    service = Receiver()
    server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
    service.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield service
    service._release.set()
    server.close()
    await server.wait_closed()


@contextlib.asynccontextmanager
async def running(runner: SagaRunner) -> AsyncIterator[SagaRunner]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await task
        await runner.aclose()


async def finished(runner: SagaRunner, saga_id: str) -> SagaStatus:
    async with asyncio.timeout(15):
        return (await runner.finished(saga_id)).status


async def log_of(client: EventsClient, saga_id: str, topic: str = "sagas") -> list[ReceivedEvent]:
    return [e for e in await client.read(topic, limit=10_000) if e.key == saga_id]


def transitions(events: list[ReceivedEvent]) -> list[str]:
    return [f"{e.type}:{e.payload.get('step', '')}" for e in events]


def order_saga(url: str, *, compensation_retry: RetryPolicy = FAST) -> Saga:
    def step(name: str) -> Step:
        return Step(
            name, http("POST", f"{url}/{name}/{{orderId}}"), http("POST", f"{url}/un{name}")
        )

    return Saga(
        "order",
        [step("reserve"), step("charge"), step("ship")],
        retry=FAST,
        compensation_retry=compensation_retry,
    )


async def test_a_saga_of_http_publish_and_local_steps_completes_and_its_log_answers_sql(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    local: list[str] = []

    async def remember(context: StepContext) -> None:
        local.append(context.idempotency_key)

    saga = Saga(
        "signup",
        [
            Step("create", http("PUT", receiver.url + "/users/{userId}", {"plan": "{plan}"})),
            Step("remember", call(remember)),
            Step("announce", publish_action("users", {"userId": "{userId}"}, key="{userId}")),
        ],
        retry=FAST,
    )
    await client.declare("users", {"partitions": 1})
    async with running(SagaRunner(client, [saga])) as runner:
        saga_id = await runner.start("signup", {"userId": "u 1", "plan": "pro"})
        assert await finished(runner, saga_id) is SagaStatus.COMPLETED
    assert receiver.requests == [("/users/u%201", f"{saga_id}:create:action")]
    assert local == [f"{saga_id}:remember:action"]
    announced = await client.read("users")
    assert [(e.id, e.key, e.payload) for e in announced] == [
        (f"{saga_id}:announce:action", "u 1", {"userId": "u 1"})
    ]
    history = transitions(await log_of(client, saga_id))
    assert history == [
        "SagaStarted:",
        "StepDone:create",
        "StepDone:remember",
        "StepDone:announce",
        "SagaCompleted:",
    ]
    reply = await client.query(
        "SELECT type, data.step::VARCHAR AS step, data.status::VARCHAR AS status FROM sagas "
        f"WHERE key = '{saga_id}' ORDER BY (data.seq)::INTEGER"
    )
    assert reply["rows"][-1] == ["SagaCompleted", None, "completed"]
    assert len(reply["rows"]) == 5


async def test_a_step_failing_for_good_compensates_the_earlier_steps_in_reverse_once_each(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    receiver.script["/ship/o1"] = [409]
    async with running(SagaRunner(client, [order_saga(receiver.url)])) as runner:
        saga_id = await runner.start("order", {"orderId": "o1"})
        assert await finished(runner, saga_id) is SagaStatus.ABORTED
        state = runner.status(saga_id)
    assert state is not None and state.error == "409 X"
    assert [path for path, _ in receiver.requests] == [
        "/reserve/o1",
        "/charge/o1",
        "/ship/o1",
        "/uncharge",
        "/unreserve",
    ]
    assert receiver.effects == {"/reserve/o1": 1, "/charge/o1": 1, "/uncharge": 1, "/unreserve": 1}
    assert receiver.keys("/uncharge") == {f"{saga_id}:charge:compensation"}
    assert transitions(await log_of(client, saga_id))[3:] == [
        "StepFailed:ship",
        "Compensating:",
        "StepCompensated:charge",
        "StepCompensated:reserve",
        "SagaAborted:",
    ]


async def test_a_retryable_failure_is_retried_with_the_same_key_until_it_succeeds(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    receiver.script["/charge/o1"] = [503, 429, 408, 200]
    async with running(SagaRunner(client, [order_saga(receiver.url)])) as runner:
        saga_id = await runner.start("order", {"orderId": "o1"})
        assert await finished(runner, saga_id) is SagaStatus.COMPLETED
    assert receiver.count("/charge/o1") == 4
    assert receiver.keys("/charge/o1") == {f"{saga_id}:charge:action"}
    assert receiver.effects["/charge/o1"] == 1


async def test_a_step_whose_retries_run_out_is_compensated_too_as_it_may_have_happened(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    receiver.script["/charge/o1"] = [503] * FAST.attempts
    async with running(SagaRunner(client, [order_saga(receiver.url)])) as runner:
        saga_id = await runner.start("order", {"orderId": "o1"})
        assert await finished(runner, saga_id) is SagaStatus.ABORTED
    assert receiver.count("/charge/o1") == FAST.attempts
    assert [path for path, _ in receiver.requests[-2:]] == ["/uncharge", "/unreserve"]
    failed = [e for e in await log_of(client, saga_id) if e.type == "StepFailed"]
    assert failed[0].payload["uncertain"] is True
    assert failed[0].payload["error"].startswith("gave up after 4 attempts")


async def test_a_compensation_failing_for_good_leaves_the_saga_stuck_in_the_log_until_resumed(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    receiver.script["/ship/o1"] = [400]
    receiver.script["/uncharge"] = [500] * FAST.attempts  # retries run out: stuck, not looping
    async with running(SagaRunner(client, [order_saga(receiver.url)])) as runner:
        saga_id = await runner.start("order", {"orderId": "o1"})
        assert await finished(runner, saga_id) is SagaStatus.STUCK
        stuck = (await log_of(client, saga_id))[-1]
        assert (stuck.type, stuck.payload["step"], stuck.payload["status"]) == (
            "SagaStuck",
            "charge",
            "stuck",
        )
        assert stuck.payload["error"].startswith("gave up after 4 attempts")
        assert receiver.count("/uncharge") == 4
        assert receiver.count("/unreserve") == 0
        await runner.resume(saga_id)  # someone fixed the billing service
        assert await finished(runner, saga_id) is SagaStatus.ABORTED
    assert receiver.effects["/uncharge"] == 1 and receiver.effects["/unreserve"] == 1
    assert transitions(await log_of(client, saga_id))[-4:] == [
        "SagaResumed:",
        "StepCompensated:charge",
        "StepCompensated:reserve",
        "SagaAborted:",
    ]


async def test_a_local_step_refusing_and_a_start_with_bad_input(
    broker: BrokerServer, client: EventsClient, receiver: Receiver
) -> None:
    async def refuse(context: StepContext) -> None:
        raise StepRefused("no such account")

    saga = Saga(
        "pay",
        [
            Step(
                "hold",
                http("POST", receiver.url + "/hold/{id}"),
                http("POST", receiver.url + "/free"),
            ),
            Step("debit", call(refuse)),
        ],
        retry=FAST,
    )
    async with running(SagaRunner(client, [saga])) as runner:
        with pytest.raises(ValueError, match="the input has no 'id'"):
            await runner.start("pay", {})
        with pytest.raises(ValueError, match="no saga named"):
            await runner.start("unknown", {})
        saga_id = await runner.start("pay", {"id": "7"}, saga_id="pay-7")
        assert saga_id == "pay-7"
        assert await finished(runner, saga_id) is SagaStatus.ABORTED
        assert await runner.start("pay", {"id": "7"}, saga_id="pay-7") == "pay-7"  # a duplicate
    state = runner.status("pay-7")
    assert state is not None and state.error == "no such account"
    assert receiver.effects == {"/hold/7": 1, "/free": 1}
    assert len(await log_of(client, "pay-7")) == 6


# The runner of the crash tests, in its own process: the order saga against the receiver.
RUNNER = """\
import asyncio, sys
from gossamer.events.client import EventsClient
from gossamer.events.saga import RetryPolicy, Saga, Step, http
from gossamer.events.saga_runner import SagaRunner

async def main(broker, url, saga_id):
    fast = RetryPolicy(attempts=4, backoff_s=0.01, backoff_max_s=0.05)
    def step(name):
        return Step(name, http("POST", f"{url}/{name}/{{orderId}}"), http("POST", f"{url}/un{name}"))
    saga = Saga("order", [step("reserve"), step("charge"), step("ship")], retry=fast,
                compensation_retry=fast)
    async with EventsClient(broker) as events:
        runner = SagaRunner(events, [saga])
        await runner.start("order", {"orderId": "o1"}, saga_id=saga_id)
        await runner.run(asyncio.Event())

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def runner_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"runner-{len(started)}.log").open("ab")
        with log:
            process = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)


async def kill_9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(process.wait, 10) == -signal.SIGKILL


async def last_transition(client: EventsClient, saga_id: str) -> str | None:
    events = await log_of(client, saga_id)
    return events[-1].type if events else None


async def reached(client: EventsClient, saga_id: str, transition: str) -> bool:
    return await last_transition(client, saga_id) == transition


async def held(receiver: Receiver) -> bool:
    return bool(receiver.held)


async def test_a_runner_killed_mid_action_is_restarted_and_runs_nothing_recorded_twice(
    broker: BrokerServer,
    client: EventsClient,
    receiver: Receiver,
    runner_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    receiver.hold.add("/charge/o1")  # charged, and the runner dies before the answer
    first = runner_process(broker.url, receiver.url, "order-1")
    await eventually(lambda: held(receiver), what="the charge request held", timeout=20)
    await kill_9(first)
    assert await last_transition(client, "order-1") == "StepDone"  # reserve, recorded

    runner_process(broker.url, receiver.url, "order-1")
    await eventually(
        lambda: reached(client, "order-1", "SagaCompleted"),
        what="the saga completed by the second runner",
        timeout=20,
    )
    assert receiver.count("/reserve/o1") == 1  # recorded as done: never sent again
    assert receiver.count("/charge/o1") == 2  # not recorded: sent again...
    assert receiver.keys("/charge/o1") == {"order-1:charge:action"}  # ...with the same key
    assert receiver.effects == {"/reserve/o1": 1, "/charge/o1": 1, "/ship/o1": 1}
    history = transitions(await log_of(client, "order-1"))
    assert history == [
        "SagaStarted:",
        "StepDone:reserve",
        "StepDone:charge",
        "StepDone:ship",
        "SagaCompleted:",
    ]


async def test_a_runner_killed_mid_compensation_is_restarted_and_compensates_each_step_once(
    broker: BrokerServer,
    client: EventsClient,
    receiver: Receiver,
    runner_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    receiver.script["/ship/o1"] = [409]
    receiver.hold.add("/uncharge")  # refunded, and the runner dies before the answer
    first = runner_process(broker.url, receiver.url, "order-2")
    await eventually(lambda: held(receiver), what="the refund request held", timeout=20)
    await kill_9(first)
    assert await last_transition(client, "order-2") == "Compensating"

    runner_process(broker.url, receiver.url, "order-2")
    await eventually(
        lambda: reached(client, "order-2", "SagaAborted"),
        what="the saga aborted by the second runner",
        timeout=20,
    )
    assert receiver.count("/reserve/o1") == receiver.count("/charge/o1") == 1
    assert receiver.count("/ship/o1") == 1  # refused for good, recorded: not asked again
    assert receiver.count("/uncharge") == 2
    assert receiver.keys("/uncharge") == {"order-2:charge:compensation"}
    assert receiver.count("/unreserve") == 1
    assert receiver.effects == {"/reserve/o1": 1, "/charge/o1": 1, "/uncharge": 1, "/unreserve": 1}
    history = transitions(await log_of(client, "order-2"))
    assert history.count("StepCompensated:charge") == history.count("SagaAborted:") == 1
