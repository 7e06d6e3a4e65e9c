"""The XEP-0363 upload purge runs on one process of a cluster at a time (docs/cluster.md, "Files
in data_dir"; plugins/http/server.py): the first node to ask holds the name
``http.upload:purge``, the others leave the purge to it; once it is lost the next one to ask
takes the purge over, and purges."""
from __future__ import annotations

import signal

from ..xmpp.upload_client import request_slot

ACCOUNTS = {"alice": "a"}
QUICK = {"http": {"upload_purge_interval": 0.2}, "xmpp": {"upload_slot_timeout": 1.0}}


def test_one_node_purges_and_another_takes_over_when_it_dies(node, xmpp_client):
    a = node("node-a", ACCOUNTS, **QUICK)
    a.process.wait_for("uploads: this node purges the cluster's uploads (http.upload:purge)")
    b = node("node-b", **QUICK)
    b.passwords.update(ACCOUNTS)
    b.process.wait_for("uploads: node node-a purges the cluster's uploads")
    mark = len(b.process.output)

    a.process.proc.send_signal(signal.SIGKILL)
    a.process.proc.wait()
    b.process.wait_for("uploads: this node purges the cluster's uploads", timeout=10, start=mark)
    assert not any("this node purges" in line for line in b.process.output[:mark])
    request_slot(xmpp_client(b, "alice"), "never.png", 4)  # never PUT: lapses after 1 s
    b.process.wait_for("uploads: purged 1 lapsed slots and expired files", timeout=10, start=mark)
