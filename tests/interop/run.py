#!/usr/bin/env python3
"""Interoperability tests: slixmpp (a real client library, from PyPI)
against the real hearth binary on loopback.

Usage: python tests/interop/run.py [path/to/hearth]
(HEARTH_INTEROP_ONLY=NAME runs one scenario)
Starts hearth with a temporary data dir on ephemeral ports, adds accounts
with `hearth adduser`, then runs each scenario; prints
'N passed, N failed' and exits non-zero on any failure.
"""

import asyncio
import logging
import os
import ssl
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

import slixmpp

from harness import TIMEOUT, Hearth, close, default_binary, make_client, online

DOMAIN = "localhost"


async def scenario_starttls_scram_ping_disco(server):
    alice = await online(server, "alice", "starttls")
    assert alice.boundjid.full == f"alice@{DOMAIN}/starttls", alice.boundjid
    rtt = await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert rtt is not None
    info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    assert "urn:xmpp:ping" in features, features
    assert ("server", "im", None, "hearth") in info["disco_info"]["identities"], info["disco_info"]["identities"]
    await close(alice)


async def scenario_direct_tls_login(server):
    alice = await online(server, "alice", "direct", direct_tls=True)
    rtt = await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert rtt is not None
    await close(alice)


async def scenario_chat(server):
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    await asyncio.sleep(0.2)
    alice.send_message(mto=f"bob@{DOMAIN}", mbody="hello bob", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    assert msg["body"] == "hello bob", msg
    assert msg["from"].full == f"alice@{DOMAIN}/a", msg["from"]
    await close(alice, bob)


async def scenario_offline_delivery(server):
    alice = await online(server, "alice", "a2")
    alice.send_message(mto=f"carol@{DOMAIN}", mbody="while you were out", mtype="chat")
    await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    carol = await online(server, "carol", "c")
    msg = await asyncio.wait_for(carol.inbox.get(), TIMEOUT)
    assert msg["body"] == "while you were out", msg
    assert msg["delay"]["stamp"] is not None, msg
    await close(alice, carol)


async def scenario_blocking(server):
    alice = await online(server, "alice", "blocker")
    bob = await online(server, "bob", "blocked")
    await alice.plugin["xep_0191"].block(f"bob@{DOMAIN}", timeout=TIMEOUT)
    push = await asyncio.wait_for(alice.pushes.get(), TIMEOUT)
    assert [item["jid"] for item in push["block"]] == [f"bob@{DOMAIN}"], push
    blocked = await alice.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT)
    assert blocked == {slixmpp.JID(f"bob@{DOMAIN}")}, blocked
    bob.send_message(mto=f"alice@{DOMAIN}", mbody="let me in", mtype="chat")
    error = await asyncio.wait_for(bob.errors.get(), TIMEOUT)
    assert error["error"]["condition"] == "service-unavailable", error
    assert alice.inbox.empty(), alice.inbox
    await alice.plugin["xep_0191"].unblock(f"bob@{DOMAIN}", timeout=TIMEOUT)
    bob.send_message(mto=f"alice@{DOMAIN}", mbody="thanks", mtype="chat")
    msg = await asyncio.wait_for(alice.inbox.get(), TIMEOUT)
    assert msg["body"] == "thanks", msg
    await close(alice, bob)


async def next_presence(client, sender, ptype):
    """Waits for a presence of `ptype` ('away', 'unavailable', …) from `sender`'s bare JID."""
    while True:
        pres = await asyncio.wait_for(client.presences.get(), TIMEOUT)
        if pres["from"].bare == sender and pres["type"] == ptype:
            return pres


