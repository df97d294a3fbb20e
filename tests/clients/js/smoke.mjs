// Smoke suite: matrix-js-sdk (the JavaScript client library) against a running Myelin.
//
//     node tests/clients/js/smoke.mjs http://127.0.0.1:PORT
//
// Run by scripts/client-smoke after scripts/install-js-sdk (npm ci of the pinned
// package-lock.json here). The server must allow open registration. Clients run
// as an application would: startClient() and its sync loop, the room's live
// timeline (RoomEvent.Timeline), paginateEventTimeline() for history; crypto is
// not enabled (unencrypted rooms). Users, rooms and aliases get random names.
// The pusher step runs a push gateway on loopback (the server's config must
// allow 127.0.0.1 in `outbound`, as scripts/client-smoke does) and prints how
// long a message took to reach it.
// Exits 0 when every step passed, 1 on the first failure (naming the step and
// what was expected), 2 on bad usage.

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import * as sdk from "matrix-js-sdk";
import { check, expectOk, Failure, main, quiet, started, step, until } from "./common.mjs";

const MESSAGES = 12; // sent by alice, read by bob through sync and /messages
const PAGES = 20; // bound on back-pagination requests
const SUITE_MS = 120_000;
const PASSWORD = `js smoke password ${randomBytes(4).toString("hex")}`;

const texts = (events) =>
    events.filter((e) => e.getType() === "m.room.message").map((e) => [e.getId(), e.getContent().body]);

const show = (list) => list.map((m) => `  ${m.join(" ")}`).join("\n");

