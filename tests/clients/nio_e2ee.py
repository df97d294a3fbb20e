"""Encryption suite: matrix-nio with its [e2e] extra (vodozemac) against a running Myelin.

    python tests/clients/nio_e2ee.py http://127.0.0.1:PORT

Run by scripts/client-smoke with the venv from scripts/install-nio. The server
must allow open registration. Three bots, each with its own nio store (a temp
dir), do what an encrypting client does after every sync (upload its device and
one-time keys, query the keys of users whose devices changed, claim one-time
keys for Olm sessions, send queued to-device messages):

  - alice and bob share an encrypted room; alice's message reaches bob as a
    decrypted RoomMessageText (the one-time key alice claimed shows in bob's
    key count, and nio tops it up), and bob's reply reaches alice the same way;
  - carol joins later: what was sent before she joined stays undecryptable
    for her (a MegolmEvent, no key was shared with her), while a message sent
    after she joined decrypts;
  - bob logs in on a second device: alice's sync reports the device list
    change, and her next message decrypts on the new device; once it logs
    out, alice's key query drops it;
  - alice and bob verify each other's devices with SAS (to-device messages),
    after which alice's messages to bob need no ignore_unverified_devices.

Exits 0 when every step passed, 1 on the first failure (naming the step and
what was expected), 2 on bad usage.
"""

import logging
import os
import secrets
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    EncryptionError,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    KeyVerificationCancel,
    KeyVerificationKey,
    KeyVerificationStart,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    ToDeviceResponse,
)
from nio.crypto import ENCRYPTION_ENABLED

from nio_smoke import Failure, check, expect, main, step

ROUNDS = 30  # bound on sync rounds while waiting for one thing
PASSWORD = "nio e2ee password " + secrets.token_hex(4)
MEGOLM = "m.megolm.v1.aes-sha2"
FULL = {"room": {"timeline": {"limit": 100}}}
# nio logs each Megolm event it cannot decrypt (carol's are expected to be): off,
# or at MYELIN_NIO_LOG (e.g. DEBUG).
logging.basicConfig(level=os.environ.get("MYELIN_NIO_LOG", "CRITICAL"))


class Bot:
    """One user on one device, with its own encryption store."""

    def __init__(self, base, name, store):
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        self.name = name
        self.client = AsyncClient(base, "", store_path=store, config=config)
        self.seen = {}  # event id -> the event as nio last gave it
        self.counts = []  # signed_curve25519 one-time key count of each sync
        self.uploads = []  # the same count, as each key upload answered it

    async def login(self, user_id):
        c = self.client
        c.user = user_id
        expect(await c.login(PASSWORD, device_name=f"nio e2ee {self.name}"), LoginResponse, f"login {self.name}")
        check(c.olm is not None, f"{self.name}: nio loaded no Olm account after login")

    async def register(self, localpart):
        c = self.client
        r = expect(await c.register(localpart, PASSWORD, f"nio e2ee {self.name}"),
                   RegisterResponse, f"register {self.name}")
        check(c.olm is not None, f"{self.name}: nio loaded no Olm account after register")
        return r.user_id

    async def tick(self, timeout=0):
        """One sync, then the key and to-device upkeep nio's sync_forever does."""
        c = self.client
        s = expect(await c.sync(timeout=timeout, sync_filter=FULL), SyncResponse, f"{self.name}'s sync")
        self.counts.append(s.device_key_count.signed_curve25519)
        for room in s.rooms.join.values():
            for e in room.timeline.events:
                self.seen[e.event_id] = e
        expect_all = [(c.send_to_device_messages(), None, "send queued to-device messages")]
        if c.should_upload_keys:
            expect_all.append((c.keys_upload(), KeysUploadResponse, "upload keys"))
        if c.should_query_keys:
            expect_all.append((c.keys_query(), KeysQueryResponse, "query keys"))
        if c.should_claim_keys:
            expect_all.append((c.keys_claim(c.get_users_for_key_claiming()), KeysClaimResponse, "claim keys"))
        for coro, kind, what in expect_all:
            r = await coro
            if kind is not None:
                expect(r, kind, f"{self.name}: {what}")
                if kind is KeysUploadResponse:
                    self.uploads.append(r.signed_curve25519_count)
            else:
                for resp in r:
                    expect(resp, ToDeviceResponse, f"{self.name}: {what}")
        return s

    async def until(self, pred, what):
        """Ticks until pred() holds (checked before each sync too); bounded by ROUNDS."""
        for _ in range(ROUNDS):
            got = pred()
            if got:
                return got
            await self.tick(timeout=1000)
        got = pred()
        check(got, f"{self.name}: {what}: not seen after {ROUNDS} syncs")
        return got

    def decrypted(self, event_id):
        """The event, decrypted if nio can: a Megolm event seen before its key
        arrived is decrypted again (as clients retry), else stays as it is."""
        e = self.seen.get(event_id)
        if isinstance(e, MegolmEvent):
            try:
                e = self.seen[event_id] = self.client.decrypt_event(e)
            except EncryptionError:
                pass
        return e

    async def read(self, event_id, body, sender):
        """Waits for event_id and checks it decrypted to the text `body` from `sender`."""
        e = await self.until(lambda: isinstance(self.decrypted(event_id), RoomMessageText)
                             and self.decrypted(event_id), f"the decrypted message {event_id}")
        check(e.body == body and e.sender == sender and e.decrypted,
              f"{self.name}: {event_id} decrypted to {e.body!r} from {e.sender} (decrypted={e.decrypted}), "
              f"expected {body!r} from {sender}")