async def scenario_mutual_subscription_presence(server):
    dave = await online(server, "dave", "d")
    erin = await online(server, "erin", "e")
    for client in (dave, erin):
        client.auto_authorize = True
        client.auto_subscribe = True
        client.presences = asyncio.Queue()
        client.add_event_handler("presence", lambda p, c=client: c.presences.put_nowait(p))
        await client.get_roster(timeout=TIMEOUT)
    dave_jid, erin_jid = f"dave@{DOMAIN}", f"erin@{DOMAIN}"
    dave.send_presence_subscription(pto=erin_jid)
    deadline = time.time() + TIMEOUT
    while not (
        dave.client_roster[erin_jid]["subscription"] == "both"
        and erin.client_roster[dave_jid]["subscription"] == "both"
    ):
        assert time.time() < deadline, (
            dave.client_roster[erin_jid]["subscription"],
            erin.client_roster[dave_jid]["subscription"],
        )
        await asyncio.sleep(0.05)
    dave.send_presence(pshow="away", pstatus="brb")
    pres = await next_presence(erin, dave_jid, "away")
    assert pres["status"] == "brb", pres
    erin.send_presence(pshow="away")
    await next_presence(dave, erin_jid, "away")
    erin.disconnect()
    pres = await next_presence(dave, erin_jid, "unavailable")
    assert pres["from"].full == f"{erin_jid}/e", pres
    await close(dave)


async def scenario_pre_approval(server):
    """RFC 6121 §3.4 as slixmpp sees it: the feature is offered, a pre-approval is kept on
    hana's roster item, and ivan's later request is approved without asking hana."""
    hana = await online(server, "hana", "h")
    ivan = await online(server, "ivan", "i")
    assert "preapproval" in hana.features, hana.features
    hana_jid, ivan_jid = f"hana@{DOMAIN}", f"ivan@{DOMAIN}"
    hana.asked = []
    hana.add_event_handler("presence_subscribe", lambda p: hana.asked.append(p))
    for client in (hana, ivan):
        await client.get_roster(timeout=TIMEOUT)
    hana.send_presence(pto=ivan_jid, ptype="subscribed")
    deadline = time.time() + TIMEOUT
    while True:
        query = hana.Iq(stype="get")
        query.enable("roster")  # no `ver`: the whole roster, not changes
        items = (await query.send(timeout=TIMEOUT))["roster"]["items"]
        if ivan_jid in items and items[ivan_jid]["approved"] == "true":
            break
        assert time.time() < deadline, items
        await asyncio.sleep(0.05)
    ivan.send_presence_subscription(pto=hana_jid)
    while not (
        ivan.client_roster[hana_jid]["subscription"] == "to"
        and hana.client_roster[ivan_jid]["subscription"] == "from"
    ):
        assert time.time() < deadline, (
            ivan.client_roster[hana_jid]["subscription"],
            hana.client_roster[ivan_jid]["subscription"],
        )
        await asyncio.sleep(0.05)
    await hana.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert not hana.asked, hana.asked
    await close(hana, ivan)


async def scenario_muc_groupchat(server):
    room = f"interop@rooms.{DOMAIN}"
    carol, alice, bob = [await online(server, u, "muc") for u in ("carol", "alice", "bob")]
    for client in (carol, alice, bob):
        client.register_plugin("xep_0045")
        client.groupchat = asyncio.Queue()
        client.add_event_handler("groupchat_message", lambda msg, c=client: c.groupchat.put_nowait(msg))
    muc = carol.plugin["xep_0045"]
    own, _subject, _occupants, _history = await muc.join_muc_wait(room, "host", timeout=TIMEOUT)
    assert "201" in str(own), own
    form = await muc.get_room_config(room, timeout=TIMEOUT)
    form.set_values({"muc#roomconfig_roomname": "Interop"})
    await muc.set_room_config(room, form, timeout=TIMEOUT)
    await alice.plugin["xep_0045"].join_muc_wait(room, "alice", timeout=TIMEOUT)
    _own, _subject, occupants, _history = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", timeout=TIMEOUT)
    assert {"host", "alice"} <= {p["from"].resource for p in occupants}, occupants
    alice.send_message(mto=room, mbody="hello room", mtype="groupchat")
    while (msg := await asyncio.wait_for(bob.groupchat.get(), TIMEOUT))["body"] != "hello room":
        pass
    assert msg["mucnick"] == "alice", msg
    bob.send_message(mto=room, mbody="hello alice", mtype="groupchat")
    while (msg := await asyncio.wait_for(alice.groupchat.get(), TIMEOUT))["body"] != "hello alice":
        pass
    assert msg["from"].full == f"{room}/bob", msg
    await close(carol, alice, bob)


