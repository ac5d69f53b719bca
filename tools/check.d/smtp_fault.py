"""An SMTP server that misbehaves on request, for the fault cases (tools/check.d/faults_lib.py).

    s = SmtpFault().start()              # listens on a free local port: s.url
    s.script.extend(["hang", "hang_data"])  # how the next connections behave, in order
    s.default = "ok"                     # and every one after them
    s.stop_listening(); s.listen()       # nothing listening (connection refused), then back
    s.wait_for(lambda m: "a@b" in m.rcpt)
    s.stop()

Behaviours of one connection:
  ok         a plain server: 250 to the end of DATA, the message kept in s.messages
  hang       accepts the TCP connection and never says a word (not even the greeting)
  hang_data  talks normally, reads the whole message, never answers its final "."
  451 / 550  answers the final "." with "451 4.3.0 try later" / "550 5.7.1 refused"
Connections held by hang and hang_data stay open until stop() or stop_listening().
"""
import asyncio
import os
import sys
import threading
from collections import deque
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "api"))
from smtp_sink import Mailbox, free_port  # noqa: E402


@dataclass
class Message:
    mail_from: str
    rcpt: list
    data: bytes


REPLIES = {"451": b"451 4.3.0 try later\r\n", "550": b"550 5.7.1 refused\r\n"}


class SmtpFault(Mailbox):
    def __init__(self, host="127.0.0.1", port=None):
        super().__init__()
        self.host = host
        self.port = port or free_port()
        self.script = deque()
        self.default = "ok"
        self.seen = []          # behaviour of every connection accepted, in order
        self.loop = None
        self.server = None
        self.writers = set()

    @property
    def url(self):
        return f"smtp://{self.host}:{self.port}"

    # ---- control (any thread) ----

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait()
        self.listen()
        return self

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def listen(self):
        self._call(self._listen())

    def stop_listening(self):
        """Closes the listener and every connection: connecting is refused from now on."""
        self._call(self._close())

    def stop(self):
        if self.loop:
            self._call(self._close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.loop = None

    # ---- the server (its own loop) ----

    async def _listen(self):
        if self.server is None:
            self.server = await asyncio.start_server(self._conn, self.host, self.port,
                                                     reuse_address=True)

    async def _close(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    async def _conn(self, reader, writer):
        mode = self.script.popleft() if self.script else self.default
        self.seen.append(mode)
        self.writers.add(writer)
        try:
            if mode == "hang":
                await reader.read()          # until the client gives up or we close
                return
            await self._dialogue(mode, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _dialogue(self, mode, reader, writer):
        writer.write(b"220 smtp-fault ESMTP\r\n")
        mail_from, rcpt = "", []
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250 smtp-fault\r\n")
            elif verb == b"MAIL":
                mail_from, rcpt = line.decode().split(":", 1)[1].strip(" <>\r\n"), []
                writer.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                rcpt.append(line.decode().split(":", 1)[1].strip(" <>\r\n"))
                writer.write(b"250 OK\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                data = await reader.readuntil(b"\r\n.\r\n")
                if mode == "hang_data":
                    await reader.read()      # the final "." is never answered
                    return
                if mode in REPLIES:
                    writer.write(REPLIES[mode])
                else:
                    self.received(Message(mail_from, rcpt, data))
                    writer.write(b"250 OK queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:                            # RSET, NOOP, anything else
                writer.write(b"250 OK\r\n")
            await writer.drain()
