"""hello@<domain> answers every message with "hello, <body>" and remembers what it received."""
from convergence import hookimpl
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
            self.core.send(message.reply(body=f"{self.core.config['hello']['greeting']}, {message.body}"))
        return "delivered"


@hookimpl(tryfirst=True)
def resolve_recipient(core, address):
    if address.bare == core.address("hello"):
        return HelloRoute(core)
    return None