async def scenario_carbons(server):
    phone = await online(server, "alice", "phone", presence=False)
    laptop = await online(server, "alice", "laptop", presence=False)
    copies = asyncio.Queue()
    for client in (phone, laptop):
        client.register_plugin("xep_0280")
        for event in ("carbon_received", "carbon_sent"):
            client.add_event_handler(event, lambda m, c=client, e=event: copies.put_nowait((c, e, m)))
        await client.plugin["xep_0280"].enable(timeout=TIMEOUT)
    phone.send_presence(ppriority=5)
    laptop.send_presence(ppriority=1)
    bob = await online(server, "bob", "carbons")
    await phone.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    await laptop.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    # bob to alice's bare JID: the phone (highest priority) gets it, the laptop a copy.
    bob.send_message(mto=f"alice@{DOMAIN}", mbody="hi alice", mtype="chat")
    msg = await asyncio.wait_for(phone.inbox.get(), TIMEOUT)
    assert msg["body"] == "hi alice", msg
    client, event, carbon = await asyncio.wait_for(copies.get(), TIMEOUT)
    assert (client, event) == (laptop, "carbon_received"), (client.boundjid, event)
    inner = carbon["carbon_received"]
    assert inner["body"] == "hi alice" and inner["from"].full == f"bob@{DOMAIN}/carbons", inner
    # The phone answers bob: the laptop gets a sent copy.
    phone.send_message(mto=f"bob@{DOMAIN}/carbons", mbody="hi bob", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    assert msg["body"] == "hi bob", msg
    client, event, carbon = await asyncio.wait_for(copies.get(), TIMEOUT)
    assert (client, event) == (laptop, "carbon_sent"), (client.boundjid, event)
    inner = carbon["carbon_sent"]
    assert inner["body"] == "hi bob" and inner["to"].full == f"bob@{DOMAIN}/carbons", inner
    assert inner["from"].full == f"alice@{DOMAIN}/phone", inner
    await bob.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert copies.empty(), copies
    await close(phone, laptop, bob)


async def scenario_pep_open_device_list(server):
    from xml.etree import ElementTree as ET
    alice = await online(server, "alice", "omemo")
    bob = await online(server, "bob", "stranger")
    for client in (alice, bob):
        client.register_plugin("xep_0004")
        client.register_plugin("xep_0060")
        client.register_plugin("xep_0163")
    node = "eu.siacs.conversations.axolotl.devicelist"
    payload = ET.Element("{eu.siacs.conversations.axolotl}list")
    ET.SubElement(payload, "{eu.siacs.conversations.axolotl}device", id="4242")
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#access_model", value="open")
    result = await alice.plugin["xep_0060"].publish(
        alice.boundjid.bare, node, id="current", payload=payload, options=form, timeout=TIMEOUT)
    assert result["pubsub"]["publish"]["item"]["id"] == "current", result
    # bob shares no roster with alice: the open access model lets him read it.
    got = await bob.plugin["xep_0060"].get_items(f"alice@{DOMAIN}", node, timeout=TIMEOUT)
    items = list(got["pubsub"]["items"])
    assert [i["id"] for i in items] == ["current"], got
    device = items[0]["payload"].find("{eu.siacs.conversations.axolotl}device")
    assert device is not None and device.get("id") == "4242", got


async def scenario_stream_resumption(server):
    """XEP-0198: the TCP connection drops, slixmpp reconnects and resumes;
    what bob sent meanwhile arrives and bob never sees alice go away."""
    loop = asyncio.get_running_loop()
    enabled, resumed = loop.create_future(), loop.create_future()
    alice = make_client(server, "dave", "phone")
    alice.register_plugin("xep_0198")
    alice.add_event_handler("sm_enabled", lambda _: enabled.done() or enabled.set_result(True))
    alice.add_event_handler("session_resumed", lambda _: resumed.done() or resumed.set_result(True))
    alice.inbox = asyncio.Queue()
    alice.add_event_handler("message", lambda msg: alice.inbox.put_nowait(msg))
    host, port = server.starttls
    alice.connect(host, int(port))
    await asyncio.wait_for(enabled, TIMEOUT)
    alice.send_presence()
    bob = await online(server, "erin", "desk")
    unavailable = []
    bob.add_event_handler("presence_unavailable", lambda p: unavailable.append(p))
    bob.send_message(mto=f"dave@{DOMAIN}/phone", mbody="before", mtype="chat")
    msg = await asyncio.wait_for(alice.inbox.get(), TIMEOUT)
    assert msg["body"] == "before", msg
    alice.transport.abort()
    await asyncio.sleep(0.3)
    bob.send_message(mto=f"dave@{DOMAIN}/phone", mbody="meanwhile", mtype="chat")
    await bob.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    alice.connect(host, int(port))
    await asyncio.wait_for(resumed, TIMEOUT)
    bodies = []
    while not bodies or bodies[-1] != "meanwhile":
        bodies.append((await asyncio.wait_for(alice.inbox.get(), TIMEOUT))["body"])
    assert bodies.count("meanwhile") == 1, bodies
    rtt = await alice.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    assert rtt is not None
    assert not unavailable, unavailable
    await close(alice, bob)


async def scenario_mam(server):
    frank = await online(server, "frank", "mam")
    gina = await online(server, "gina", "mam")
    for client in (frank, gina):
        client.register_plugin("xep_0313")
        client.register_plugin("xep_0359")
    for n in range(25):
        frank.send_message(mto=f"gina@{DOMAIN}", mbody=f"archived {n}", mtype="chat")
    delivered = []
    for n in range(25):
        msg = await asyncio.wait_for(gina.inbox.get(), TIMEOUT)
        assert msg["body"] == f"archived {n}", msg
        delivered.append(msg["stanza_id"]["id"])
        assert msg["stanza_id"]["by"] == f"gina@{DOMAIN}", msg
    info = await frank.plugin["xep_0030"].get_info(jid=f"frank@{DOMAIN}", timeout=TIMEOUT)
    assert "urn:xmpp:mam:2" in info["disco_info"]["features"], info
    # One page through retrieve, then the whole archive through RSM paging.
    iq = await gina.plugin["xep_0313"].retrieve(with_jid=slixmpp.JID(f"frank@{DOMAIN}"), rsm={"max": 5}, timeout=TIMEOUT)
    first = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in iq["mam"]["results"]]
    assert first == [f"archived {n}" for n in range(5)], first
    assert iq["mam_fin"]["rsm"]["count"] == "25", iq
    ids = []
    async for m in gina.plugin["xep_0313"].iterate(rsm={"max": 10}):
        ids.append(m["mam_result"]["id"])
    assert ids == delivered, (ids, delivered)
    await close(frank, gina)


