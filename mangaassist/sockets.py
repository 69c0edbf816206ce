"""Frames leave daphne's sockets when they are written, not on the event loop's next pass.

Twisted's TCP transport only buffers a write: it registers the socket for writability
and sends on a later pass of the reactor (here the asyncio event loop), then
unregisters it. Each frame therefore waited for that pass, behind whatever the loop
ran meanwhile (other customers' relays, the assembly of the next message), and cost
three system calls (two `epoll_ctl`, one `send`); in py-spy the transport's `doWrite`
was 30 % of the loop's busy samples at 100 conversations.

`write_at_once` makes a write with nothing queued before it try the socket first, as
asyncio's own transports do: what the kernel takes is sent now; only a remainder (a
full socket buffer, a slow reader) is buffered and written by the reactor as before,
in order, with Twisted's flow control. TLS connections (Twisted's TLS layer) and
closing connections keep Twisted's own path.
"""

from __future__ import annotations

import sys
from typing import Any


def write_at_once() -> bool:
    """Patch daphne's server connections (Twisted's `tcp.Server`); False where Twisted is not serving."""
    if "twisted.internet.reactor" not in sys.modules:  # not under daphne (runserver's autoreload, uvicorn, tests)
        return False
    from twisted.internet import tcp

    if getattr(tcp.Server.write, "writes_at_once", False):
        return True
    buffered_write = tcp.Server.write

    def write(self: Any, data: bytes) -> None:
        if (data and not self.TLS and self.connected and not self.disconnecting and not self._writeDisconnected
                and not self._tempDataBuffer and self.offset >= len(self.dataBuffer)):
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent > 0:  # else (0: the buffer is full; a lost connection) Twisted's path
                if sent >= len(data):
                    return
                data = bytes(memoryview(data)[sent:])
        buffered_write(self, data)

    write.writes_at_once = True  # type: ignore[attr-defined]
    tcp.Server.write = write
    return True
