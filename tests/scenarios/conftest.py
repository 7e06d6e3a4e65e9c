"""Fixtures of the convergence scenarios: the demo server and ``sipuserf``'s phone."""
import pytest

from actors import ACCOUNTS, SIP, Phone
from sipp_runner import Sipp


@pytest.fixture
def demo(convergence_server):
    return convergence_server(ACCOUNTS, sip=SIP)


@pytest.fixture
def phone(demo, tmp_path):
    folder = tmp_path / "sipp"
    folder.mkdir()
    return Phone(Sipp(demo.sip_port, folder))
