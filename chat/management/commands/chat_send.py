"""Send one message to a running MangaAssist server and print the frames as they arrive."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Chat with a running server over its WebSocket (prints ack, deltas, completed)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("text", help="The customer's message.")
        parser.add_argument("--server", default="http://127.0.0.1:8000", help="Store address (http://host:port).")
        parser.add_argument("--conversation", help="Continue this conversation id.")
        parser.add_argument("--raw", action="store_true", help="Print every frame as JSON.")

    def handle(self, *args: object, **options: object) -> None:
        try:
            asyncio.run(self._chat(str(options["server"]).rstrip("/"), str(options["text"]),
                                   options.get("conversation"), bool(options["raw"])))
        except OSError as exc:
            raise CommandError(f"cannot reach {options['server']}: {exc}") from exc

    async def _chat(self, server: str, text: str, conversation: object, raw: bool) -> None:
        from websockets.asyncio.client import connect

        url = server.replace("http", "ws", 1) + "/ws/chat/" + (f"?conversation={conversation}" if conversation else "")
        async with connect(url, origin=server) as ws:
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "id": uuid.uuid4().hex[:12], "text": text}))
            while True:
                frame = json.loads(await ws.recv())
                elapsed = (time.perf_counter() - started) * 1000
                if raw:
                    self.stdout.write(json.dumps(frame, ensure_ascii=False))
                elif frame["type"] == "delta":
                    if frame["index"] == 0:
                        self.stdout.write(f"[first token after {elapsed:.0f} ms]")
                    self.stdout.write(frame["text"], ending="")
                    self.stdout.flush()
                elif frame["type"] == "ack":
                    self.stdout.write(f"[conversation {frame['conversation']}]")
                elif frame["type"] == "completed":
                    titles = ", ".join(p["title"] for p in frame["products"]) or "none"
                    self.stdout.write(f"\n[completed after {elapsed:.0f} ms; products: {titles}]")
                    self.stdout.write(f"[metrics {json.dumps(frame['metrics'])}]")
                elif frame["type"] == "error":
                    self.stdout.write(f"\n[error {frame['code']}: {frame['message']}]")
                if frame["type"] in ("completed", "error", "stopped"):
                    return