async def send(bot, room, body):
    r = expect(await bot.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                          ignore_unverified_devices=True),
               RoomSendResponse, f"{bot.name} sends {body!r}")
    check(r.event_id.startswith("$"), f"{bot.name}'s send: event_id {r.event_id!r}")
    return r.event_id


async def encrypted_room(owner, guest, ids, name):
    """An encrypted private room that `owner` creates with `guest` invited
    and `guest` joins, as soon as the invite reaches it; its id."""
    r = expect(await owner.client.room_create(
        name=name, preset=RoomPreset.private_chat, invite=[ids[guest.name]],
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]),
        RoomCreateResponse, f"{owner.name} creates the encrypted room {name!r}")
    await guest.until(lambda: r.room_id in guest.client.invited_rooms, f"the invite to {name!r}")
    expect(await guest.client.join(r.room_id), JoinResponse, f"{guest.name} joins {name!r}")
    return r.room_id


async def verify_sas(a, b, ids):
    """Interactive SAS verification of a's and b's devices (m.key.verification.*
    to-device messages, in the order the spec gives): both see the same emoji,
    and each device ends verified in the other's store."""
    a_dev = a.client.device_store[ids[b.name]][b.client.device_id]
    b_dev = b.client.device_store[ids[a.name]][a.client.device_id]
    expect(await a.client.start_key_verification(a_dev), ToDeviceResponse, f"{a.name} starts SAS")
    emoji = {}

    for _ in range(ROUNDS):
        for bot in (a, b):
            c = bot.client
            for e in (await bot.tick(timeout=500)).to_device_events:
                tx = getattr(e, "transaction_id", None)
                # nio sends the keys itself (queued to-device messages, sent
                # by tick); the user accepts and compares the emoji.
                if isinstance(e, KeyVerificationStart):
                    expect(await c.accept_key_verification(tx), ToDeviceResponse, f"{bot.name} accepts")
                elif isinstance(e, KeyVerificationKey):
                    emoji[bot.name] = c.key_verifications[tx].get_emoji()
                    expect(await c.confirm_short_auth_string(tx), ToDeviceResponse, f"{bot.name} confirms")
                elif isinstance(e, KeyVerificationCancel):
                    raise Failure(f"{bot.name}: SAS canceled: {e.code} {e.reason}")
        if a.client.olm.is_device_verified(a_dev) and b.client.olm.is_device_verified(b_dev):
            break
    check(a.name in emoji and emoji.get(a.name) == emoji.get(b.name), f"SAS emoji differ: {emoji}")
    check(a.client.olm.is_device_verified(a_dev), f"{a.name}: {b.name}'s device not verified after SAS")
    check(b.client.olm.is_device_verified(b_dev), f"{b.name}: {a.name}'s device not verified after SAS")


