#!/usr/bin/env python3
"""Federation interop: hearth (hearth.test on 127.0.0.2) and a real Prosody 0.12
(prosody.test on 127.0.0.3) exchange stanzas over server-to-server streams, each
with its own self-signed certificate (so: STARTTLS, then Server Dialback).

Usage: python tests/interop/federation.py [path/to/hearth]
       python tests/interop/federation.py --prosody-pair   (a second Prosody serves
         hearth.test: checks the harness itself, without hearth)
(FEDERATION_ONLY=NAME runs one check; FEDERATION_LOGS=DIR keeps both servers' logs there)

No DNS, no /etc/hosts: hearth reaches Prosody by a static route in its config
([s2s.routes]); Prosody, which resolves through libunbound, is pointed by its
`unbound = { forward = ... }` option at a tiny DNS server this script runs on
127.0.0.3, answering SRV _xmpp-server._tcp.hearth.test (and rooms.hearth.test)
with hearth's ephemeral s2s port. Every port is picked at run time. Prints one
line per check and 'N passed, N failed'; exits non-zero on any failure.
"""

import asyncio
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import slixmpp

from harness import PASSWORD, TIMEOUT, Hearth, close, default_binary, online

HOME, HOME_HOST = "hearth.test", "127.0.0.2"
PEER, PEER_HOST = "prosody.test", "127.0.0.3"


def free_port(host):
    """A TCP port free on `host` right now (Prosody's config needs numbers up front)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host, port, proc, what):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {host}:{port}")


class Dns:
    """An authoritative-only DNS server on UDP (RFC 1035 §4): answers the A and SRV
    records in `records` ({(name, type): [rdata]}), NOERROR with no answer for other
    types of a known name, NXDOMAIN otherwise. Enough for libunbound's forward mode."""

    A, AAAA, SRV = 1, 28, 33

    def __init__(self, host):
        self.records = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = self.sock.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def name(domain):
        return b"".join(bytes([len(p)]) + p.encode() for p in domain.split(".")) + b"\0"

    def add_a(self, domain, ip):
        self.records.setdefault((domain, self.A), []).append(socket.inet_aton(ip))

    def add_srv(self, service, domain, target, port):
        rdata = struct.pack("!HHH", 0, 0, port) + self.name(target)
        self.records.setdefault((f"{service}.{domain}", self.SRV), []).append(rdata)

    def _serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
                self.sock.sendto(self._answer(query), peer)
            except OSError:
                return
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # not a query we understand: no answer

    def _answer(self, query):
        ident, flags = struct.unpack("!HH", query[:4])
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1:at + 1 + query[at]].decode().lower())
            at += 1 + query[at]
        qtype, _qclass = struct.unpack("!HH", query[at + 1:at + 5])
        question = query[12:at + 5]
        domain = ".".join(labels)
        known = any(name == domain for name, _ in self.records)
        answers = self.records.get((domain, qtype), [])
        rcode = 0 if known else 3
        # QR, AA, RD copied from the query, RA; no EDNS in the answer.
        head = struct.pack("!HHHHHH", ident, 0x8400 | (flags & 0x0100) | 0x0080 | rcode,
                           1, len(answers), 0, 0)
        body = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(r)) + r for r in answers)
        return head + question + body

    def close(self):
        self.sock.close()


