"""SASL server transcripts (RFC 6120 §6, RFC 5802, RFC 4616) against slixmpp's independent client."""
import base64

import pytest
from slixmpp.util.sasl import client

from convergence.credentials import derive
from convergence.plugins.xmpp import sasl

ACCOUNTS = {"juliet": derive("juliet", "example.org", "r0m30myr0m30")}


def lookup(name):
    return ACCOUNTS.get(name)


def slixmpp_client(mechanism, username, password, authzid=""):
    def credentials(required, optional):
        return {"username": username.encode(), "password": password.encode(),
                "authzid": authzid.encode(), "channel_binding": None}

    def security(values):
        return {"encrypted": True, "encrypted_plain": True, "unencrypted_scram": True,
                "tls_version": "TLSv1.3",
                "binding_proposed": False}
    return client.choose([mechanism], credentials, security)


def exchange(mechanism, username, password, authzid=""):
    """Run the whole exchange; returns the server's last step and whether the client accepted it."""
    mech = slixmpp_client(mechanism, username, password, authzid)
    server = sasl.server(mechanism, lookup, "example.org")
    step = server.step(mech.process(None))
    while isinstance(step, sasl.Challenge):
        step = server.step(mech.process(step.data))
    if isinstance(step, sasl.Success) and step.data:
        mech.process(step.data)  # raises SASLMutualAuthFailed if our server signature were wrong
    return step


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_right_password_succeeds(mechanism):
    step = exchange(mechanism, "juliet", "r0m30myr0m30")
    assert step == sasl.Success("juliet", step.data)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
@pytest.mark.parametrize("username, password", [("juliet", "wrong"), ("romeo", "r0m30myr0m30")])
def test_wrong_password_or_unknown_user_is_not_authorized(mechanism, username, password):
    assert exchange(mechanism, username, password).condition == "not-authorized"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_authzid_may_name_only_the_account_itself(mechanism):
    assert isinstance(exchange(mechanism, "juliet", "r0m30myr0m30", "juliet@example.org"), sasl.Success)
    step = exchange(mechanism, "juliet", "r0m30myr0m30", "romeo@example.org")
    assert step.condition == "invalid-authzid"


def test_unknown_user_gets_a_plausible_challenge():  # RFC 5802 §5.1: no account enumeration
    server = sasl.server("SCRAM-SHA-256", lookup, "example.org", b"k")
    first = server.step(b"n,,n=romeo,r=abc").data.decode()
    assert first.startswith("r=abc") and ",s=" in first and first.endswith(",i=4096")


@pytest.mark.parametrize("data, condition", [
    (b"x,,n=juliet,r=abc", "malformed-request"),
    (b"n,,r=abc", "malformed-request"),
    (b"p=tls-unique,,n=juliet,r=abc", "malformed-request"),
    (b"n,,n=jul=41iet,r=abc", "malformed-request"),
    (b"\xff\xfe", "incorrect-encoding"),
])
def test_malformed_client_first(data, condition):
    assert sasl.server("SCRAM-SHA-1", lookup, "example.org").step(data).condition == condition


def test_tampered_nonce_and_channel_binding_are_refused():
    for change in ({"r": "other"}, {"c": base64.b64encode(b"y,,").decode()}):
        server = sasl.server("SCRAM-SHA-256", lookup, "example.org")
        first = server.step(b"n,,n=juliet,r=abc").data.decode()
        nonce = first.split(",")[0][2:]
        attrs = {"c": "biws", "r": nonce, **change}
        final = f"c={attrs['c']},r={attrs['r']},p={base64.b64encode(bytes(32)).decode()}"
        assert server.step(final.encode()).condition == "malformed-request"


def test_plain_is_offered_only_when_encrypted():  # RFC 6120 §13.8
    assert sasl.mechanisms(encrypted=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert sasl.mechanisms(encrypted=True)[-1] == "PLAIN"
    assert sasl.server("DIGEST-MD5", lookup, "example.org") is None


@pytest.mark.parametrize("data", [b"", b"juliet\0r0m30myr0m30", b"a\0b\0c\0d"])
def test_plain_malformed_or_empty(data):
    step = sasl.server("PLAIN", lookup, "example.org").step(data)
    assert isinstance(step, sasl.Challenge) if not data else step.condition == "malformed-request"
