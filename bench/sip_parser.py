"""SIP parser throughput: parses/s and serializations/s of plugins/sip/message.py (no sockets).

Run: python bench/sip_parser.py [--seconds S] [--compare OTHER_MESSAGE_PY]

Cases: (a) a typical 11-header REGISTER (what a registrar sees most), (b) a MESSAGE with a
100-byte text/plain body, (c) RFC 4475's ``wsinv`` torture message (folding, odd spacing, compact
forms; read from shared/rfc4475 beside the repository), plus ``make_response`` for the REGISTER.
Parsing means ``parse_datagram`` with all its validation. ``--compare`` loads another copy of the
module (say, the version before a change) and times both in the same process, interleaved, so that
a noisy machine affects both alike; the ratio column is this tree's rate over the other's.
"""
import argparse
import importlib.util
import sys
import time
from pathlib import Path

from convergence.plugins.sip import message as current

REPO = Path(__file__).resolve().parents[1]
TORTURE = REPO.parent / "shared" / "rfc4475"
ROUNDS = 4  # alternations per case with --compare

REGISTER = (b"REGISTER sip:example.org SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK776asdhds;rport\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: \"Alice\" <sip:alice@example.org>;tag=1928301774\r\n"
            b"To: <sip:alice@example.org>\r\n"
            b"Call-ID: a84b4c76e66710@192.0.2.7\r\n"
            b"CSeq: 314159 REGISTER\r\n"
            b"Contact: <sip:alice@192.0.2.7:5062;transport=udp>;expires=3600\r\n"
            b"Expires: 3600\r\n"
            b"User-Agent: Convergence-Bench/1.0\r\n"
            b"Content-Length: 0\r\n\r\n")

TEXT = b"x" * 90 + b" 0123456\r\n"  # 100 bytes
MESSAGE = (b"MESSAGE sip:bob@example.org SIP/2.0\r\n"
           b"Via: SIP/2.0/TCP 192.0.2.7:5062;branch=z9hG4bK776asdhdt\r\n"
           b"Max-Forwards: 70\r\n"
           b"From: <sip:alice@example.org>;tag=49583\r\n"
           b"To: <sip:bob@example.org>\r\n"
           b"Call-ID: asd88asd77a@192.0.2.7\r\n"
           b"CSeq: 1 MESSAGE\r\n"
           b"Content-Type: text/plain\r\n"
           b"Content-Length: %d\r\n\r\n" % len(TEXT) + TEXT)


def load(path: str):
    """Another copy of message.py, imported under its own name."""
    spec = importlib.util.spec_from_file_location("sip_message_compared", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cases(module):
    """(label, zero-argument callable) pairs timed for one copy of the module."""
    parse = module.parse_datagram
    wsinv = (TORTURE / "wsinv.dat").read_bytes()
    register, message, torture = parse(REGISTER), parse(MESSAGE), parse(wsinv)
    return [
        ("parse REGISTER", lambda: parse(REGISTER)),
        ("serialize REGISTER", register.serialize),
        ("parse MESSAGE (100-byte body)", lambda: parse(MESSAGE)),
        ("serialize MESSAGE", message.serialize),
        ("parse wsinv (RFC 4475)", lambda: parse(wsinv)),
        ("serialize wsinv", torture.serialize),
        ("make_response 200 to REGISTER",
         lambda: module.make_response(register, 200, to_tag="srv1", headers=[("Expires", "3600")])),
    ]


def rate(fn, seconds: float) -> float:
    """Calls per second: batches of calls until ``seconds`` have gone by."""
    batch, calls, elapsed = 100, 0, 0.0
    while elapsed < seconds:
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        elapsed += time.perf_counter() - started
        calls += batch
    return calls / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case (default 1)")
    parser.add_argument("--compare", metavar="MESSAGE_PY",
                        help="another copy of plugins/sip/message.py to time alongside")
    args = parser.parse_args()
    mine = cases(current)
    if not args.compare:
        for label, fn in mine:
            print(f"{label:<32} {rate(fn, args.seconds):>10,.0f} /s")
        return
    other = cases(load(args.compare))
    print(f"{'':<32} {'compared':>10} {'this tree':>10} {'ratio':>7}")
    for (label, fn), (_, before) in zip(mine, other):
        old = new = 0.0
        for _ in range(ROUNDS):  # interleaved: drift on a noisy machine hits both sides alike
            old += rate(before, args.seconds / ROUNDS) / ROUNDS
            new += rate(fn, args.seconds / ROUNDS) / ROUNDS
        print(f"{label:<32} {old:>10,.0f} {new:>10,.0f} {new / old:>6.2f}x")


if __name__ == "__main__":
    main()
