"""A model upstream in its own process, for the load benchmark: the test suite's wire-level fakes.

    python -m bench.load.upstream bedrock                        # AWS event-stream, Bedrock-like pace
    python -m bench.load.upstream openai --first-ms 200 --decode-ms 5 --words 120   # OpenAI SSE, fixed pace

It prints `READY <url>` once it listens (on a free port of 127.0.0.1). Its own process, so neither its threads nor its timers share a GIL with the server under test
or with the load generator that measures it. It serves until it is terminated.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.bedrock_runtime import BedrockPace, FakeBedrockRuntime, pace_chunks  # noqa: E402
from tests.fakes.openai_sse import FakeOpenAIServer, SSEReply  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bedrock", "openai"])
    parser.add_argument("--first-ms", type=float, default=200.0, help="openai: fixed time to first chunk")
    parser.add_argument("--decode-ms", type=float, default=5.0, help="openai: fixed time between chunks")
    parser.add_argument("--words", type=int, default=120, help="openai: chunks per answer")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.kind == "bedrock":
        fake = FakeBedrockRuntime()
        fake.pace = BedrockPace()
        fake.start()
        print(f"READY {fake.url}", flush=True)
        stop.wait()
        fake.stop()
    else:
        server = FakeOpenAIServer()
        server.default_reply = SSEReply(chunks=pace_chunks(args.words), first_delay=args.first_ms / 1000,
                                        delay=args.decode_ms / 1000, prompt_tokens=600)
        with server:
            print(f"READY {server.url}", flush=True)
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