async def scenario_http_upload(server):
    # slixmpp's xep_0363 plugin needs aiohttp, which is not installed here: the slot
    # request goes out as a raw iq through slixmpp, the HTTP side through urllib.
    ns = "urn:xmpp:http:upload:0"
    alice = await online(server, "alice", "upload")
    disco = alice.plugin["xep_0030"]
    items = await disco.get_items(jid=DOMAIN, timeout=TIMEOUT)
    service = f"upload.{DOMAIN}"
    assert service in [item[0] for item in items["disco_items"]["items"]], items
    info = await disco.get_info(jid=service, timeout=TIMEOUT)
    assert ns in info["disco_info"]["features"], info
    x = "{jabber:x:data}"
    size_field = info.xml.find(f".//{x}field[@var='max-file-size']/{x}value")
    assert size_field is not None and int(size_field.text) > 0, info
    body = bytes(range(256)) * 40
    iq = alice.Iq()
    iq["type"] = "get"
    iq["to"] = service
    iq.append(ET.fromstring(
        f"<request xmlns='{ns}' filename='interop café.bin' size='{len(body)}' "
        "content-type='application/octet-stream'/>"
    ))
    reply = await iq.send(timeout=TIMEOUT)
    slot = reply.xml.find(f"{{{ns}}}slot")
    put = slot.find(f"{{{ns}}}put")
    get_url = slot.find(f"{{{ns}}}get").get("url")
    headers = {h.get("name"): h.text for h in put.findall(f"{{{ns}}}header")}
    context = ssl.create_default_context(cafile=server.cert)
    context.set_alpn_protocols(["http/1.1"])

    def transfer():
        request = urllib.request.Request(
            put.get("url"), data=body, method="PUT",
            headers=dict(headers, **{"Content-Type": "application/octet-stream"}),
        )
        with urllib.request.urlopen(request, context=context, timeout=TIMEOUT) as response:
            assert response.status == 201, response.status
        with urllib.request.urlopen(get_url, context=context, timeout=TIMEOUT) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "*", response.headers
            return response.read()

    fetched = await asyncio.to_thread(transfer)
    assert fetched == body, len(fetched)
    await close(alice)


