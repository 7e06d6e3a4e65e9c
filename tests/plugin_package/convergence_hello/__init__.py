"""hello@<domain> answers every message with "hello, <body>", remembers what it received and
records each greeting in a table of its own (migrations/)."""
from pathlib import Path

from sqlalchemy import text

from convergence import RoutingError, hookimpl
from convergence.config import Option, Section

received = []  # what was routed to us, for the contract test to check


@hookimpl
def add_config_section():
    return Section("hello", {"greeting": Option("hello", "the word we answer with")})


class HelloRoute:
    def __init__(self, core):
        self.core = core

    def deliver(self, message):
        received.append(message)
        if message.type != "error":
            reply = message.reply(body=f"{self.core.config['hello']['greeting']}, {message.body}")
            with self.core.db.write() as session:
                session.execute(text("INSERT INTO hello_greetings (recipient) VALUES (:r)"),
                                {"r": message.sender.jid})
            try:
                self.core.send(reply)
            except RoutingError:
                pass  # the sender cannot be reached; what they sent did arrive

        return "delivered"


@hookimpl
def add_migrations():
    return Path(__file__).parent / "migrations"


@hookimpl(tryfirst=True)
def resolve_recipient(core, address):
    if address.bare == core.address("hello"):
        return HelloRoute(core)
    return None
