"""The XMPP plugin's answers to the core's contract about contacts (module-level hooks).

``[xmpp] shared_roster`` is this plugin's setting; the core's contact lists
(:mod:`convergence.contacts`) ask for it through the ``share_roster`` hook instead of reading it.
"""
from convergence import hookimpl


@hookimpl
def share_roster(core):
    """``[xmpp] shared_roster``: every roster lists the domain's accounts and service users."""
    return core.config["xmpp"]["shared_roster"]
