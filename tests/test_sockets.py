"""daphne's transport with `write_at_once`: a frame is on the socket when written, and a write the
kernel cannot take at once still arrives whole and in order (Twisted's own buffering takes the rest).

Each case runs Twisted's asyncio reactor, as daphne does, in a process of its own (a reactor is
installed once per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import asyncio, json, socket, sys, threading
from twisted.internet import asyncioreactor
asyncioreactor.install(asyncio.new_event_loop())
from twisted.internet import protocol, reactor
from mangaassist.sockets import write_at_once

patched = write_at_once() if sys.argv[1] == "patched" else False
BIG = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffers take in one send
report = {"patched": patched}

received = []

def read_rest():
    client.setblocking(True)
    while chunk := client.recv(1 << 16):
        received.append(chunk)

reader = threading.Thread(target=read_rest)

class Writer(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"first")
        try:  # before the reactor runs again: is it on the socket already?
            report["at_once"] = client.recv(5).decode()
        except BlockingIOError:
            report["at_once"] = None
        self.transport.write(BIG)
        self.transport.write(b"last")
        self.transport.loseConnection()
        reader.start()

    def connectionLost(self, reason):
        reactor.callLater(0.2, reactor.stop)

factory = protocol.ServerFactory.forProtocol(Writer)
port = reactor.listenTCP(0, factory, interface="127.0.0.1")
client = socket.create_connection(("127.0.0.1", port.getHost().port))
client.setblocking(False)
reactor.run()
reader.join(10)
rest = b"".join(received)
expected = (b"first" + BIG + b"last")[len(report["at_once"] or ""):]
report["whole"] = rest == expected
report["received"] = len(rest)
print(json.dumps(report))
"""


def _serve(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SERVER, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_frame_is_on_the_socket_when_written_and_a_large_write_arrives_whole() -> None:
    report = _serve("patched")
    assert report["patched"] is True
    assert report["at_once"] == "first"  # on the socket before the reactor's next pass
    assert report["whole"], report  # 4 MiB, partly sent at once and the rest by the reactor, in order


def test_twisted_alone_sends_on_the_next_pass() -> None:
    """What the patch changes: without it, a write waits for the reactor (the test above can fail)."""
    report = _serve("plain")
    assert report["at_once"] is None
    assert report["whole"], report
