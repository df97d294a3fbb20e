"""Smoke suite: matrix-nio (the Python client library) against a running Myelin.

    python tests/clients/nio_smoke.py http://127.0.0.1:PORT

Run by scripts/client-smoke with the venv from scripts/install-nio. The server
must allow open registration (registration.enabled). Every call goes through
nio's own methods (register, login, room_create, join, room_send, sync,
room_messages, to_device, upload, download, thumbnail, room_leave, joined_rooms), so a request nio makes that the
server refuses, or an answer nio cannot parse, fails the suite. Users, rooms
and aliases get random names, so the suite can run twice against one server.
Exits 0 when every step passed, 1 on the first failure (naming the step and
what was expected), 2 on bad usage.
"""

import asyncio
import io
import secrets
import struct
import sys
import time
import zlib

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinedRoomsResponse,
    JoinResponse,
    LoginResponse,
    MemoryDownloadResponse,
    MessageDirection,
    RegisterResponse,
    ResizingMethod,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomLeaveResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
    ThumbnailResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    UnknownToDeviceEvent,
    UploadResponse,
)

MESSAGES = 12  # sent by alice, read by bob through sync and /messages
SYNC_ROUNDS = 20  # bound on incremental syncs while waiting for the messages
PAGES = 20  # bound on /messages pages while paginating back
PASSWORD = "nio smoke password " + secrets.token_hex(4)
# A large timeline limit, so one incremental sync is never "limited".
FULL = {"room": {"timeline": {"limit": 100}}}


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def expect(resp, kind, what):
    """The response must be a `kind`; else fail, showing nio's error."""
    if not isinstance(resp, kind):
        detail = getattr(resp, "message", None) or resp
        status = getattr(resp, "status_code", None)
        raise Failure(f"{what}: expected {kind.__name__}, got {type(resp).__name__} "
                      f"(status {status}): {detail}")
    return resp


def client(base, user=""):
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
    return AsyncClient(base, user, config=config)


def step(name):
    print(f"ok - {name}", flush=True)


