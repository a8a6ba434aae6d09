#!/usr/bin/env python3
"""The client side of .ci/systemd-boot: slixmpp against hearth running under
systemd in a container (sharing the host's loopback), as a user would use it.

Usage: boot_check.py ROOT   (ROOT: the container's root directory)
alice logs in on 127.0.0.1:5222 (domain raspberrypi.local, the shipped
systemd/hearth.toml), sends bob (offline) a message, asks the container for
`systemctl reload hearth` and checks that her session survives it; then bob
logs in and must get the message. Exits non-zero on any failure.
"""

import asyncio
import os
import ssl
import sys

import slixmpp

DOMAIN = "raspberrypi.local"
PASSWORD = "boot check secret"
TIMEOUT = 30


async def online(root, user):
    client = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/boot", PASSWORD)
    cert = os.path.join(root, "var/lib/private/hearth/tls/cert.pem")
    client.ssl_context = ssl.create_default_context(cafile=cert)
    client.enable_plaintext = False
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.register_plugin("xep_0199")
    started = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    client.add_event_handler(
        "failed_all_auth",
        lambda *_: started.done() or started.set_exception(RuntimeError(f"{user}: auth failed")),
    )
    client.inbox = asyncio.Queue()
    client.add_event_handler("message", lambda msg: client.inbox.put_nowait(msg))
    client.disconnects = 0
    client.add_event_handler("disconnected", lambda _: setattr(client, "disconnects", client.disconnects + 1))
    client.connect("127.0.0.1", 5222)
    await asyncio.wait_for(started, TIMEOUT)
    client.send_presence()
    return client


async def wait_for_file(path):
    for _ in range(TIMEOUT * 10):
        if os.path.exists(path):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{path} did not appear")


async def main(root):
    alice = await online(root, "alice")
    alice.send_message(mto=f"bob@{DOMAIN}", mbody="sent before the reload", mtype="chat")
    await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    open(os.path.join(root, "root/reload-now"), "w").close()
    await wait_for_file(os.path.join(root, "root/reloaded"))
    # The same session, not a reconnection, answers after the reload.
    await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert alice.disconnects == 0, "alice's session was dropped by the reload"
    alice.send_message(mto=f"bob@{DOMAIN}", mbody="sent after the reload", mtype="chat")
    await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    bob = await online(root, "bob")
    bodies = []
    for _ in range(2):
        msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
        bodies.append(msg["body"])
    assert bodies == ["sent before the reload", "sent after the reload"], bodies
    for client in (alice, bob):
        client.disconnect()
    await asyncio.sleep(0.2)
    print("boot check client: login, offline delivery and a session kept across reload: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
