"""Convergence: one IM server for SIP, XMPP and HTTP. Plugins import what they need from here."""
from .addresses import Address, AddressError
from .hookspecs import hookimpl
from .message import Message, RoutingError
from .presence import Presence

__all__ = ["Address", "AddressError", "Message", "Presence", "RoutingError", "hookimpl"]
__version__ = "0.1.0"
