"""A real SMTP server for tests: aiosmtpd on a free local port, collecting every message.

    sink = SmtpSink(); sink.start()
    Server("--smtp-url", sink.url, ...)
    msg = sink.wait_for(lambda m: m.to == ["user@example.com"])
    msg.message["Subject"], msg.message.get_content()
    sink.stop()

`reply` makes the server refuse DATA with that reply (e.g. "451 4.3.0 try later" to exercise
retries, "550 5.1.1 no such user" for a permanent failure); set it back to None to accept again.
"""
import email
import socket
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str                 # envelope sender (MAIL FROM)
    to: list                       # envelope recipients (RCPT TO)
    raw: bytes                     # the DATA as received, dot-stuffing undone
    message: EmailMessage = field(repr=False)  # parsed (policy.default, LF line ends)


class Mailbox:
    """Messages received by an SMTP server thread, waited for from the test's thread (shared by
    SmtpSink and tools/check.d/smtp_fault.py's misbehaving server)."""

    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    def received(self, m):
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def clear(self):
        with self.cond:
            self.messages.clear()

    def wait_for(self, pred=lambda m: True, timeout=10):
        """The first received message matching pred, waiting up to timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message within {timeout}s "
                                       f"({len(self.messages)} received)")
                self.cond.wait(left)

    def wait_count(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.messages)} of {n} messages within {timeout}s")
                self.cond.wait(left)
            return list(self.messages)


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope):
        if self.sink.reply:
            self.sink.refused += 1
            return self.sink.reply
        raw = bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
        self.sink.received(Received(envelope.mail_from, list(envelope.rcpt_tos), raw, msg))
        return "250 OK"


class SmtpSink(Mailbox):
    def __init__(self, host="127.0.0.1", port=None):
        super().__init__()
        self.host = host
        self.port = port or free_port()
        self.reply = None
        self.refused = 0
        self.controller = None

    @property
    def url(self):
        return f"smtp://{self.host}:{self.port}"

    def start(self):
        self.controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self.controller.start()  # returns once the server answers
        return self

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":  # self-check: python3 tests/api/smtp_sink.py
    import smtplib

    with SmtpSink() as sink:
        with smtplib.SMTP(sink.host, sink.port) as c:
            c.sendmail("a@example.com", ["b@example.com"],
                       "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n.dot\r\n")
        m = sink.wait_for()
        assert m.mail_from == "a@example.com" and m.to == ["b@example.com"], m
        assert m.message["Subject"] == "hi" and m.message.get_content() == ".dot\n", m.raw
        sink.reply = "451 4.3.0 try later"
        with smtplib.SMTP(sink.host, sink.port) as c:
            try:
                c.sendmail("a@example.com", ["b@example.com"], "Subject: no\r\n\r\nx\r\n")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451
        assert sink.refused == 1 and len(sink.messages) == 1
        print("ok", sink.url)