async def run(base):
    check(ENCRYPTION_ENABLED, "nio was installed without its [e2e] extra (vodozemac)")
    tag = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="nio-e2ee-") as stores:
        bots = []
        for name in ("alice", "bob", "carol"):
            os.mkdir(f"{stores}/{name}")
            bots.append(Bot(base, name, f"{stores}/{name}"))
        alice, bob, carol = bots
        try:
            ids = {}
            for b in bots:
                ids[b.name] = await b.register(f"nio_{b.name}_{tag}")
            for b in bots:
                await b.tick()
                check(not b.client.should_upload_keys, f"{b.name}: keys still to upload after a sync")
                check(len(b.uploads) == 1 and b.uploads[0] > 0, f"{b.name}: one-time key uploads {b.uploads}")
            uploaded = bob.uploads[0]
            step("register three bots; each uploads its device and one-time keys")

            room = await encrypted_room(alice, bob, ids, "nio e2ee")
            for b in (alice, bob):
                await b.until(lambda b=b: room in b.client.rooms and b.client.rooms[room].encrypted
                              and {ids["alice"], ids["bob"]} <= set(b.client.rooms[room].users),
                              "the room, encrypted, with both members")
            step("an encrypted room with alice and bob")

            # alice -> bob, then bob -> alice, each decrypted on the other side.
            body1 = f"nio e2ee {tag}: alice to bob"
            mark = len(bob.counts)
            ev1 = await send(alice, room, body1)
            await bob.read(ev1, body1, ids["alice"])
            step("alice's encrypted message decrypts for bob")
            # alice claimed one of bob's one-time keys for the Olm session.
            check(uploaded - 1 in bob.counts[mark:],
                  f"bob's one-time key counts in sync {bob.counts[mark:]}, expected {uploaded - 1} after the claim")
            check(bob.uploads[-1] == uploaded,
                  f"bob's top-up upload answered {bob.uploads[-1]} one-time keys, expected {uploaded}")
            step("the claim shows in bob's one-time key count; nio tops it up")
            body2 = f"nio e2ee {tag}: bob to alice"
            ev2 = await send(bob, room, body2)
            await alice.read(ev2, body2, ids["bob"])
            step("bob's encrypted message decrypts for alice")

            # carol joins after those two were sent.
            expect(await alice.client.room_invite(room, ids["carol"]), RoomInviteResponse, "alice invites carol")
            await carol.until(lambda: room in carol.client.invited_rooms, "the invite")
            expect(await carol.client.join(room), JoinResponse, "carol joins")
            await alice.until(lambda: ids["carol"] in alice.client.rooms[room].users, "carol's join")
            body3 = f"nio e2ee {tag}: after carol joined"
            ev3 = await send(alice, room, body3)
            await carol.read(ev3, body3, ids["alice"])
            await bob.read(ev3, body3, ids["alice"])
            step("a message sent after carol joined decrypts for carol (and bob)")

            # What came before her join: history visibility shared lets her
            # fetch it, but no key for it was shared with her.
            old = {}
            token = carol.client.next_batch
            for _ in range(10):
                r = expect(await carol.client.room_messages(room, start=token, direction=MessageDirection.back,
                                                            limit=50),
                           RoomMessagesResponse, "carol pages back with /messages")
                old.update({e.event_id: e for e in r.chunk})
                if ev1 in old or not r.chunk or not r.end:
                    break
                token = r.end
            for ev, body in ((ev1, body1), (ev2, body2)):
                e = old.get(ev)
                check(e is not None, f"carol's /messages: {ev} ({body!r}) missing")
                check(isinstance(e, MegolmEvent),
                      f"carol's /messages: {ev} is a {type(e).__name__}, expected an undecryptable MegolmEvent")
                try:
                    e = carol.client.decrypt_event(e)
                except EncryptionError:
                    continue
                raise Failure(f"carol decrypted {ev}, sent before she joined: {getattr(e, 'body', e)!r}")
            step("carol cannot decrypt the messages sent before she joined")

            # bob logs in on a second device: alice learns of it through her
            # sync's device lists and encrypts her next message for it too.
            os.mkdir(f"{stores}/bob2")
            bob2 = Bot(base, "bob2", f"{stores}/bob2")
            bots.append(bob2)
            await bob2.login(ids["bob"])
            await bob2.tick()
            check(bob2.uploads, "bob2: no key upload after the first sync")
            await alice.until(lambda: bob2.client.device_id in alice.client.device_store[ids["bob"]],
                              "bob's new device (device_lists.changed, then /keys/query)")
            body4 = f"nio e2ee {tag}: to bob's new device"
            ev4 = await send(alice, room, body4)
            await bob2.read(ev4, body4, ids["alice"])
            await carol.read(ev4, body4, ids["alice"])
            step("a new device of bob's gets the key of the next message")

            # bob logs the new device out: alice's sync reports the change and
            # her keys query no longer lists the device.
            bob2_device = bob2.client.device_id
            await bob2.client.logout()
            await alice.until(
                lambda: bob2_device not in {d.id for d in alice.client.device_store.active_user_devices(ids["bob"])},
                "bob's logged-out device gone from his devices")
            body5 = f"nio e2ee {tag}: after bob's device logged out"
            ev5 = await send(alice, room, body5)
            await bob.read(ev5, body5, ids["alice"])
            step("a logged-out device drops out of the devices alice encrypts for")

            await verify_sas(alice, bob, ids)
            step("alice and bob verify each other's devices with SAS over to-device messages")

            # Between verified devices nio encrypts without being told to
            # ignore unverified ones: a room of the two of them.
            pair = await encrypted_room(alice, bob, ids, "nio e2ee verified")
            await alice.until(lambda: pair in alice.client.rooms and ids["bob"] in alice.client.rooms[pair].users,
                              "bob's join")
            body6 = f"nio e2ee {tag}: between verified devices"
            r = expect(await alice.client.room_send(pair, "m.room.message", {"msgtype": "m.text", "body": body6}),
                       RoomSendResponse, "alice sends to verified devices only")
            await bob.read(r.event_id, body6, ids["alice"])
            check(bob.seen[r.event_id].verified, f"bob: {r.event_id} is not marked as from a verified device")
            step("a message between verified devices, sent without ignoring unverified ones")
        finally:
            for b in bots:
                await b.client.close()


if __name__ == "__main__":
    sys.exit(main(run, "nio e2ee", __doc__, timeout=180))