async def scenario_compliance_suite(server):
    """Each server test of the Conversations compliance tester (github.com/iNPUTmice/caas,
    xmpp/tests/*.java), asked the way it asks, by its short name. Not ported: xep0368
    (needs DNS SRV records), turn (needs a TURN server in the config), and the
    informational ones. Reports every missing feature at once."""
    ns_pubsub = "http://jabber.org/protocol/pubsub"
    loop = asyncio.get_running_loop()
    features_seen = loop.create_future()
    alice = make_client(server, "alice", "compliance")
    for plugin in ("xep_0004", "xep_0045", "xep_0060"):
        alice.register_plugin(plugin)
    alice.register_handler(slixmpp.xmlstream.handler.Callback(
        "compliance features",
        slixmpp.xmlstream.matcher.MatchXPath("{http://etherx.jabber.org/streams}features"),
        lambda stanza: features_seen.done() or "{urn:xmpp:sm:3}sm" not in [c.tag for c in stanza.xml]
        or features_seen.set_result({c.tag for c in stanza.xml}),
    ))
    started = loop.create_future()
    alice.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    host, port = server.starttls
    alice.connect(host, int(port))
    await asyncio.wait_for(started, TIMEOUT)
    stream_features = await asyncio.wait_for(features_seen, TIMEOUT)
    disco = alice.plugin["xep_0030"]

    async def info(jid):
        return (await disco.get_info(jid=jid, timeout=TIMEOUT))["disco_info"]

    server_info, account = await info(DOMAIN), await info(f"alice@{DOMAIN}")
    services = {}
    for item in (await disco.get_items(jid=DOMAIN, timeout=TIMEOUT))["disco_items"]["items"]:
        for feature in (await info(item[0]))["features"]:
            services.setdefault(feature, item[0])
    checks = {
        "xep0115": "{http://jabber.org/protocol/caps}c" in stream_features,
        "xep0198": "{urn:xmpp:sm:3}sm" in stream_features,
        "xep0352": "{urn:xmpp:csi:0}csi" in stream_features,
        "roster_versioning": "{urn:xmpp:features:rosterver}ver" in stream_features,
        "xep0163": ("pubsub", "pep") in [(i[0], i[1]) for i in account["identities"]],
        "xep0191": "urn:xmpp:blocking" in server_info["features"],
        "xep0280": "urn:xmpp:carbons:2" in server_info["features"],
        "xep0160": "msgoffline" in server_info["features"],
        "xep0313": "urn:xmpp:mam:2" in account["features"],
        "xep0357": "urn:xmpp:push:0" in account["features"],
        "xep0398": "urn:xmpp:pep-vcard-conversion:0" in account["features"],
        "xep0411": "urn:xmpp:bookmarks-conversion:0" in account["features"],
        "xep0045": "http://jabber.org/protocol/muc" in services,
        "xep0363": "urn:xmpp:http:upload:0" in services,
        "xep0065": "http://jabber.org/protocol/bytestreams" in services,
    }
    # xep0384: publish with access_model=open, read the node's configuration back.
    node = f"eu.siacs.conversations.axolotl.bundles:{os.getpid()}"
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{ns_pubsub}#publish-options")
    form.add_field(var="pubsub#access_model", value="open")
    payload = ET.Element("{eu.siacs.conversations.axolotl}bundle")
    await alice.plugin["xep_0060"].publish(
        alice.boundjid.bare, node, payload=payload, options=form, timeout=TIMEOUT)
    config = await alice.plugin["xep_0060"].get_node_config(alice.boundjid.bare, node, timeout=TIMEOUT)
    values = config["pubsub_owner"]["configure"]["form"].get_values()
    checks["xep0384"] = values.get("pubsub#access_model") == "open"
    await alice.plugin["xep_0060"].delete_node(alice.boundjid.bare, node, timeout=TIMEOUT)
    # xep0313muc and vcard_muc: a fresh room's configuration form and disco#info.
    room = f"compliance{os.getpid()}@{services.get('http://jabber.org/protocol/muc', 'rooms.' + DOMAIN)}"
    muc = alice.plugin["xep_0045"]
    await muc.join_muc_wait(room, "test", timeout=TIMEOUT)
    room_form = await muc.get_room_config(room, timeout=TIMEOUT)
    room_info = await info(room)
    checks["xep0313muc"] = bool({"mam", "muc#roomconfig_mam", "muc#roomconfig_enablearchiving"}
                                & set(room_form.get_fields())) or "urn:xmpp:mam:2" in room_info["features"]
    checks["vcard_muc"] = "vcard-temp" in room_info["features"]
    await muc.destroy(room, timeout=TIMEOUT)
    # stun: XEP-0215 services of type stun/stuns over udp/tcp with a host and port.
    query = alice.Iq()
    query["type"], query["to"] = "get", DOMAIN
    query.append(ET.fromstring("<services xmlns='urn:xmpp:extdisco:2'/>"))
    try:
        reply = await query.send(timeout=TIMEOUT)
        checks["stun"] = any(
            s.get("type") in ("stun", "stuns") and s.get("transport") in ("udp", "tcp")
            and s.get("host") and 0 <= int(s.get("port", "-1")) <= 65535
            for s in reply.xml.iter("{urn:xmpp:extdisco:2}service"))
    except slixmpp.exceptions.IqError:
        checks["stun"] = False
    missing = sorted(name for name, ok in checks.items() if not ok)
    assert not missing, f"compliance checks failing: {missing}"
    await close(alice)


