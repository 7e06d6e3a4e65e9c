"""The SIP plugin's metrics (docs/operations.md, Metrics): read from the parts of one
:class:`~.server.SipServer` at each scrape.

- ``convergence_sip_bindings``: live registrations (RFC 3261 §10), from the location service;
- ``convergence_sip_transactions{kind}``: live server and client transactions (§17);
- ``convergence_sip_requests_received_total{method}`` (a method outside :data:`~.dispatcher.METHODS`
  counts as ``other``, so a flood of made-up methods cannot add labels),
  ``convergence_sip_responses_received_total{class}`` and
  ``convergence_sip_responses_sent_total{class}`` (``1xx`` … ``6xx``): the transaction layer's
  ``counts``, incremented by the dispatcher;
- ``convergence_sip_retransmissions_total{direction}``: requests received again for a live
  server transaction (``received``: the peer did not hear our answer in time), and requests or
  responses this server sent again on a timer (``sent``: Timer A, E, G).

Failed digest authentications go to the core's ``convergence_login_failures_total{protocol="sip"}``.
"""
from __future__ import annotations

from collections import defaultdict

from convergence.metrics import Collector, family

#: the transaction layer's count kinds → (metric, help, label)
FAMILIES = (
    ("request", "convergence_sip_requests_received", "SIP requests received, by method", "method"),
    ("response", "convergence_sip_responses_received", "SIP responses received, by class", "class"),
    ("answer", "convergence_sip_responses_sent", "SIP responses sent by this server's "
     "transactions, by class", "class"),
    ("retransmission", "convergence_sip_retransmissions", "SIP retransmissions: requests "
     "received again for a live transaction (received), messages sent again on a timer (sent)",
     "direction"),
)


class SipCollector(Collector):
    """The ``SipServer``'s figures (its location service and transaction layer)."""

    def collect(self):
        yield family("gauge", "convergence_sip_bindings", "Registered SIP bindings (RFC 3261 §10)",
                     len(self.source.location.by_uri))
        transactions = self.source.transactions
        yield family("gauge", "convergence_sip_transactions", "Live SIP transactions (RFC 3261 §17)",
                     ("kind", {"server": len(transactions.server), "client": len(transactions.client)}))
        counts = defaultdict(dict)
        for (kind, label), n in transactions.counts.items():
            counts[kind][f"{label}xx" if isinstance(label, int) else label] = n
        for kind, name, documentation, label in FAMILIES:
            yield family("counter", name, documentation, (label, counts[kind]))