class Prosody:
    """One Prosody with its own config, certificate, data and log in a temp dir,
    serving `domain` (and the chat-room component rooms.`domain`) on `host`."""

    def __init__(self, domain, host, dns):
        self.domain, self.host = domain, host
        self.muc_domain = f"rooms.{domain}"
        self.dir = tempfile.mkdtemp(prefix="prosody-interop-")
        self.c2s_port, self.s2s_port = free_port(host), free_port(host)
        self.starttls = (host, self.c2s_port)
        self.direct_tls = None
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        self.log_file = os.path.join(self.dir, "prosody.log")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={domain}",
             "-addext", f"subjectAltName=DNS:{domain},DNS:{self.muc_domain}",
             "-keyout", self.key, "-out", self.cert],
            check=True, capture_output=True,
        )
        ssl = f'{{ certificate = "{self.cert}"; key = "{self.key}" }}'
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        with open(self.config, "w") as f:
            f.write(f"""
-- Prosody started as root keeps running as root (it is a throwaway test instance).
run_as_root = true
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
certificates = "{self.dir}"  -- the ssl options below name the files; this only stops a search
log = {{ debug = "{self.log_file}" }}
interfaces = {{ "{host}" }}
local_interfaces = {{ "{host}" }}
c2s_ports = {{ {self.c2s_port} }}
s2s_ports = {{ {self.s2s_port} }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
s2s_timeout = {TIMEOUT}
use_ipv6 = false
-- No system resolver: every lookup goes to the test's DNS server.
unbound = {{
    resolvconf = false; hoststxt = false; forward = "{dns.address[0]}@{dns.address[1]}";
    -- unbound answers names under .test itself (NXDOMAIN, RFC 6761 §6.2); "transparent"
    -- makes it ask the forwarder (set_option cannot take "nodefault").
    options = {{ ["local-zone:"] = "test. transparent" }};
}}
ssl = {ssl}

VirtualHost "{domain}"
    ssl = {ssl}

Component "{self.muc_domain}" "muc"
    ssl = {ssl}
""")
        self.proc = None

    def prosodyctl(self, *args):
        subprocess.run(["prosodyctl", "--config", self.config, *args],
                       check=True, capture_output=True, text=True)

    def adduser(self, user):
        self.prosodyctl("register", user, self.domain, PASSWORD)

    def start(self):
        with open(os.path.join(self.dir, "stdout.log"), "w") as out:
            self.proc = subprocess.Popen(["prosody", "--config", self.config, "-F"],
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_listening(self.host, self.c2s_port, self.proc, "prosody")
        wait_listening(self.host, self.s2s_port, self.proc, "prosody")
        if any("Using legacy DNS API" in line for line in self.log):
            raise RuntimeError("Prosody runs without lua-unbound: it would ignore the test's DNS server")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log(self):
        try:
            with open(self.log_file) as f:
                return f.readlines()
        except OSError:
            return []


def publish(dns, domain, host, s2s_port):
    """The records a peer needs to find `domain` and its room service at host:s2s_port
    (RFC 6120 §3.2.1: SRV _xmpp-server._tcp, then the target's A record)."""
    dns.add_a(domain, host)
    for name in (domain, f"rooms.{domain}"):
        dns.add_srv("_xmpp-server._tcp", name, domain, s2s_port)


# ---------------------------------------------------------------- checks


async def both_online(home, peer, **kwargs):
    alice = await online(home, "alice", "desk", **kwargs)
    bob = await online(peer, "bob", "laptop", **kwargs)
    for client in (alice, bob):
        client.presences = asyncio.Queue()
        client.add_event_handler("presence", lambda p, c=client: c.presences.put_nowait(p))
    return alice, bob


async def next_presence(client, sender, matches):
    """The next presence from `sender` (a full or bare JID) for which `matches(p)`."""
    while True:
        pres = await asyncio.wait_for(client.presences.get(), TIMEOUT)
        if sender in (pres["from"].full, pres["from"].bare) and matches(pres):
            return pres


async def check_message_both_ways(home, peer):
    """RFC 6121 §5: a chat message crosses in each direction, from the sender's full JID."""
    alice, bob = await both_online(home, peer)
    alice.send_message(mto=f"bob@{peer.domain}", mbody="hello from hearth", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    assert msg["body"] == "hello from hearth", msg
    assert msg["type"] == "chat", msg
    assert msg["from"].full == alice.boundjid.full, msg["from"]
    bob.send_message(mto=alice.boundjid.full, mbody="hello from prosody", mtype="chat")
    msg = await asyncio.wait_for(alice.inbox.get(), TIMEOUT)
    assert msg["body"] == "hello from prosody", msg
    assert msg["from"].full == bob.boundjid.full, msg["from"]
    await close(alice, bob)


async def check_directed_presence(home, peer):
    """RFC 6121 §4.6: available presence directed at bob crosses without a subscription,
    and when alice goes offline her server sends bob her unavailable presence. (Runs
    before the subscription check: afterwards bob would get it as a subscriber.)"""
    alice, bob = await both_online(home, peer)
    alice.send_presence(pto=bob.boundjid.full, pstatus="directed")
    pres = await next_presence(bob, alice.boundjid.full, lambda p: p["status"] == "directed")
    assert pres["type"] == "available", pres
    alice.disconnect()
    await next_presence(bob, alice.boundjid.full, lambda p: p["type"] == "unavailable")
    await close(bob)


async def roster_item(client, jid):
    """`jid`'s item on the roster as the server returns it now (RFC 6121 §2.1.3)."""
    query = client.Iq(stype="get")
    query.enable("roster")
    items = (await query.send(timeout=TIMEOUT))["roster"]["items"]
    return items.get(slixmpp.JID(jid), {})


async def check_subscription_and_presence(home, peer):
    """RFC 6121 §3 across servers: alice subscribes to bob, bob approves and subscribes
    back, alice approves; both rosters say `both`. Then §4: each sees the other's
    available presence, and alice going offline reaches bob as unavailable."""
    alice, bob = await both_online(home, peer)
    alice_jid, bob_jid = alice.boundjid.bare, bob.boundjid.bare
    asked = {c: asyncio.Queue() for c in (alice, bob)}
    for client in (alice, bob):
        client.auto_authorize = None  # answered by hand below
        client.auto_subscribe = False
        client.add_event_handler("presence_subscribe", lambda p, c=client: asked[c].put_nowait(p))
        await client.get_roster(timeout=TIMEOUT)
    alice.send_presence_subscription(pto=bob_jid)
    # §3.1.3: the request arrives from the user's bare JID.
    request = await asyncio.wait_for(asked[bob].get(), TIMEOUT)
    assert request["from"].full == alice_jid, request
    bob.send_presence(pto=alice_jid, ptype="subscribed")
    bob.send_presence_subscription(pto=alice_jid)
    request = await asyncio.wait_for(asked[alice].get(), TIMEOUT)
    assert request["from"].full == bob_jid, request
    alice.send_presence(pto=bob_jid, ptype="subscribed")
    deadline = time.time() + TIMEOUT
    while True:
        seen = ((await roster_item(alice, bob_jid)).get("subscription"),
                (await roster_item(bob, alice_jid)).get("subscription"))
        if seen == ("both", "both"):
            break
        assert time.time() < deadline, f"subscriptions (alice's item, bob's item): {seen}"
        await asyncio.sleep(0.2)
    # A fresh broadcast from each side, told apart by its status.
    alice.send_presence(pstatus="alice here")
    bob.send_presence(pstatus="bob here")
    pres = await next_presence(bob, alice.boundjid.full, lambda p: p["status"] == "alice here")
    assert pres["type"] == "available", pres
    pres = await next_presence(alice, bob.boundjid.full, lambda p: p["status"] == "bob here")
    assert pres["type"] == "available", pres
    alice.disconnect()
    await next_presence(bob, alice.boundjid.full, lambda p: p["type"] == "unavailable")
    await close(bob)


async def room_round(owner, guest, room):
    """`owner` creates `room` (local to it) and unlocks it, `guest` (from the other
    server) joins; each sees the other as occupant and gets the other's groupchat."""
    for client in (owner, guest):
        client.register_plugin("xep_0045")
        client.groupchat = asyncio.Queue()
        client.add_event_handler("groupchat_message", lambda m, c=client: c.groupchat.put_nowait(m))
        # slixmpp's MUC plugin takes room presence away from the "presence" event.
        client.add_event_handler("groupchat_presence", lambda p, c=client: c.presences.put_nowait(p))
    muc = owner.plugin["xep_0045"]
    await muc.join_muc_wait(room, "owner", timeout=TIMEOUT)
    form = await muc.get_room_config(room, timeout=TIMEOUT)
    await muc.set_room_config(room, form, timeout=TIMEOUT)
    _own, _subject, occupants, _history = await guest.plugin["xep_0045"].join_muc_wait(
        room, "guest", timeout=TIMEOUT)
    assert "owner" in {p["from"].resource for p in occupants}, occupants
    await next_presence(owner, f"{room}/guest", lambda p: p["type"] == "available")
    guest.send_message(mto=room, mbody="hello room", mtype="groupchat")
    while (msg := await asyncio.wait_for(owner.groupchat.get(), TIMEOUT))["body"] != "hello room":
        pass
    assert msg["from"].full == f"{room}/guest", msg
    owner.send_message(mto=room, mbody="welcome", mtype="groupchat")
    while (msg := await asyncio.wait_for(guest.groupchat.get(), TIMEOUT))["body"] != "welcome":
        pass
    assert msg["from"].full == f"{room}/owner", msg


async def check_room_on_peer(home, peer):
    """XEP-0045 §7.2: alice (hearth) joins a room on Prosody's room service."""
    alice, bob = await both_online(home, peer)
    await room_round(bob, alice, f"fromhearth@{peer.muc_domain}")
    await close(alice, bob)


async def check_room_on_home(home, peer):
    """XEP-0045 §7.2: bob (Prosody) joins a room on hearth's room service."""
    alice, bob = await both_online(home, peer)
    await room_round(alice, bob, f"fromprosody@{home.muc_domain}")
    await close(alice, bob)


async def check_iq_across(home, peer):
    """XEP-0199 ping and XEP-0030 disco#info of the other server, both ways."""
    alice, bob = await both_online(home, peer)
    for client, server in ((alice, peer), (bob, home)):
        rtt = await client.plugin["xep_0199"].ping(server.domain, timeout=TIMEOUT)
        assert rtt is not None
        info = (await client.plugin["xep_0030"].get_info(jid=server.domain, timeout=TIMEOUT))["disco_info"]
        assert "urn:xmpp:ping" in info["features"], info["features"]
        assert ("server", "im") in [(i[0], i[1]) for i in info["identities"]], info["identities"]
    await close(alice, bob)


CHECKS = [
    check_message_both_ways,
    check_directed_presence,
    check_subscription_and_presence,
    check_room_on_peer,
    check_room_on_home,
    check_iq_across,
]


def main():
    logging.basicConfig(level=logging.ERROR)
    args = sys.argv[1:]
    dns = Dns(PEER_HOST)
    peer = Prosody(PEER, PEER_HOST, dns)
    publish(dns, PEER, PEER_HOST, peer.s2s_port)
    if "--prosody-pair" in args:
        home = Prosody(HOME, HOME_HOST, dns)
        home_s2s = home.s2s_port
    else:
        binary = args[0] if args else default_binary()
        home = Hearth(binary, domain=HOME, host=HOME_HOST, extra_config=(
            f'[s2s]\nenabled = true\nlisten = ["{HOME_HOST}:0"]\n[s2s.routes]\n'
            f'"{PEER}" = "{PEER_HOST}:{peer.s2s_port}"\n'
            f'"{peer.muc_domain}" = "{PEER_HOST}:{peer.s2s_port}"\n'))
        home.muc_domain = f"rooms.{HOME}"
        home_s2s = None
    passed = failed = 0
    try:
        home.start()
        if home_s2s is None:
            if "s2s" not in home.listening:
                raise RuntimeError("hearth logged no 'listening for s2s on …' line:\n" + "".join(home.log))
            home_s2s = int(home.listening["s2s"][1])
        publish(dns, HOME, HOME_HOST, home_s2s)
        home.adduser("alice")
        peer.adduser("bob")
        peer.start()
        only = os.environ.get("FEDERATION_ONLY")
        for check in CHECKS:
            name = check.__name__.removeprefix("check_")
            if only and name != only:
                continue
            try:
                asyncio.run(asyncio.wait_for(check(home, peer), TIMEOUT * 4))
                print(f"ok   {name}")
                passed += 1
            except Exception as exc:  # report and go on with the next check
                here = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
                where = "".join(f"\n     line {f.lineno}: {f.line}" for f in here)
                print(f"FAIL {name}: {exc!r}{where}")
                failed += 1
    finally:
        if failed:
            print(f"---- last lines of {HOME}'s log")
            print("".join(home.log[-60:]))
            print(f"---- last s2s lines of {PEER}'s log")
            print("".join([line for line in peer.log if "s2s" in line][-60:]))
        if keep := os.environ.get("FEDERATION_LOGS"):
            os.makedirs(keep, exist_ok=True)
            for server in (home, peer):
                with open(os.path.join(keep, f"{server.domain}.log"), "w") as f:
                    f.writelines(server.log)
        home.stop()
        peer.stop()
        dns.close()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