SCENARIOS = [
    scenario_starttls_scram_ping_disco,
    scenario_direct_tls_login,
    scenario_chat,
    scenario_offline_delivery,
    scenario_blocking,
    scenario_mutual_subscription_presence,
    scenario_pre_approval,
    scenario_muc_groupchat,
    scenario_carbons,
    scenario_pep_open_device_list,
    scenario_stream_resumption,
    scenario_mam,
    scenario_http_upload,
    scenario_compliance_suite,
]


def main():
    logging.basicConfig(level=logging.ERROR)
    binary = sys.argv[1] if len(sys.argv) > 1 else default_binary()
    server = Hearth(binary)
    passed = failed = 0
    try:
        server.start()
        for user in ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hana", "ivan"):
            server.adduser(user)
        only = os.environ.get("HEARTH_INTEROP_ONLY")
        for scenario in SCENARIOS:
            name = scenario.__name__.removeprefix("scenario_")
            if only and name != only:
                continue
            try:
                asyncio.run(asyncio.wait_for(scenario(server), TIMEOUT * 3))
                print(f"ok   {name}")
                passed += 1
            except Exception as exc:  # report and continue with the next one
                print(f"FAIL {name}: {exc!r}")
                failed += 1
    finally:
        server.stop()
    if failed:
        print("".join(server.log[-40:]))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
