"""sd_notify readiness (docs/deploy.md, Type=notify): ``serve`` sends READY=1 on $NOTIFY_SOCKET
once every listener accepts, and STOPPING=1 at SIGTERM; without the variable nothing is sent."""
import socket

from convergence.systemd import notify
from convergence.testing import free_port


def test_serve_tells_systemd_when_it_is_ready_and_when_it_stops(serve, tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # the server process inherits it
        process = serve({"http": {"listen": f"127.0.0.1:{free_port()}"},
                         "xmpp": {"listen": f"127.0.0.1:{free_port()}"},
                         "sip": {"listen": f"127.0.0.1:{free_port()}"}})
        assert systemd.recv(256) == b"READY=1"
        process.wait_for("convergence serving")  # logged just before it is sent
        assert process.stop() == 0
        assert systemd.recv(256) == b"STOPPING=1"


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(f"\0convergence-test-{id(tmp_path)}")
        assert notify("READY=1", {"NOTIFY_SOCKET": f"@convergence-test-{id(tmp_path)}"})
        assert systemd.recv(64) == b"READY=1"
    assert not notify("READY=1", {})  # not started by systemd: nothing to do
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})  # a warning, not an error
