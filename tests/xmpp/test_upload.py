"""HTTP File Upload (XEP-0363 v1.1): slots over XMPP (slixmpp over STARTTLS), PUT and GET over the
HTTP listener (urllib), through the helpers of ``upload_client``."""
from __future__ import annotations

import io
import os
import socket
import time
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from convergence.plugins.http.server import base_url
from convergence.plugins.http.uploads import PutRefused, Uploads, same_media_type, sanitise
from convergence.plugins.xmpp.stanzas import StanzaError
from convergence.plugins.xmpp.upload import parse_request
from .roster_client import condition, iq
from .upload_client import NS, http, put, request_slot

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DATA = "jabber:x:data"
ACCOUNTS = {"alice": "a", "bob": "b"}


def refusal(client, *args, **kwargs):
    with pytest.raises(IqError) as info:
        request_slot(client, *args, **kwargs)
    return info.value


def wait_for(predicate, timeout: float = 10, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


def uploads_dir(server) -> Path:
    return Path(server.config["server"]["data_dir"]) / "uploads"


def test_discovered_on_the_server_slot_put_once_and_fetched_by_another_user(xmpp_server, xmpp_client):
    server = xmpp_server(ACCOUNTS, upload_max_size=5000)
    alice, bob = xmpp_client(server, "alice"), xmpp_client(server, "bob")
    # §2: the server's disco#info names the service, its feature and the max-file-size form
    info = iq(alice, f"<query xmlns='{DISCO_INFO}'/>", to="example.org").xml.find(f"{{{DISCO_INFO}}}query")
    assert ("store", "file") in [(i.get("category"), i.get("type"))
                                 for i in info.findall(f"{{{DISCO_INFO}}}identity")]
    assert NS in [f.get("var") for f in info.findall(f"{{{DISCO_INFO}}}feature")]
    (form,) = [x for x in info.findall(f"{{{DATA}}}x")
               if x.find(f"{{{DATA}}}field[@var='FORM_TYPE']/{{{DATA}}}value").text == NS]
    assert form.find(f"{{{DATA}}}field[@var='max-file-size']/{{{DATA}}}value").text == "5000"

    data = bytes(range(256)) * 4
    put_url, headers, get_url = request_slot(alice, "../../etc/my holiday.png", len(data))
    assert put_url == get_url and get_url.startswith(server.http_url + "/upload/")
    assert get_url.endswith("/my_holiday.png")  # the path is gone, the space replaced
    assert set(headers) == {"Authorization"}
    # §5: the slot's token, exact size and type; nothing stored by a refused PUT
    assert put(put_url, data, {}) == 403
    assert put(put_url, data, {"Authorization": "Bearer nottheslotstoken"}) == 403
    assert put(put_url, data, headers, content_type="text/html") == 400
    assert put(put_url, data + b"x", headers) == 413
    assert put(put_url, data[:-1], headers) == 400
    assert http("GET", get_url)[0] == 404  # nothing uploaded yet
    assert put(put_url, data, headers) == 201
    assert put(put_url, data, headers) == 409  # single use
    (stored,) = uploads_dir(server).iterdir()  # named by the slot's random id only
    assert stored.name == get_url.split("/")[-2] and stored.read_bytes() == data

    status, got, body = http("GET", get_url)  # bob has only the URL
    assert status == 200 and body == data
    assert got["Content-Type"] == "image/png" and got["Content-Length"] == str(len(data))
    assert got["X-Content-Type-Options"] == "nosniff" and got["Access-Control-Allow-Origin"] == "*"
    assert got["Content-Disposition"] == "inline; filename=my_holiday.png"
    status, got, body = http("GET", get_url, headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and got["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert http("GET", get_url.rsplit("/", 1)[0] + "/other.png")[0] == 404
    assert http("GET", f"{server.http_url}/upload/{'A' * 5000}/x.png")[0] == 404
    assert put(f"{server.http_url}/upload/%2e%2e/x.png", data, headers) == 403
    status, got, body = http("HEAD", get_url)
    assert status == 200 and body == b"" and got["Content-Length"] == str(len(data))
    status, got, _ = http("OPTIONS", put_url)  # a browser's preflight (CORS)
    assert status == 204 and "PUT" in got["Access-Control-Allow-Methods"]
    assert "Authorization" in got["Access-Control-Allow-Headers"]

    # a page is downloaded, never shown on the server's origin; no declared type: octet-stream
    page = b"<script>alert(1)</script>"
    put_url, headers, get_url = request_slot(bob, "x.html", len(page), "text/html")
    assert put(put_url, page, headers, content_type="text/html; charset=UTF-8") == 400
    assert put(put_url, page, headers, content_type="TEXT/HTML") == 201
    status, got, _ = http("GET", get_url)
    assert got["Content-Disposition"].startswith("attachment") and "sandbox" in got["Content-Security-Policy"]
    put_url, headers, get_url = request_slot(bob, "notes", 3, None)
    assert put(put_url, b"abc", headers, content_type="") == 201
    assert http("GET", get_url)[1]["Content-Type"] == "application/octet-stream"


def test_size_quota_type_and_malformed_requests_are_refused_as_the_xep_says(xmpp_server, xmpp_client):
    server = xmpp_server(ACCOUNTS, upload_max_size=1000, upload_quota=1500,
                         upload_content_types=["image/png", "image/jpeg"])
    alice, bob = xmpp_client(server, "alice"), xmpp_client(server, "bob")
    error = refusal(alice, "big.png", 1001)  # §4 example 4: file too large
    assert condition(error) == "not-acceptable" and error.iq["error"]["type"] == "modify"
    too_large = error.iq.xml.find(f"{{jabber:client}}error/{{{NS}}}file-too-large")
    assert too_large.find(f"{{{NS}}}max-file-size").text == "1000"
    assert condition(refusal(alice, "a.txt", 10, "text/plain")) == "not-acceptable"
    for name, size, kind in (("", 10, "image/png"), ("a.png", "ten", "image/png"),
                             ("a.png", -1, "image/png"), ("a.png", 0, "image/png"),
                             ("a.png", 10, "image/png<"), ("a.png", "9" * 30, "image/png")):
        assert condition(refusal(alice, name, size, kind)) == "bad-request", (name, size, kind)
    put_url, headers, _ = request_slot(alice, "one.png", 800)  # an open slot counts
    error = refusal(alice, "two.png", 800)  # §4 example 5: quota reached
    assert condition(error) == "resource-constraint" and error.iq["error"]["type"] == "wait"
    assert put(put_url, b"p" * 800, headers) == 201  # the stored file counts too
    assert condition(refusal(alice, "two.png", 800)) == "resource-constraint"
    request_slot(alice, "small.png", 700)  # up to the quota exactly
    request_slot(bob, "two.png", 800)  # each account has its own
    with pytest.raises(IqError) as info:  # a slot is asked for with get (§4)
        iq(alice, f"<request xmlns='{NS}' filename='a.png' size='1'/>", type="set", to="example.org")
    assert condition(info.value) == "bad-request"
    assert alice.xmpp.is_connected() and bob.xmpp.is_connected()


def test_lapsed_slots_refused_and_expired_files_purged(convergence_server, xmpp_client):
    server = convergence_server(ACCOUNTS, xmpp={"upload_slot_timeout": 2.0, "upload_expiry": 0.00002},
                                http={"upload_purge_interval": 0.2, "body_timeout": 0.3,
                                      "upload_min_rate": 4})
    alice = xmpp_client(server, "alice")
    # a slow body (here 4 bytes over 0.6 s) has body_timeout + size / upload_min_rate seconds
    put_url, headers, slow = request_slot(alice, "slow.png", 4)
    path = urllib.parse.urlsplit(put_url).path
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     f"Authorization: {headers['Authorization']}\r\nContent-Length: 4\r\n\r\nsl"
                     .encode())
        time.sleep(0.6)  # longer than body_timeout: what is tested is the time allowed
        sock.sendall(b"ow")
        assert sock.recv(100).startswith(b"HTTP/1.1 201 ")
    assert http("GET", slow)[2] == b"slow"
    kept_url, kept_headers, kept = request_slot(alice, "kept.png", 4)
    lapsing_url, lapsing_headers, _ = request_slot(alice, "late.png", 4)
    assert put(kept_url, b"four", kept_headers) == 201
    assert http("GET", kept)[0] == 200
    # the slot lives upload_slot_timeout seconds (a wrong size is 400 until then, not using it);
    # then its PUT is forbidden, purged or not
    assert put(lapsing_url, b"two", lapsing_headers) == 400
    wait_for(lambda: put(lapsing_url, b"two", lapsing_headers) == 403)
    assert put(lapsing_url, b"four", lapsing_headers) == 403
    # upload_expiry (here 2 s): GET says 404 and the periodic purge deletes the file
    wait_for(lambda: not any(uploads_dir(server).iterdir()))
    assert http("GET", kept)[0] == 404


def test_no_upload_service_without_the_http_plugin(convergence_server, xmpp_client):
    server = convergence_server(ACCOUNTS, server={"disabled_plugins": ["http", "callback"]})
    alice = xmpp_client(server, "alice")
    info = iq(alice, f"<query xmlns='{DISCO_INFO}'/>", to="example.org").xml.find(f"{{{DISCO_INFO}}}query")
    assert NS not in [f.get("var") for f in info.findall(f"{{{DISCO_INFO}}}feature")]
    assert not info.findall(f"{{{DISCO_INFO}}}identity[@category='store']")
    assert condition(refusal(alice, "a.png", 1)) == "service-unavailable"


# ---- sans-IO: the pieces the scenarios rely on ------------------------------------------------

@pytest.mark.parametrize("given, kept", [
    ("photo.jpg", "photo.jpg"), ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\a b.png", "a_b.png"),
    ("..", "file"), ("", "file"), (".hidden", "hidden"), ("naïve café.txt", "naïve_café.txt"),
    ("a\x00b\r\n.txt", "a_b__.txt"), ("%2e%2e%2fx", "_2e_2e_2fx"), ("x" * 500 + ".jpeg", "x" * 95 + ".jpeg"),
    ("y" * 300, "y" * 100),
])
def test_file_names_are_sanitised(given, kept):
    assert sanitise(given) == kept


def test_sanitising_a_hostile_name_is_linear():
    started = time.perf_counter()
    assert len(sanitise("/" * 10 ** 6 + "a." * 10 ** 6)) == 100
    assert time.perf_counter() - started < 2


def test_request_parsing_and_media_types():
    request = ET.fromstring(f"<request xmlns='{NS}' filename='a.png' size='12' content-type='Image/PNG'/>")
    assert parse_request(request) == ("a.png", 12, "image/png")
    request.set("content-type", "text/plain; charset=UTF-8")
    assert parse_request(request)[2] == "text/plain; charset=utf-8"
    for bad in ("text", "text/plain;", "text/plain; charset", "a/b c", "x/y; a=b; <"):
        request.set("content-type", bad)
        with pytest.raises(StanzaError):
            parse_request(request)
    with pytest.raises(StanzaError):
        parse_request(ET.fromstring(f"<request xmlns='{NS}' filename='a' size='1e3'/>"))
    assert same_media_type("text/plain;charset=UTF-8", "text/plain; charset=utf-8")
    assert not same_media_type("text/plain", "text/html")


def test_public_url_from_the_listener_or_the_setting():
    settings = {"public_url": "", "listen": ("0.0.0.0", 8080)}
    assert base_url(settings, "example.org") == "http://example.org:8080"
    assert base_url({**settings, "listen": ("::1", 80)}, "example.org") == "http://[::1]:80"
    assert base_url({**settings, "public_url": "https://chat.example.org"}, "x") == "https://chat.example.org"


def test_store_purges_lapsed_slots_expired_files_and_files_of_deleted_accounts(core, tmp_path):
    """The HTTP half in process, on a clock of its own (no server, no waiting)."""
    clock = [datetime(2030, 1, 1)]
    store = Uploads(core.db, tmp_path / "uploads", "https://files.example.org/", now=lambda: clock[0])
    core.add_account("alice", "a")
    core.add_account("bob", "b")

    def upload(account, data, keep=0):
        slot = store.slot(account, "f.bin", len(data), None, quota=100, slot_timeout=60, keep_seconds=keep)
        assert slot.put.startswith("https://files.example.org/upload/")
        slot_id = slot.put.split("/")[-2]
        store.put(slot_id, slot.headers[0][1], len(data), None, io.BytesIO(data))
        return slot_id
    expiring, kept = upload("alice", b"x" * 10, keep=100), upload("alice", b"y" * 10)
    of_bob = upload("bob", b"z" * 10)
    lapsing = store.slot("alice", "never.bin", 70, None, quota=100, slot_timeout=60, keep_seconds=0)
    assert store.slot("alice", "more.bin", 11, None, quota=100, slot_timeout=60, keep_seconds=0) is None
    (store.directory / "0123.part").write_bytes(b"cut off")
    os.utime(store.directory / "0123.part", (0, 0))  # a crash long ago
    assert store.purge() == 1  # the old .part only
    clock[0] += timedelta(seconds=61)  # the slot lapsed: its 70 bytes no longer count
    assert store.slot("alice", "more.bin", 70, None, quota=100, slot_timeout=60, keep_seconds=0)
    with pytest.raises(PutRefused) as refused:
        store.put(lapsing.put.split("/")[-2], lapsing.headers[0][1], 70, None, io.BytesIO(b"n" * 70))
    assert refused.value.status == 403
    core.delete_account("bob")
    assert store.purge() == 2  # the lapsed slot's row, bob's orphaned file
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([expiring, kept])
    clock[0] += timedelta(seconds=40)
    assert store.file(expiring, "f.bin") is None and store.file(kept, "f.bin") is not None
    assert store.purge() == 1 and [p.name for p in store.directory.iterdir()] == [kept]
    assert store.file(of_bob, "f.bin") is None
