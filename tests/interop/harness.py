"""What the interop scripts share: a real hearth process with a temporary data dir on
ephemeral ports, and slixmpp clients logged in to it (or to any server that offers the
same attributes: domain, cert, starttls, direct_tls).
"""

import asyncio
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

import slixmpp

PASSWORD = "interop secret"
TIMEOUT = 20


def default_binary():
    """HEARTH_BIN, else the debug build of this checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("HEARTH_BIN") or os.path.join(root, "target", "debug", "hearth")


class Hearth:
    """One hearth process with its own data dir and ports, serving `domain` on `host`.
    `extra_config` is TOML appended to the generated file (e.g. an `[s2s]` table)."""

    def __init__(self, binary, domain="localhost", host="127.0.0.1", extra_config=""):
        self.binary = binary
        self.domain = domain
        self.dir = tempfile.mkdtemp(prefix="hearth-interop-")
        self.config = os.path.join(self.dir, "hearth.toml")
        with open(self.config, "w") as f:
            f.write(
                f'domain = "{domain}"\ndata_dir = "{self.dir}/data"\n'
                f'[listen]\nstarttls = ["{host}:0"]\ndirect_tls = ["{host}:0"]\n'
                f'[upload]\nlisten = ["{host}:0"]\n[proxy]\nlisten = ["{host}:0"]\n'
                f'[stun]\nlisten = ["{host}:0"]\n' + extra_config
            )
        self.proc = None
        self.log = []
        # "listening for KIND on HOST:PORT" lines: KIND -> (host, port)
        self.listening = {}

    def start(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("hearth exited:\n" + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening for (\S+) on (\S+)", line)
            if m:
                self.listening[m.group(1)] = m.group(2).rsplit(":", 1)
            if " ready for " in line:
                break
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def starttls(self):
        return self.listening["starttls"]

    @property
    def direct_tls(self):
        return self.listening["direct-tls"]

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def adduser(self, user):
        subprocess.run(
            [self.binary, "adduser", f"{user}@{self.domain}", "--password-stdin", "--config", self.config],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def cert(self):
        return os.path.join(self.dir, "data", "tls", "cert.pem")


def make_client(server, user, resource, direct_tls=False):
    client = slixmpp.ClientXMPP(f"{user}@{server.domain}/{resource}", PASSWORD)
    context = ssl.create_default_context(cafile=server.cert)
    client.ssl_context = context
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    client.enable_plaintext = False
    client.register_plugin("xep_0030")
    client.register_plugin("xep_0199")
    client.register_plugin("xep_0203")
    client.register_plugin("xep_0191")
    return client


async def online(server, user, resource, direct_tls=False, presence=True, plugins=()):
    client = make_client(server, user, resource, direct_tls)
    for plugin in plugins:
        client.register_plugin(plugin)
    started = asyncio.get_running_loop().create_future()
    failed = lambda *_: started.done() or started.set_exception(RuntimeError(f"{user}: auth failed"))
    client.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    client.add_event_handler("failed_all_auth", failed)
    client.inbox = asyncio.Queue()
    client.add_event_handler("message", lambda msg: client.inbox.put_nowait(msg))
    client.errors = asyncio.Queue()
    client.add_event_handler("message_error", lambda msg: client.errors.put_nowait(msg))
    client.pushes = asyncio.Queue()
    client.add_event_handler("blocked", lambda iq: client.pushes.put_nowait(iq))
    host, port = server.direct_tls if direct_tls else server.starttls
    client.connect(host, int(port))
    await asyncio.wait_for(started, TIMEOUT)
    if presence:
        client.send_presence()
    return client


async def close(*clients):
    for c in clients:
        c.disconnect()
    await asyncio.sleep(0.2)
