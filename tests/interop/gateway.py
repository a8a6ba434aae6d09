#!/usr/bin/env python3
"""A real gateway end to end (XEP-0114 external component): biboumi (the Debian
package, an XMPP-IRC gateway) connects to hearth as the component irc.localhost,
ngircd (Debian) is the IRC server on 127.0.0.1:6667, alice (slixmpp, a stock XMPP
client library) joins #chan%127.0.0.1@irc.localhost and a few lines of Python speak
IRC as ircbob in #chan. Checks, in order: the gateway in disco#items, the nick
list, a channel message each way, a private message each way, the IRC user leaving
seen as an occupant leaving.

Usage: python tests/interop/gateway.py [path/to/hearth]
Needs `biboumi` and `ngircd` on PATH; IRC port 6667 on 127.0.0.1 must be free
(biboumi tries the standard IRC ports). Prints one line per check and
'N passed, N failed'; exits non-zero on any failure.
"""

import asyncio
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from harness import TIMEOUT, Hearth, close, default_binary, online

GATEWAY = "irc.localhost"
SECRET = "biboumi interop secret"
IRC_HOST, IRC_PORT = "127.0.0.1", 6667
ROOM = f"#chan%{IRC_HOST}@{GATEWAY}"
IRC_NICK = "ircbob"


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, what, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Ngircd:
    """ngircd in the foreground on 127.0.0.1:6667 with its own config and pid file."""

    def __init__(self, workdir):
        self.conf = os.path.join(workdir, "ngircd.conf")
        with open(self.conf, "w") as f:
            f.write(
                "[Global]\nName = irc.test\nInfo = hearth gateway test\n"
                f"Listen = {IRC_HOST}\nPorts = {IRC_PORT}\n"
                f"PidFile = {workdir}/ngircd.pid\nMotdPhrase = hello\n"
                "[Limits]\nMaxConnectionsIP = 0\n"
                "[Options]\nPAM = no\nIdent = no\nDNS = no\n"
            )
        self.proc = None

    def start(self):
        with socket.socket() as s:
            if s.connect_ex((IRC_HOST, IRC_PORT)) == 0:
                raise RuntimeError(f"something already listens on {IRC_HOST}:{IRC_PORT}")
        self.proc = subprocess.Popen(["ngircd", "-n", "-f", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening():
            with socket.socket() as s:
                return s.connect_ex((IRC_HOST, IRC_PORT)) == 0
        wait_for(listening, "ngircd to listen")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Biboumi:
    """biboumi serving GATEWAY, connected to hearth's component port."""

    def __init__(self, workdir, port):
        self.workdir = workdir
        self.conf = os.path.join(workdir, "biboumi.cfg")
        self.log = os.path.join(workdir, "biboumi.log")
        with open(self.conf, "w") as f:
            f.write(
                f"hostname={GATEWAY}\npassword={SECRET}\nxmpp_server_ip=127.0.0.1\n"
                f"port={port}\nidentd_port=0\ndb_name={workdir}/biboumi.sqlite\n"
                f"log_file={self.log}\nlog_level=1\npolicy_directory={workdir}\n"
                "realname_customization=true\nrealname_from_jid=false\n"
            )
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["biboumi", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tail(self):
        try:
            with open(self.log) as f:
                return f.readlines()[-40:]
        except OSError:
            return []

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class IrcUser:
    """An IRC client in a few lines: registers, answers PINGs, queues every line."""

    def __init__(self, nick):
        self.nick = nick
        self.sock = socket.create_connection((IRC_HOST, IRC_PORT), timeout=TIMEOUT)
        self.sock.settimeout(None)  # the reader waits as long as the channel is quiet
        self.lines = queue.Queue()
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, line):
        self.sock.sendall((line + "\r\n").encode())

    def _read(self):
        buffer = b""
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                text = line.decode(errors="replace")
                if text.startswith("PING"):
                    self.send("PONG" + text[4:])
                self.lines.put(text)

    async def expect(self, predicate, what):
        """The next line satisfying `predicate` (a line split into words); the event loop
        (the XMPP client) goes on meanwhile."""
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.05)
                continue
            if predicate(line.split(" ")):
                return line
        raise AssertionError(f"IRC: no {what}")

    def close(self):
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()


async def next_stanza(q, predicate, what):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        stanza = await asyncio.wait_for(q.get(), max(0.1, deadline - time.time()))
        if predicate(stanza):
            return stanza
    raise AssertionError(f"XMPP: no {what}")


async def scenario(home, results):
    """The checks in order (each needs the ones before): one result line each."""
    irc = IrcUser(IRC_NICK)
    await irc.expect(lambda w: len(w) > 1 and w[1] == "001", "welcome (001)")
    irc.send("JOIN #chan")
    await irc.expect(lambda w: len(w) > 2 and w[1] == "JOIN", "JOIN echo")
    alice = await online(home, "alice", "gateway", plugins=("xep_0045",))
    alice.presences = asyncio.Queue()
    # Every presence from the rooms alice is in (XEP-0045's plugin claims them).
    alice.add_event_handler("groupchat_presence", lambda p: alice.presences.put_nowait(p))
    alice.groupchat = asyncio.Queue()
    alice.add_event_handler("groupchat_message", lambda m: alice.groupchat.put_nowait(m))
    occupant = f"{ROOM}/{IRC_NICK}"
    try:
        async def gateway_listed():
            items = await alice.plugin["xep_0030"].get_items(jid=home.domain, timeout=TIMEOUT)
            # (jid, node, name): listed with the name of the identity biboumi reports.
            named = {i[0]: i[2] for i in items["disco_items"]["items"]}
            assert "biboumi" in (named.get(GATEWAY) or "").lower(), named
        await results.check("gateway_in_disco_items", gateway_listed)

        async def nick_list():
            alice.plugin["xep_0045"].join_muc(ROOM, "alice")
            await next_stanza(alice.presences, lambda p: p["from"].full == occupant
                              and p["type"] != "unavailable", f"presence of {occupant}")
            await next_stanza(alice.presences, lambda p: p["from"].full == f"{ROOM}/alice"
                              and p["type"] != "unavailable", "own presence in the room")
            await irc.expect(lambda w: len(w) > 2 and w[1] == "JOIN" and w[0].startswith(":alice"),
                       "alice joining #chan")
        await results.check("nick_list", nick_list)

        async def channel_xmpp_to_irc():
            alice.send_message(mto=ROOM, mbody="hello from xmpp", mtype="groupchat")
            await irc.expect(lambda w: len(w) > 3 and w[0].startswith(":alice") and w[1] == "PRIVMSG"
                       and w[2] == "#chan" and " ".join(w[3:]) == ":hello from xmpp",
                       "alice's channel message")
        await results.check("channel_message_xmpp_to_irc", channel_xmpp_to_irc)

        async def channel_irc_to_xmpp():
            irc.send("PRIVMSG #chan :hello from irc")
            msg = await next_stanza(alice.groupchat, lambda m: m["body"] == "hello from irc",
                                    "the IRC user's channel message")
            assert msg["from"].full == occupant, msg
        await results.check("channel_message_irc_to_xmpp", channel_irc_to_xmpp)

        async def private_xmpp_to_irc():
            alice.send_message(mto=f"{IRC_NICK}%{IRC_HOST}@{GATEWAY}", mbody="psst from xmpp",
                               mtype="chat")
            await irc.expect(lambda w: len(w) > 3 and w[0].startswith(":alice") and w[1] == "PRIVMSG"
                       and w[2] == IRC_NICK and " ".join(w[3:]) == ":psst from xmpp",
                       "alice's private message")
        await results.check("private_message_xmpp_to_irc", private_xmpp_to_irc)

        async def private_irc_to_xmpp():
            irc.send("PRIVMSG alice :psst from irc")
            msg = await next_stanza(alice.inbox, lambda m: m["body"] == "psst from irc",
                                    "the IRC user's private message")
            assert msg["from"].domain == GATEWAY and IRC_NICK in str(msg["from"]), msg["from"]
        await results.check("private_message_irc_to_xmpp", private_irc_to_xmpp)

        async def irc_user_leaves():
            irc.send("PART #chan :gone")
            await next_stanza(alice.presences, lambda p: p["from"].full == occupant
                              and p["type"] == "unavailable", f"{occupant} leaving")
        await results.check("irc_user_leaving_is_an_occupant_leaving", irc_user_leaves)
    finally:
        irc.close()
        await close(alice)


class Results:
    def __init__(self):
        self.passed = self.failed = 0

    async def check(self, name, run):
        try:
            await asyncio.wait_for(run(), TIMEOUT * 2)
            print(f"ok   {name}")
            self.passed += 1
        except Exception as exc:  # report and go on
            here = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
            where = "".join(f"\n     line {f.lineno}: {f.line}" for f in here)
            print(f"FAIL {name}: {exc!r}{where}")
            self.failed += 1


def main():
    # GATEWAY_DEBUG=1: every stanza alice's client sends and gets.
    logging.basicConfig(level=logging.DEBUG if os.environ.get("GATEWAY_DEBUG") else logging.ERROR)
    args = sys.argv[1:]
    binary = args[0] if args else default_binary()
    for tool in ("biboumi", "ngircd"):
        if not shutil.which(tool):
            print(f"FAIL setup: {tool} is not installed")
            print("0 passed, 1 failed")
            sys.exit(1)
    workdir = tempfile.mkdtemp(prefix="hearth-gateway-")
    port = free_port("127.0.0.1")
    home = Hearth(binary, extra_config=(
        f'[component]\nlisten = ["127.0.0.1:{port}"]\n'
        f'[[components]]\ndomain = "{GATEWAY}"\nsecret = "{SECRET}"\n'))
    irc = Ngircd(workdir)
    gateway = Biboumi(workdir, port)
    results = Results()
    try:
        home.start()
        home.adduser("alice")
        irc.start()
        gateway.start()
        wait_for(lambda: any(f"component {GATEWAY}: connected" in line for line in home.log),
                 "biboumi to connect to hearth")
        asyncio.run(scenario(home, results))
    except Exception as exc:
        print(f"FAIL setup: {exc!r}")
        results.failed += 1
    finally:
        if results.failed:
            print("---- last lines of hearth's log")
            print("".join(home.log[-40:]))
            print("---- last lines of biboumi's log")
            print("".join(gateway.tail()))
        gateway.stop()
        irc.stop()
        home.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{results.passed} passed, {results.failed} failed")
    sys.exit(1 if results.failed else 0)


if __name__ == "__main__":
    main()