def png(width, height):
    """A `width`x`height` PNG, red left half, blue right half."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    row = b"".join(b"\xff\x00\x00" if x < width // 2 else b"\x00\x00\xff" for x in range(width))
    pixels = b"".join(b"\x00" + row for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def png_size(data):
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


def texts(events):
    return [(e.event_id, e.body) for e in events if isinstance(e, RoomMessageText)]


async def run(base):
    tag = secrets.token_hex(4)
    clients = []

    def new(user=""):
        c = client(base, user)
        clients.append(c)
        return c

    try:
        # register: open registration through nio (m.login.dummy), two users.
        alice = new()
        r = expect(await alice.register(f"nio_alice_{tag}", PASSWORD, "nio smoke"),
                   RegisterResponse, "register alice")
        check(r.user_id.startswith(f"@nio_alice_{tag}:"), f"register alice: user_id {r.user_id!r}")
        check(r.access_token and r.device_id, "register alice: no access_token/device_id")
        server = r.user_id.split(":", 1)[1]
        alice_id = r.user_id
        bob = new()
        r = expect(await bob.register(f"nio_bob_{tag}", PASSWORD, "nio smoke"),
                   RegisterResponse, "register bob")
        bob_id = r.user_id
        check(bob_id == f"@nio_bob_{tag}:{server}", f"register bob: user_id {bob_id!r}")
        step("register two users")

        # login: a second device for alice; it does the rest of her part.
        alice2 = new(alice_id)
        r = expect(await alice2.login(PASSWORD, device_name="nio smoke login"),
                   LoginResponse, "login alice")
        check(r.user_id == alice_id, f"login: user_id {r.user_id!r}, expected {alice_id!r}")
        check(r.device_id and r.device_id != alice.device_id,
              f"login: device_id {r.device_id!r} is not a new device (register's was {alice.device_id!r})")
        check(r.access_token != alice.access_token, "login: same access token as register's")
        alice = alice2
        step("login with password")

        # create: a public room with an alias, and one without.
        alias_local = f"nio_smoke_{tag}"
        alias = f"#{alias_local}:{server}"
        r = expect(await alice.room_create(visibility=RoomVisibility.public, alias=alias_local,
                                           name="nio smoke", preset=RoomPreset.public_chat),
                   RoomCreateResponse, "create the aliased room")
        main = r.room_id
        check(main.startswith("!"), f"create: room_id {main!r}")
        r = expect(await alice.room_create(visibility=RoomVisibility.public, name="nio smoke other",
                                           preset=RoomPreset.public_chat),
                   RoomCreateResponse, "create the second room")
        other = r.room_id
        check(other != main, "create: both rooms got the same id")
        r = expect(await alice.room_resolve_alias(alias), RoomResolveAliasResponse, "resolve the alias")
        check(r.room_id == main, f"resolve {alias}: {r.room_id!r}, expected {main!r}")
        step("create two rooms, one with an alias")

        # join: by alias and by id, through nio's join().
        r = expect(await bob.join(alias), JoinResponse, f"bob joins {alias} (by alias)")
        check(r.room_id == main, f"join by alias: room_id {r.room_id!r}, expected {main!r}")
        step("join by alias")
        r = expect(await bob.join(other), JoinResponse, f"bob joins {other} (by id)")
        check(r.room_id == other, f"join by id: room_id {r.room_id!r}, expected {other!r}")
        step("join by room id")

        s = expect(await bob.sync(timeout=0, sync_filter=FULL), SyncResponse, "bob's initial sync")
        check(main in s.rooms.join and other in s.rooms.join,
              f"initial sync: joined rooms {sorted(s.rooms.join)}, expected {main} and {other}")
        check(alice_id in bob.rooms[main].users and bob_id in bob.rooms[main].users,
              f"initial sync: members of the room {sorted(bob.rooms[main].users)}")
        step("initial sync shows both rooms and their members")

        # send: alice sends MESSAGES texts; the server gives each an event id.
        sent = []
        for i in range(MESSAGES):
            body = f"nio smoke {tag} #{i}"
            r = expect(await alice.room_send(main, "m.room.message", {"msgtype": "m.text", "body": body}),
                       RoomSendResponse, f"send message {i}")
            check(r.event_id.startswith("$"), f"send {i}: event_id {r.event_id!r}")
            sent.append((r.event_id, body))
        check(len({e for e, _ in sent}) == MESSAGES, "send: repeated event ids")
        step(f"send {MESSAGES} messages")

        # sync: bob receives them in order, each once, through incremental syncs.
        got = []
        for _ in range(SYNC_ROUNDS):
            s = expect(await bob.sync(timeout=5000, sync_filter=FULL), SyncResponse, "bob's incremental sync")
            if main in s.rooms.join:
                timeline = s.rooms.join[main].timeline
                check(not timeline.limited, "incremental sync: timeline limited despite limit 100")
                got += [m for m in texts(timeline.events) if m[1].startswith(f"nio smoke {tag} ")]
            if len(got) >= MESSAGES:
                break
        check(got == sent, "sync: bob received\n  " + "\n  ".join(map(str, got))
              + "\nexpected, in this order:\n  " + "\n  ".join(map(str, sent)))
        step("incremental sync delivers the messages in order, once each")

        # paginate: a fresh login of bob, an initial sync with a short timeline,
        # then /messages backwards from its prev_batch to the room's creation.
        bob2 = new(bob_id)
        expect(await bob2.login(PASSWORD, device_name="nio smoke paginate"), LoginResponse, "login bob")
        last = 3
        s = expect(await bob2.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": last}}}),
                   SyncResponse, "bob's second device's initial sync")
        check(main in s.rooms.join, f"second device's sync: {main} not joined")
        timeline = s.rooms.join[main].timeline
        check(texts(timeline.events) == sent[-last:],
              f"initial sync with timeline limit {last}: {texts(timeline.events)}, expected {sent[-last:]}")
        check(timeline.limited and timeline.prev_batch, "initial sync: timeline not limited or no prev_batch")
        older, token, created = [], timeline.prev_batch, False
        for _ in range(PAGES):
            r = expect(await bob2.room_messages(main, start=token, direction=MessageDirection.back, limit=4),
                       RoomMessagesResponse, "paginate back with /messages")
            older += texts(r.chunk)
            created = created or any(isinstance(e, RoomCreateEvent) for e in r.chunk)
            if not r.chunk or not r.end or created:
                break
            token = r.end
        check(created, "paginate: never reached the room's m.room.create event")
        check(older[::-1] == sent[:-last],
              "paginate: /messages returned\n  " + "\n  ".join(map(str, older))
              + "\nexpected (newest first):\n  " + "\n  ".join(map(str, sent[:-last][::-1])))
        step("paginate back from an initial sync's prev_batch to the room's creation")

        # to-device: alice sends to bob's device with nio's to_device(); bob's
        # next syncs carry it once, as nio parses it.
        content = {"smoke": tag}
        msg = ToDeviceMessage("org.myelin.smoke", bob_id, bob.device_id, content)
        expect(await alice.to_device(msg, tx_id=f"smoke-{tag}"), ToDeviceResponse, "send to-device")
        got = []
        for _ in range(SYNC_ROUNDS):
            s = expect(await bob.sync(timeout=5000, sync_filter=FULL), SyncResponse, "sync for to-device")
            got += [e for e in s.to_device_events if isinstance(e, UnknownToDeviceEvent)]
            if got:
                break
        check([(e.sender, e.type, e.source.get("content")) for e in got]
              == [(alice_id, "org.myelin.smoke", content)],
              f"to-device: bob received {[e.source for e in got]}")
        s = expect(await bob.sync(timeout=0, sync_filter=FULL), SyncResponse, "sync after to-device")
        check(not s.to_device_events, f"to-device: delivered again: {s.to_device_events}")
        step("to-device message delivered through sync, once")

        # media: alice uploads a file and an image (nio's upload, the legacy
        # /_matrix/media/v3/upload); bob downloads both and a thumbnail
        # through the authenticated /_matrix/client/v1/media endpoints.
        data = b"nio media " + tag.encode() * 100
        r, keys = await alice.upload(io.BytesIO(data), content_type="text/plain",
                                     filename="notes.txt", filesize=len(data))
        r = expect(r, UploadResponse, "upload a file")
        check(r.content_uri.startswith(f"mxc://{server}/") and keys is None,
              f"upload: content_uri {r.content_uri!r}")
        got = expect(await bob.download(mxc=r.content_uri), MemoryDownloadResponse, "download the file")
        check((got.body, got.content_type, got.filename) == (data, "text/plain", "notes.txt"),
              f"download: {got}")
        image = png(120, 90)
        r, _ = await alice.upload(io.BytesIO(image), content_type="image/png",
                                  filename="picture.png", filesize=len(image))
        image_uri = expect(r, UploadResponse, "upload an image").content_uri
        got = expect(await bob.download(mxc=image_uri, filename="renamed.png"),
                     MemoryDownloadResponse, "download the image")
        check((got.body, got.filename) == (image, "renamed.png"), f"download the image: {got}")
        image_server, image_id = image_uri[len("mxc://"):].split("/", 1)
        got = expect(await bob.thumbnail(image_server, image_id, 32, 32, ResizingMethod.crop),
                     ThumbnailResponse, "thumbnail of the image")
        check(got.content_type == "image/png" and png_size(got.body) == (32, 32),
              f"thumbnail: {got.content_type}, {png_size(got.body)}")
        step("media: a file and an image uploaded, both downloaded and a thumbnail made (authenticated)")

        # leave: the room is gone from joined_rooms and shows under leave in sync.
        expect(await bob.room_leave(other), RoomLeaveResponse, f"bob leaves {other}")
        r = expect(await bob.joined_rooms(), JoinedRoomsResponse, "joined_rooms after leaving")
        check(other not in r.rooms, f"joined_rooms after leaving {other}: {r.rooms}")
        check(main in r.rooms, f"joined_rooms after leaving {other}: {main} missing from {r.rooms}")
        s = expect(await bob.sync(timeout=0, sync_filter=FULL), SyncResponse, "sync after leaving")
        check(other in s.rooms.leave, f"sync after leaving: {other} not under rooms.leave ({sorted(s.rooms.leave)})")
        check(other not in s.rooms.join, f"sync after leaving: {other} still under rooms.join")
        step("leave removes the room from joined rooms")
    finally:
        for c in clients:
            await c.close()


def main(run_suite=None, name="nio smoke", doc=__doc__, timeout=120):
    """Runs `run_suite(url)` (this suite's run by default) on the URL given on the command line."""
    run_suite = run_suite or run
    if len(sys.argv) != 2:
        print(doc, file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(run_suite(sys.argv[1].rstrip("/")), timeout=timeout))
    except Failure as e:
        print(f"FAILED - {e}", flush=True)
        return 1
    except TimeoutError:
        print(f"FAILED - the suite did not finish within {timeout} s", flush=True)
        return 1
    print(f"{name}: all steps passed in {time.monotonic() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
