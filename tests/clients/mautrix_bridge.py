"""A small bridge on mautrix-python's AppService against a running Myelin.

    python tests/clients/mautrix_bridge.py URL

The server must have been started with the registration in
$MYELIN_BRIDGE_REGISTRATION (JSON, which is YAML too: id, url, tokens,
sender_localpart, namespaces @bridge_*, receive_ephemeral); the bridge
listens on that registration's url. What it checks, asserting on every
answer:

- it starts, and the homeserver's ping reaches it;
- a user invites a ghost (@bridge_alice) that does not exist yet: the
  homeserver asks the bridge (user query), the bridge registers the ghost,
  the invite succeeds;
- the ghost joins the portal room, the user writes there: the bridge
  receives the message in a transaction and answers as the ghost with a
  massaged timestamp, which the user sees in /messages;
- the user's typing and read receipt reach the bridge as ephemeral events
  (MSC2409).
"""

import asyncio
import json
import os
import secrets
import sys
import time
import urllib.parse

import aiohttp
from mautrix.appservice import AppService
from mautrix.types import EventType, MessageEvent, ReceiptEvent, TypingEvent

HS = sys.argv[1].rstrip("/")
REG = json.load(open(os.environ["MYELIN_BRIDGE_REGISTRATION"]))
SERVER_NAME = "localhost"
GHOST = f"@bridge_alice:{SERVER_NAME}"
MASSAGED_TS = 1_600_000_000_000  # 2020-09-13: far from now


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def call(http, method, path, token, body=None, query=None):
    url = HS + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as r:
        data = await r.json(content_type=None)
        return r.status, data


async def main():
    seen_messages = asyncio.Queue()
    ephemeral = asyncio.Queue()
    queried = []

    async def query_user(user_id):
        queried.append(user_id)
        if not user_id.startswith("@bridge_"):
            return None
        await appservice.intent.user(user_id).ensure_registered()
        return {"user_id": user_id}

    bridge_url = urllib.parse.urlparse(REG["url"])
    appservice = AppService(
        server=HS,
        domain=SERVER_NAME,
        as_token=REG["as_token"],
        hs_token=REG["hs_token"],
        bot_localpart=REG["sender_localpart"],
        id=REG["id"],
        query_user=query_user,
        ephemeral_events=True,
    )

    @appservice.matrix_event_handler
    async def on_event(evt):
        if isinstance(evt, (TypingEvent, ReceiptEvent)):
            await ephemeral.put(evt)
        elif isinstance(evt, MessageEvent) and evt.sender != GHOST:
            await seen_messages.put(evt)

    await appservice.start(host=bridge_url.hostname, port=bridge_url.port)
    try:
        async with aiohttp.ClientSession() as http:
            await run(http, appservice, seen_messages, ephemeral, queried)
    finally:
        await appservice.stop()
    print("mautrix bridge: all checks passed")


async def run(http, appservice, seen_messages, ephemeral, queried):
    # The homeserver reaches the bridge (ping through the client API).
    latency = await appservice.ping_self()
    check(isinstance(latency, int), f"ping: {latency}")
    bot = await appservice.intent.whoami()
    check(bot.user_id == f"@{REG['sender_localpart']}:{SERVER_NAME}", f"whoami: {bot}")

    # A real user.
    name = "user" + secrets.token_hex(4)
    st, reg = await call(http, "POST", "/_matrix/client/v3/register", None,
                         {"username": name, "password": "pw-" + name, "auth": {"type": "m.login.dummy"}})
    check(st == 200, f"register: {st} {reg}")
    user, token = reg["user_id"], reg["access_token"]

    # The portal room; inviting the ghost asks the bridge, which creates it.
    st, room = await call(http, "POST", "/_matrix/client/v3/createRoom", token,
                          {"preset": "private_chat", "name": "portal"})
    check(st == 200, f"createRoom: {st} {room}")
    room_id = room["room_id"]
    st, b = await call(http, "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", token,
                       {"user_id": GHOST})
    check(st == 200, f"invite of the ghost: {st} {b}")
    check(GHOST in queried, f"the user query reached the bridge: {queried}")
    ghost = appservice.intent.user(GHOST)
    await ghost.join_room(room_id)

    # The user writes; the bridge gets it in a transaction.
    st, sent = await call(http, "PUT",
                          f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{secrets.token_hex(4)}",
                          token, {"msgtype": "m.text", "body": "hello bridge"})
    check(st == 200, f"send: {st} {sent}")
    evt = await asyncio.wait_for(seen_messages.get(), 20)
    check(evt.event_id == sent["event_id"] and evt.content.body == "hello bridge",
          f"the bridged message: {evt}")
    check(str(evt.sender) == user and evt.room_id == room_id, f"its sender and room: {evt}")

    # The ghost answers with the remote network's timestamp.
    reply = await ghost.send_text(room_id, "hello from the other side", timestamp=MASSAGED_TS)
    st, msgs = await call(http, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages", token,
                          query={"dir": "b", "limit": "5"})
    check(st == 200, f"messages: {st} {msgs}")
    mine = [e for e in msgs["chunk"] if e["event_id"] == reply]
    check(len(mine) == 1, f"the ghost's reply in /messages: {msgs}")
    check(mine[0]["sender"] == GHOST, f"sent as the ghost: {mine[0]}")
    check(mine[0]["origin_server_ts"] == MASSAGED_TS, f"massaged timestamp: {mine[0]}")

    # Typing and a read receipt reach the bridge (MSC2409).
    st, b = await call(http, "PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{user}", token,
                       {"typing": True, "timeout": 30000})
    check(st == 200, f"typing: {st} {b}")
    st, b = await call(http, "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{reply}",
                       token, {})
    check(st == 200, f"receipt: {st} {b}")
    got_typing = got_receipt = False
    deadline = time.monotonic() + 20
    while not (got_typing and got_receipt):
        evt = await asyncio.wait_for(ephemeral.get(), max(0.1, deadline - time.monotonic()))
        if isinstance(evt, TypingEvent) and evt.room_id == room_id and user in evt.content.user_ids:
            got_typing = True
        if isinstance(evt, ReceiptEvent) and evt.room_id == room_id and reply in evt.content:
            got_receipt = True
    check(evt is not None, "ephemeral events")


if __name__ == "__main__":
    asyncio.run(main())
