"""Context assembly time: the 187-series catalog, then with the 30k MADB catalog imported.

    .venv/bin/python bench/assembly.py            # both catalogs (the MADB import takes a minute)
    .venv/bin/python bench/assembly.py --no-madb  # the demo catalog only

Each turn of bench/data/conversations.json is assembled twice through the real
ContextAssembler (embedded mode, throwaway database): cold, as it comes, and again
with the cache holding what the turn needs (what the prefetch task leaves behind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, CaptureSink, django_setup, load_conversations, new_session, percentile  # noqa: E402


async def measure(conversations: list[dict]) -> dict[str, list[float]]:
    from asgiref.sync import sync_to_async

    from chat import services
    from chat.assembly import ContextAssembler, TurnInput
    from chat.llm.simulated import SimulatedBackend
    from chat.orchestrator import Orchestrator
    from mangaassist.celery import in_process_wait

    assembler = ContextAssembler()
    orchestrator = Orchestrator(backend=SimulatedBackend(profile="instant"), assembler=assembler)
    cold, warm, degraded = [], [], 0
    for conversation in conversations:
        convo = await sync_to_async(services.conversation_open)(session_key=new_session(), conversation_id=None)
        for index, turn in enumerate(conversation["turns"]):
            page = {k: v for k, v in conversation.get("page", {}).items() if v}
            message_id = f"t{index}"
            await sync_to_async(services.user_turn_record)(conversation_id=convo.id, client_message_id=message_id,
                                                           text=turn["text"], page=page)
            turn_input = TurnInput(convo.id, message_id, turn["text"], page, "")
            started = time.perf_counter()
            context = await assembler.assemble(turn_input)
            cold.append((time.perf_counter() - started) * 1000)
            degraded += bool(context.degraded)
            started = time.perf_counter()
            await assembler.assemble(turn_input)
            warm.append((time.perf_counter() - started) * 1000)
            await orchestrator.answer(turn_input, CaptureSink())  # the answer, so the next turn has history
            await sync_to_async(in_process_wait)()
    return {"cold": cold, "warm": warm, "degraded_turns": degraded}


def summary(label: str, result: dict) -> dict:
    row = {"catalog": label, "turns": len(result["cold"]), "degraded_turns": result["degraded_turns"]}
    for kind in ("cold", "warm"):
        row[kind] = {f"p{q}": round(percentile(result[kind], q), 2) for q in (50, 95, 99)}
    print(f"{label:28} turns {row['turns']:4}  as it comes p50 {row['cold']['p50']:6.2f} ms  p95 {row['cold']['p95']:6.2f} ms"
          f"  | cache holding it p50 {row['warm']['p50']:6.2f} ms  p95 {row['warm']['p95']:6.2f} ms"
          f"  | degraded turns {row['degraded_turns']}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-madb", action="store_true", help="skip the 30k-record MADB catalog")
    args = parser.parse_args()
    django_setup(LLM_BACKEND="simulated", LLM_SIMULATED_PROFILE="instant", LOG_LEVEL="WARNING")
    from catalog.models import Product
    from catalog.retrieval import index_holder
    from mangaassist.warmup import warm_up

    conversations = load_conversations()
    warm_up()
    rows = [summary(f"demo ({Product.objects.count()} series)", asyncio.run(measure(conversations)))]
    if not args.no_madb:
        from catalog.services import madb_import

        started = time.perf_counter()
        madb_import()
        index_holder.reset()
        warm_up()  # rebuild the index as a restarted process would before it reports ready
        print(f"(MADB import and index build: {time.perf_counter() - started:.0f} s)")
        rows.append(summary(f"with MADB ({Product.objects.count()} series)", asyncio.run(measure(conversations))))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "assembly.json").write_text(json.dumps(rows, indent=2))
    print(f"report: {RESULTS / 'assembly.json'}")


if __name__ == "__main__":
    main()