async function run(base) {
    const tag = randomBytes(4).toString("hex");
    const anon = sdk.createClient({ baseUrl: base });
    quiet();

    // register: open registration with m.login.dummy, two users.
    const dummy = { type: "m.login.dummy" };
    const aliceReg = await expectOk(anon.register(`js_alice_${tag}`, PASSWORD, null, dummy), "register alice");
    check(aliceReg.user_id?.startsWith(`@js_alice_${tag}:`), `register alice: user_id ${aliceReg.user_id}`);
    check(aliceReg.access_token && aliceReg.device_id, "register alice: no access_token/device_id");
    const server = aliceReg.user_id.split(":").slice(1).join(":");
    const bobReg = await expectOk(anon.register(`js_bob_${tag}`, PASSWORD, null, dummy), "register bob");
    check(bobReg.user_id === `@js_bob_${tag}:${server}`, `register bob: user_id ${bobReg.user_id}`);
    step("register two users");

    // login: a second device for alice, which does the rest of her part.
    const password = (user) => ({
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password: PASSWORD,
        initial_device_display_name: "js smoke",
    });
    const aliceLogin = await expectOk(anon.loginRequest(password(`js_alice_${tag}`)), "login alice");
    check(aliceLogin.user_id === aliceReg.user_id, `login: user_id ${aliceLogin.user_id}, expected ${aliceReg.user_id}`);
    check(
        aliceLogin.device_id && aliceLogin.device_id !== aliceReg.device_id,
        `login: device_id ${aliceLogin.device_id} is not a new device (register's was ${aliceReg.device_id})`,
    );
    check(aliceLogin.access_token !== aliceReg.access_token, "login: same access token as register's");
    step("login with password");

    const alice = await started(base, aliceLogin);
    const bob = await started(base, bobReg);
    step("startClient: both reach PREPARED");

    // create: a public room with an alias, and one without.
    const aliasLocal = `js_smoke_${tag}`;
    const alias = `#${aliasLocal}:${server}`;
    const publicRoom = { visibility: sdk.Visibility.Public, preset: sdk.Preset.PublicChat };
    const main = (await expectOk(alice.createRoom({ ...publicRoom, room_alias_name: aliasLocal, name: "js smoke" }), "create the aliased room")).room_id;
    check(main?.startsWith("!"), `create: room_id ${main}`);
    const other = (await expectOk(alice.createRoom({ ...publicRoom, name: "js smoke other" }), "create the second room")).room_id;
    check(other !== main, "create: both rooms got the same id");
    const resolved = await expectOk(alice.getRoomIdForAlias(alias), "resolve the alias");
    check(resolved.room_id === main, `resolve ${alias}: ${resolved.room_id}, expected ${main}`);
    await until(alice, () => alice.getRoom(main)?.getMyMembership() === "join", "alice's sync shows her room");
    step("create two rooms, one with an alias");

    // join: by alias and by id.
    const byAlias = await expectOk(bob.joinRoom(alias), `bob joins ${alias} (by alias)`);
    check(byAlias.roomId === main, `join by alias: room ${byAlias.roomId}, expected ${main}`);
    step("join by alias");
    const byId = await expectOk(bob.joinRoom(other), `bob joins ${other} (by id)`);
    check(byId.roomId === other, `join by id: room ${byId.roomId}, expected ${other}`);
    step("join by room id");
    await until(
        bob,
        () => [main, other].every((r) => bob.getRoom(r)?.getMyMembership() === "join"),
        "bob's sync shows both rooms joined",
    );
    await until(
        bob,
        () => bob.getRoom(main)?.getMember(aliceReg.user_id)?.membership === "join",
        "bob's sync shows alice in the room",
    );
    await until(
        alice,
        () => alice.getRoom(main)?.getMember(bobReg.user_id)?.membership === "join",
        "alice's sync shows bob's join",
    );
    step("sync shows both rooms and their members");

    // send / receive: bob's live timeline gets alice's messages in order, once each.
    const received = [];
    bob.on(sdk.RoomEvent.Timeline, (event, room, toStart, removed, data) => {
        if (room?.roomId === main && !toStart && !removed && data?.liveEvent && event.getType() === "m.room.message") {
            received.push([event.getId(), event.getContent().body]);
        }
    });
    const sent = [];
    for (let i = 0; i < MESSAGES; i++) {
        const body = `js smoke ${tag} #${i}`;
        const r = await expectOk(alice.sendTextMessage(main, body), `send message ${i}`);
        check(r.event_id?.startsWith("$"), `send ${i}: event_id ${r.event_id}`);
        sent.push([r.event_id, body]);
    }
    check(new Set(sent.map(([id]) => id)).size === MESSAGES, "send: repeated event ids");
    step(`send ${MESSAGES} messages`);
    await until(bob, () => received.length >= MESSAGES, `bob's timeline receives ${MESSAGES} messages`);
    check(
        JSON.stringify(received) === JSON.stringify(sent),
        `sync: bob's live timeline got\n${show(received)}\nexpected, in this order:\n${show(sent)}`,
    );
    const live = texts(bob.getRoom(main).getLiveTimeline().getEvents());
    check(JSON.stringify(live) === JSON.stringify(sent), `bob's live timeline holds\n${show(live)}\nexpected\n${show(sent)}`);
    step("sync delivers the messages to the live timeline in order, once each");

    // paginate: a fresh login of bob starting with a short timeline, then
    // paginateEventTimeline backwards until the room's creation.
    const last = 3;
    const bobLogin = await expectOk(anon.loginRequest(password(`js_bob_${tag}`)), "login bob");
    const bob2 = await started(base, bobLogin, { initialSyncLimit: last });
    const room2 = bob2.getRoom(main);
    check(room2, `second device: ${main} not in its first sync`);
    const first = texts(room2.getLiveTimeline().getEvents());
    check(
        JSON.stringify(first) === JSON.stringify(sent.slice(-last)),
        `initial sync with timeline limit ${last}:\n${show(first)}\nexpected\n${show(sent.slice(-last))}`,
    );
    let more = true;
    for (let i = 0; i < PAGES && more; i++) {
        more = await expectOk(
            bob2.paginateEventTimeline(room2.getLiveTimeline(), { backwards: true, limit: 4 }),
            "paginate back",
        );
    }
    const events = room2.getLiveTimeline().getEvents();
    check(!more, `paginate: more history after ${PAGES} pages`);
    check(events.some((e) => e.getType() === "m.room.create"), "paginate: the m.room.create event never came");
    const all = texts(events);
    check(JSON.stringify(all) === JSON.stringify(sent), `paginate: the timeline holds\n${show(all)}\nexpected\n${show(sent)}`);
    step("paginate the timeline back from a short initial sync to the room's creation");

    // to-device: alice sends to bob's device with sendToDevice(); bob's sync
    // loop hands it over once (a room message sent after it shows the loop went on).
    const toDevice = [];
    bob.on(sdk.ClientEvent.ToDeviceEvent, (e) => toDevice.push([e.getSender(), e.getType(), e.getContent()]));
    const contentMap = new Map([[bobReg.user_id, new Map([[bobReg.device_id, { smoke: tag }]])]]);
    await expectOk(alice.sendToDevice("org.myelin.smoke", contentMap), "send to-device");
    await until(bob, () => toDevice.length > 0, "bob's sync delivers the to-device message");
    const after = await expectOk(
        alice.sendTextMessage(main, `after to-device ${tag}`),
        "send after to-device",
    );
    await until(bob, () => bob.getRoom(main)?.findEventById(after.event_id), "bob's sync goes on after it");
    const expected = [[aliceReg.user_id, "org.myelin.smoke", { smoke: tag }]];
    check(
        JSON.stringify(toDevice) === JSON.stringify(expected),
        `to-device: bob got ${JSON.stringify(toDevice)}, expected ${JSON.stringify(expected)}`,
    );
    step("to-device message delivered through the sync loop, once");

    // media: alice uploads with uploadContent() (the legacy /_matrix/media/v3/upload);
    // bob fetches the authenticated URL mxcUrlToHttp() makes (/_matrix/client/v1/media),
    // with his token, and without a token it is refused.
    const data = Buffer.from(`js media ${tag} `.repeat(50));
    const uploaded = await expectOk(
        alice.uploadContent(data, { name: "notes.txt", type: "text/plain" }),
        "uploadContent",
    );
    check(uploaded.content_uri?.startsWith(`mxc://${server}/`), `upload: content_uri ${uploaded.content_uri}`);
    const url = bob.mxcUrlToHttp(uploaded.content_uri, undefined, undefined, undefined, false, true, true);
    check(url.startsWith(`${base}/_matrix/client/v1/media/download/`), `mxcUrlToHttp: ${url}`);
    const got = await fetch(url, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
    const body = Buffer.from(await got.arrayBuffer());
    check(got.status === 200 && body.equals(data), `download: ${got.status}, ${body.length} bytes`);
    check(got.headers.get("content-type") === "text/plain", `download: ${got.headers.get("content-type")}`);
    const anonymous = await fetch(url);
    check(anonymous.status === 401, `download without a token: ${anonymous.status}`);
    step("media: uploadContent, then the mxcUrlToHttp authenticated URL downloads it");

    // leave: the room leaves the joined rooms, in sync and on the server.
    await expectOk(bob.leave(other), `bob leaves ${other}`);
    await until(bob, () => bob.getRoom(other)?.getMyMembership() === "leave", "bob's sync shows the room left");
    const joined = (await expectOk(bob.getJoinedRooms(), "joined_rooms after leaving")).joined_rooms;
    check(!joined.includes(other), `joined_rooms after leaving ${other}: ${joined}`);
    check(joined.includes(main), `joined_rooms after leaving ${other}: ${main} missing from ${joined}`);
    step("leave removes the room from joined rooms");

    await threadsUpgradeKnockPushers(base, anon, tag, password, server);
}

// Threads, a room upgrade followed, knocking accepted, pushers: fresh devices
// of both users, with the clients' thread support on (as Element Web runs).
async function threadsUpgradeKnockPushers(base, anon, tag, password, server) {
    const login = async (who) => expectOk(anon.loginRequest(password(`js_${who}_${tag}`)), `login ${who} (threads)`);
    const [aliceLogin, bobLogin] = [await login("alice"), await login("bob")];
    const alice = await started(base, aliceLogin, { threadSupport: true });
    const bob = await started(base, bobLogin, { threadSupport: true });
    const bobId = bobLogin.user_id;
    const publicRoom = { visibility: sdk.Visibility.Private, preset: sdk.Preset.PublicChat };

    // threads: alice starts a thread with sendMessage(room, threadId, ...);
    // bob finds it through /threads (fetchRoomThreads, getThreads) with its
    // reply count, and the list request's root carries the server's summary.
    const room = (await expectOk(alice.createRoom({ ...publicRoom, name: "js threads" }), "create the threads room")).room_id;
    await expectOk(bob.joinRoom(room), "bob joins the threads room");
    await until(bob, () => bob.getRoom(room)?.getMyMembership() === "join", "bob's sync shows the threads room");
    const root = (await expectOk(alice.sendTextMessage(room, `thread root ${tag}`), "send the thread root")).event_id;
    const REPLIES = 3;
    let last;
    for (let i = 0; i < REPLIES; i++) {
        const content = { msgtype: "m.text", body: `thread reply ${i} ${tag}` };
        last = (await expectOk(alice.sendMessage(room, root, content), `send thread reply ${i}`)).event_id;
    }
    step("send a thread's replies with sendMessage(room, threadId, content)");
    const list = await expectOk(
        bob.createThreadListMessagesRequest(room, null, 10, sdk.Direction.Backward, sdk.ThreadFilterType.All),
        "GET /threads",
    );
    const summary = list.chunk?.[0]?.unsigned?.["m.relations"]?.["m.thread"];
    check(list.chunk?.length === 1 && list.chunk[0].event_id === root, `/threads: ${JSON.stringify(list.chunk)}`);
    check(
        summary?.count === REPLIES && summary.latest_event?.event_id === last && summary.current_user_participated === false,
        `/threads: the root's thread summary ${JSON.stringify(summary)}`,
    );
    const bobRoom = bob.getRoom(room);
    await expectOk(bobRoom.fetchRoomThreads(), "fetchRoomThreads");
    // The thread sets itself up after fetchRoomThreads (fetching its events):
    // wait on the room's thread events, not on a sync that may not come.
    const threadSeen = () => bobRoom.getThreads().some((t) => t.id === root && t.length === REPLIES);
    await new Promise((resolve, reject) => {
        const events = [sdk.ThreadEvent.New, sdk.ThreadEvent.Update, sdk.ThreadEvent.NewReply];
        const done = (f) => {
            clearTimeout(timer);
            for (const e of events) bobRoom.off(e, test);
            f();
        };
        const test = () => threadSeen() && done(resolve);
        const what = `bob's room.getThreads() holds the thread with ${REPLIES} replies`;
        const timer = setTimeout(() => done(() => reject(new Failure(`${what}: not seen within 30 s`))), 30_000);
        for (const e of events) bobRoom.on(e, test);
        test();
    });
    step("the other client sees the thread through /threads and getThreads(), with its reply count");

    // upgrade: alice upgrades a room bob is in; bob's client sees the
    // tombstone, joins the successor it names, and finds its predecessor.
    const replacement = (await expectOk(alice.upgradeRoom(room, "10"), "upgradeRoom")).replacement_room;
    check(replacement?.startsWith("!") && replacement !== room, `upgradeRoom: replacement_room ${replacement}`);
    const tombstone = () => bobRoom.currentState.getStateEvents("m.room.tombstone", "")?.getContent();
    await until(bob, () => tombstone()?.replacement_room === replacement, "bob's sync shows the tombstone");
    await expectOk(bob.joinRoom(tombstone().replacement_room), "bob joins the successor");
    await until(bob, () => bob.getRoom(replacement)?.getMyMembership() === "join", "bob's sync shows the successor joined");
    const predecessor = bob.getRoom(replacement).findPredecessor()?.roomId;
    check(predecessor === room, `the successor's predecessor: ${predecessor}, expected ${room}`);
    step("a room upgrade followed: tombstone, successor joined, predecessor found");

    // knock: bob knocks on a knock-rule room, alice sees the knock and
    // accepts it by inviting him, and bob joins.
    const joinRules = { type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } };
    const knockRoom = (await expectOk(
        alice.createRoom({ preset: sdk.Preset.PrivateChat, room_version: "10", initial_state: [joinRules], name: "js knock" }),
        "create a knock room",
    )).room_id;
    await expectOk(bob.knockRoom(knockRoom, { reason: `let me in ${tag}` }), "knockRoom");
    await until(bob, () => bob.getRoom(knockRoom)?.getMyMembership() === "knock", "bob's sync shows his knock");
    await until(
        alice,
        () => alice.getRoom(knockRoom)?.getMember(bobId)?.membership === "knock",
        "alice's sync shows bob's knock",
    );
    await expectOk(alice.invite(knockRoom, bobId), "alice accepts the knock (invite)");
    await until(bob, () => bob.getRoom(knockRoom)?.getMyMembership() === "invite", "bob's sync shows the invite");
    await expectOk(bob.joinRoom(knockRoom), "bob joins the knocked room");
    await until(
        alice,
        () => alice.getRoom(knockRoom)?.getMember(bobId)?.membership === "join",
        "alice's sync shows bob joined",
    );
    step("knock, accept by invite, join");

    // pushers: set (pointing at a push gateway this script runs on
    // loopback), listed as set; bob's message reaches the gateway for
    // alice; then the pusher is deleted (kind null).
    const gateway = await pushGateway();
    try {
        const pusher = {
            pushkey: `js-pushkey-${tag}`,
            kind: "http",
            app_id: "org.myelin.js-smoke",
            app_display_name: "js smoke",
            device_display_name: "js smoke device",
            lang: "en",
            data: { url: gateway.url, format: "event_id_only" },
        };
        await expectOk(alice.setPusher({ ...pusher, append: false }), "setPusher");
        const listed = (await expectOk(alice.getPushers(), "getPushers")).pushers;
        const found = listed?.find((p) => p.pushkey === pusher.pushkey);
        check(
            listed?.length === 1 && found?.app_id === pusher.app_id && found.kind === "http" &&
                found.data?.url === pusher.data.url && found.data.format === "event_id_only" && found.lang === "en",
            `getPushers: ${JSON.stringify(listed)}`,
        );
        const sent = performance.now();
        const pushed = (await expectOk(bob.sendTextMessage(knockRoom, `push me ${tag}`), "bob's message to push")).event_id;
        const n = await gateway.notification((n) => n.event_id === pushed, 10_000);
        const ms = (performance.now() - sent).toFixed(1);
        check(n.room_id === knockRoom, `the push's room_id: ${n.room_id}, expected ${knockRoom}`);
        check(
            n.devices?.[0]?.pushkey === pusher.pushkey && n.devices[0].app_id === pusher.app_id,
            `the push's devices: ${JSON.stringify(n.devices)}`,
        );
        check(n.counts?.unread >= 1 && n.content === undefined, `an event_id_only push: ${JSON.stringify(n)}`);
        step(`bob's message reaches alice's push gateway ${ms} ms after the send`);
        await expectOk(alice.setPusher({ ...pusher, kind: null }), "delete the pusher (kind null)");
        const after = (await expectOk(alice.getPushers(), "getPushers after deleting")).pushers;
        check(after?.length === 0, `getPushers after deleting: ${JSON.stringify(after)}`);
        step(`pushers set, listed and deleted (${server})`);
    } finally {
        gateway.close();
    }
}

