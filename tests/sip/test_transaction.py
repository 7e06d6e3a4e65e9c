"""Transaction state machines (RFC 3261 §17, RFC 6026) driven by a fake clock."""
from dataclasses import dataclass

import pytest

from convergence.plugins.sip.transaction import (Deliver, Send, SendAck, Terminated, TimedOut,
                                                 Timing, Transaction)

RFC = Timing()  # the RFC 3261 Table 4 values: T1 = 0.5 s, T2 = 4 s, T4 = 5 s
T1, T2 = RFC.t1, RFC.t2


@dataclass(frozen=True)
class Req:
    method: str


@dataclass(frozen=True)
class Resp:
    status: int


def run_timers(tx, until):
    """Fire timers in order up to ``until``; returns [(time, effect), …]."""
    seen = []
    while tx.deadline is not None and tx.deadline <= until:
        at = tx.deadline
        seen += [(at, e) for e in tx.on_timer(at)]
    return seen


def test_nict_over_udp_retransmits_with_doubling_capped_at_t2_then_times_out():
    tx, effects = Transaction.client(Req("MESSAGE"), reliable=False, now=0, timing=RFC)
    assert effects == [Send(Req("MESSAGE"))]
    seen = run_timers(tx, 100)
    sends = [at for at, e in seen if isinstance(e, Send)]
    assert sends[:5] == [T1, 3 * T1, 7 * T1, 15 * T1, 15 * T1 + T2]  # E: 0.5, 1, 2, 4, 4 …
    assert seen[-2:] == [(64 * T1, TimedOut()), (64 * T1, Terminated())]  # Timer F = 32 s
    assert tx.state == "terminated" and tx.deadline is None


def test_nict_over_tcp_never_retransmits():
    tx, _ = Transaction.client(Req("MESSAGE"), reliable=True, now=0, timing=RFC)
    seen = run_timers(tx, 100)
    assert [e for _, e in seen] == [TimedOut(), Terminated()]


def test_nict_final_response_then_timer_k():
    tx, _ = Transaction.client(Req("MESSAGE"), reliable=False, now=0, timing=RFC)
    assert tx.on_response(Resp(100), 0.1) == [Deliver(Resp(100))]
    assert tx.on_response(Resp(200), 0.2) == [Deliver(Resp(200))]
    assert tx.on_response(Resp(200), 0.3) == []  # retransmitted final: absorbed in Completed
    assert run_timers(tx, 100) == [(0.2 + 5.0, Terminated())]  # Timer K = T4


def test_ict_non_2xx_is_acked_and_retransmissions_reacked():
    tx, _ = Transaction.client(Req("INVITE"), reliable=False, now=0, timing=RFC)
    assert tx.on_response(Resp(180), 0.1) == [Deliver(Resp(180))]
    assert tx.deadline is None  # Proceeding: no retransmissions, no Timer B
    assert tx.on_response(Resp(486), 1) == [Deliver(Resp(486)), SendAck(Resp(486))]
    assert tx.on_response(Resp(486), 2) == [SendAck(Resp(486))]
    assert run_timers(tx, 100) == [(33.0, Terminated())]  # Timer D = 32 s


def test_ict_timer_a_doubles_without_cap_until_b():
    tx, _ = Transaction.client(Req("INVITE"), reliable=False, now=0, timing=RFC)
    sends = [at for at, e in run_timers(tx, 100) if isinstance(e, Send)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # 6 retransmissions before Timer B (32 s)


def test_ict_2xx_goes_to_accepted_and_passes_retransmitted_2xx_up():  # RFC 6026
    tx, _ = Transaction.client(Req("INVITE"), reliable=False, now=0, timing=RFC)
    assert tx.on_response(Resp(200), 1) == [Deliver(Resp(200))]
    assert tx.on_response(Resp(200), 2) == [Deliver(Resp(200))]
    assert run_timers(tx, 100) == [(33.0, Terminated())]  # Timer M = 64*T1


def test_nist_absorbs_then_resends_last_response():
    tx, effects = Transaction.server(Req("REGISTER"), reliable=False, now=0, timing=RFC)
    assert effects == [Deliver(Req("REGISTER"))]
    assert tx.on_request(Req("REGISTER"), 0.1) == []  # Trying: absorbed, nothing to resend
    assert tx.send_response(Resp(401), 0.2) == [Send(Resp(401))]
    assert tx.on_request(Req("REGISTER"), 0.3) == [Send(Resp(401))]
    assert run_timers(tx, 100) == [(0.2 + 32.0, Terminated())]  # Timer J = 64*T1 over UDP


def test_nist_over_tcp_terminates_at_once():
    tx, _ = Transaction.server(Req("MESSAGE"), reliable=True, now=0, timing=RFC)
    assert tx.send_response(Resp(200), 0) == [Send(Resp(200)), Terminated()]


def test_ist_error_response_retransmitted_until_ack():
    tx, _ = Transaction.server(Req("INVITE"), reliable=False, now=0, timing=RFC)
    tx.send_response(Resp(100), 0)
    assert tx.on_request(Req("INVITE"), 0.1) == [Send(Resp(100))]
    assert tx.send_response(Resp(486), 1) == [Send(Resp(486))]
    seen = run_timers(tx, 3)
    assert [at for at, e in seen] == [1.5, 2.5]  # Timer G: T1, 2*T1 …
    assert tx.on_request(Req("ACK"), 3) == []
    assert tx.state == "confirmed"
    assert run_timers(tx, 100) == [(8.0, Terminated())]  # Timer I = T4


def test_ist_without_ack_times_out():
    tx, _ = Transaction.server(Req("INVITE"), reliable=True, now=0, timing=RFC)
    tx.send_response(Resp(500), 0)
    assert run_timers(tx, 100) == [(32.0, TimedOut()), (32.0, Terminated())]  # Timer H


@pytest.mark.parametrize("status", [200, 202])
def test_ist_2xx_goes_to_accepted(status):
    tx, _ = Transaction.server(Req("INVITE"), reliable=False, now=0, timing=RFC)
    assert tx.send_response(Resp(status), 0) == [Send(Resp(status))]
    assert tx.on_request(Req("INVITE"), 1) == []  # RFC 6026: retransmissions go to the core via the TU
    assert run_timers(tx, 100) == [(32.0, Terminated())]  # Timer L


def test_each_transaction_runs_on_its_own_timer_values():
    """T1 and T2 come with the transaction: two servers with different ``[sip] t1`` share the
    module, and neither changes the other's timers."""
    fast, _ = Transaction.client(Req("MESSAGE"), reliable=False, now=0,
                                 timing=Timing(t1=0.05, t2=0.4))
    slow, _ = Transaction.client(Req("MESSAGE"), reliable=False, now=0, timing=RFC)
    fast_sends = [at for at, e in run_timers(fast, 100) if isinstance(e, Send)]
    assert fast_sends[:5] == pytest.approx([0.05, 0.15, 0.35, 0.75, 1.15])  # capped at its T2
    assert fast.state == "terminated"  # Timer F = 64 * 0.05 s
    assert slow.timers == {"E": T1, "F": 64 * T1}
