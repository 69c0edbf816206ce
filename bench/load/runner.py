"""One load pass: N customers at once, each running scripted conversations back to back.

Customer i starts after `ramp * i / N` seconds, opens the store page (its session), then replays
script i, i + N, i + 2N, ... (each on a new socket, as a new visit), typing the first message for
`typing` seconds after the socket opens and reading `think` seconds (± 20 %) between messages.
No message is sent after `duration`; a customer stops after `rounds` conversations. So a pass is
bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.load.client import ConversationRecord, TurnObservation, converse, session_cookie

DATA = Path(__file__).resolve().parents[1] / "data"


def load_scripts() -> list[dict[str, Any]]:
    """The evaluation set: conversations.json (51) and followups.json (52), interleaved so any
    first N customers mix both kinds."""
    conversations = json.loads((DATA / "conversations.json").read_text(encoding="utf-8"))
    followups = json.loads((DATA / "followups.json").read_text(encoding="utf-8"))
    scripts: list[dict[str, Any]] = []
    for n in range(max(len(conversations), len(followups))):
        for source in (conversations, followups):
            if n < len(source):
                scripts.append(source[n])
    return scripts


@dataclass
class PassResult:
    """Everything one pass measured; `report.py` turns it into figures."""

    label: str
    mode: str
    profile: str
    pipeline: str
    users: int
    think: float
    duration: float
    typing: float = 0.0
    speculation: bool = True
    seconds: float = 0.0
    conversations: list[ConversationRecord] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    upstream_calls: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def turns(self) -> list[tuple[dict[str, Any], TurnObservation]]:
        """(scripted turn, what the client saw) for every message sent."""
        return [(turn, seen) for record in self.conversations for turn, seen in zip(record.script_turns, record.turns)]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for record, raw in zip(self.conversations, data["conversations"]):
            raw.pop("script_turns", None)
            for seen, turn in zip(record.turns, raw["turns"]):
                turn["kind"] = record.script_turns[seen.turn].get("kind") or record.script_turns[seen.turn].get("intent")
                completed = turn.pop("completed") or {}
                turn["metrics"] = completed.get("metrics")
                turn["products"] = [p.get("sku") for p in completed.get("products") or []]
        return data


async def run_pass(result: PassResult, bases: list[str], scripts: list[dict[str, Any]], *, ramp: float = 5.0,
                   rounds: int = 3, seed: int = 7, send_client_metrics: bool = True, progress: bool = True,
                   shard: tuple[int, int] = (0, 1)) -> None:
    """`shard` (k, K): this process plays customers k, k + K, k + 2K ... of the pass."""
    users = result.users
    started = time.perf_counter()
    stop_at = started + result.duration
    mine = range(shard[0], users, shard[1])
    bar = tqdm(total=len(mine) * rounds, desc=f"{result.label}", unit="conv", leave=False, disable=not progress,
               dynamic_ncols=True)
    answered = 0

    def keep_going() -> bool:
        return time.perf_counter() < stop_at

    async def on_turn(seen: TurnObservation) -> None:
        nonlocal answered
        answered += 1
        bar.set_postfix_str(f"{answered} answers", refresh=False)

    async def customer(user: int) -> None:
        rng = random.Random(seed * 1000 + user)
        await asyncio.sleep(ramp * user / users)
        for round_ in range(rounds):
            if not keep_going():
                break
            script = scripts[(user + round_ * users) % len(scripts)]
            base = bases[(user + round_) % len(bases)]
            record = ConversationRecord(script=script["id"], user=user, base=base, started_at=time.perf_counter(),
                                        script_turns=script["turns"])
            result.conversations.append(record)
            try:
                cookie = await session_cookie(base)
                record.turns = await converse(
                    base, script["turns"], script.get("page"), think=result.think, rng=rng,
                    message_prefix=f"u{user}-r{round_}", cookie=cookie, keep_going=keep_going,
                    send_client_metrics=send_client_metrics, on_turn=on_turn, typing=result.typing)
                record.finished = len(record.turns) == len(script["turns"]) and not any(
                    t.error for t in record.turns)
            except Exception as exc:  # noqa: BLE001 - a refused or dropped socket is a result, not a crash
                record.error = f"{type(exc).__name__}: {exc}"[:300]
            bar.update(1)
            if round_ + 1 < rounds:
                await asyncio.sleep(result.think * rng.uniform(0.8, 1.2))  # between two visits

    await asyncio.gather(*(customer(user) for user in mine))
    bar.close()
    result.seconds = time.perf_counter() - started


class ClientProcesses:
    """A pass's customers split over K forked processes, each with its own event loop.

    Each customer is a browser on a machine of its own: one load generator loop for a hundred of
    them would add its own queueing (a frame waits while the loop reads ninety-nine others) to every
    client-side figure. The processes start at once (their pids go to the usage sampler) and play
    customers k, k + K, ...; `join` merges what they saw into `result`.
    """

    def __init__(self, count: int, result: PassResult, bases: list[str], scripts: list[dict[str, Any]],
                 **options: Any) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.result = result
        self.pipes = []
        self.processes = []
        for k in range(count):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_client_process, args=(send, result, bases, scripts, (k, count), options),
                                      name=f"bench-clients-{k}", daemon=True)
            process.start()
            send.close()
            self.pipes.append(receive)
            self.processes.append(process)

    @property
    def pids(self) -> dict[str, int]:
        return {("load generator" if k == 0 else f"load generator ({k + 1})"): p.pid
                for k, p in enumerate(self.processes)}

    def join(self) -> None:
        for receive, process in zip(self.pipes, self.processes):
            try:
                conversations, seconds = receive.recv()
            except EOFError:
                raise RuntimeError(f"{process.name} died (exit code {process.exitcode})") from None
            self.result.conversations.extend(conversations)
            self.result.seconds = max(self.result.seconds, seconds)
            process.join(timeout=10)
        self.result.conversations.sort(key=lambda record: (record.started_at, record.user))


def _client_process(send: Any, result: PassResult, bases: list[str], scripts: list[dict[str, Any]],
                    shard: tuple[int, int], options: dict[str, Any]) -> None:
    import gc

    gc.freeze()
    options = {**options, "progress": options.get("progress", True) and shard[0] == 0}
    asyncio.run(run_pass(result, bases, scripts, shard=shard, **options))
    send.send((result.conversations, result.seconds))
    send.close()


def warm_up(bases: list[str]) -> None:
    """One message per web process before the clock starts: first-use costs are not the load's."""

    async def warm() -> None:
        await asyncio.gather(*(converse(base, [{"text": "hello"}], {}, think=0, rng=random.Random(0),
                                        message_prefix=f"warmup-{n}") for n, base in enumerate(bases)))

    asyncio.run(warm())