// A push gateway on loopback: records the notifications POSTed to
// /_matrix/push/v1/notify and answers {"rejected": []}.
async function pushGateway() {
    const received = [];
    const waiters = new Set();
    const server = createServer((req, res) => {
        let body = "";
        req.on("data", (chunk) => (body += chunk));
        req.on("end", () => {
            if (req.method !== "POST" || req.url !== "/_matrix/push/v1/notify") {
                res.writeHead(404).end();
                return;
            }
            let n;
            try {
                n = JSON.parse(body).notification;
            } catch {
                res.writeHead(400).end();
                return;
            }
            received.push(n);
            res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ rejected: [] }));
            for (const w of waiters) w();
        });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address();
    return {
        url: `http://127.0.0.1:${port}/_matrix/push/v1/notify`,
        // The first notification `wanted` accepts, within `ms`.
        notification: (wanted, ms) =>
            new Promise((resolve, reject) => {
                const look = () => {
                    const n = received.find(wanted);
                    if (n) {
                        clearTimeout(timer);
                        waiters.delete(look);
                        resolve(n);
                    }
                };
                const timer = setTimeout(() => {
                    waiters.delete(look);
                    reject(new Failure(`push gateway: no such notification within ${ms} ms; got ${JSON.stringify(received)}`));
                }, ms);
                waiters.add(look);
                look();
            }),
        close: () => server.close(),
    };
}

await main("js-sdk smoke", "http://127.0.0.1:PORT", (base) => run(base.replace(/\/+$/, "")), SUITE_MS);
