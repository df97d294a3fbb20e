// Encryption across SDKs: matrix-js-sdk with its Rust crypto (the npm package's
// @matrix-org/matrix-sdk-crypto-wasm, in-memory store, no browser) talks with a
// matrix-sdk (Rust) user in an encrypted room. Driven by tests/e2e/js_interop.rs,
// which starts the server, creates the accounts, the room and the invite:
//
//     node tests/clients/js/e2ee.mjs BASE_URL USER_ID PASSWORD ROOM_ID BODY REPLY
//
// The js user logs in (a new device), initialises Rust crypto, starts its sync
// loop, bootstraps cross-signing (its keys and its device's signature go to the
// server), joins ROOM_ID once invited, sees that the room is encrypted, and sends
// BODY; it prints `sent {"event_id","device_id"}` (one line of JSON after the
// word). It then waits for a message from someone else whose decrypted body is
// REPLY and prints `received {"event_id","sender"}`. Last it turns key backup on
// (resetKeyBackup) and checks the server holds both of the room's sessions.
// Steps print `ok - ...`.
// Exits 0 when every step passed, 1 on the first failure, 2 on bad usage.

import * as sdk from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { check, expectOk, main, started, step, until } from "./common.mjs";

const SUITE_MS = 120_000;

// The crypto's WebAssembly logs through console.debug and console.info, past
// loglevel: quiet too unless MYELIN_JS_SDK_LOG asks for the library's log.
if (!process.env.MYELIN_JS_SDK_LOG) console.debug = console.info = () => {};

async function run(base, userId, password, roomId, body, reply) {
    base = base.replace(/\/+$/, "");
    const anon = sdk.createClient({ baseUrl: base });
    const login = await expectOk(
        anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: userId },
            password,
            initial_device_display_name: "js e2ee",
        }),
        `login ${userId}`,
    );
    check(login.user_id === userId && login.device_id, `login: ${JSON.stringify(login)}`);
    // Members lazy-loaded, as Element does: the crypto then fetches them itself before encrypting.
    const client = await started(base, login, { lazyLoadMembers: true }, { crypto: true });
    const crypto = client.getCrypto();
    check(crypto, "getCrypto(): no crypto after initRustCrypto");
    const own = await expectOk(crypto.getOwnDeviceKeys(), "getOwnDeviceKeys");
    check(own.ed25519 && own.curve25519, `own device keys: ${JSON.stringify(own)}`);
    step("log in, initialise Rust crypto, first sync");

    // Cross-signing as Element sets it up: the first upload of the keys needs
    // no user-interactive auth (MSC3967), so the callback sends no auth.
    await expectOk(
        crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(null) }),
        "bootstrapCrossSigning",
    );
    const cs = await crypto.getCrossSigningStatus();
    check(
        cs.publicKeysOnDevice && Object.values(cs.privateKeysCachedLocally).every(Boolean),
        `cross-signing status after bootstrap: ${JSON.stringify(cs)}`,
    );
    const mine = await crypto.getDeviceVerificationStatus(userId, login.device_id);
    check(mine?.crossSigningVerified, `own device not cross-signing verified: ${JSON.stringify(mine)}`);
    step("bootstrap cross-signing; the device is signed by its self-signing key");

    await until(client, () => client.getRoom(roomId)?.getMyMembership() === "invite", `the invite to ${roomId}`);
    await expectOk(client.joinRoom(roomId), `join ${roomId}`);
    await until(client, () => client.getRoom(roomId)?.getMyMembership() === "join", "the join through sync");
    await until(client, () => client.getRoom(roomId)?.hasEncryptionStateEvent(), "the room's m.room.encryption");
    check(await crypto.isEncryptionEnabledInRoom(roomId), "the crypto does not consider the room encrypted");
    step("join the encrypted room");

    const sent = await expectOk(client.sendTextMessage(roomId, body), "send the encrypted message");
    check(sent.event_id?.startsWith("$"), `send: event_id ${sent.event_id}`);
    const local = await until(client, () => client.getRoom(roomId)?.findEventById(sent.event_id), "the sent event");
    check(local.isEncrypted(), `the sent event ${sent.event_id} went out as ${local.getWireType()}, not encrypted`);
    console.log(`sent ${JSON.stringify({ event_id: sent.event_id, device_id: login.device_id })}`);
    step("send an encrypted message");

    const got = await until(
        client,
        () =>
            client
                .getRoom(roomId)
                ?.getLiveTimeline()
                .getEvents()
                .find((e) => e.getSender() !== userId && e.isEncrypted() && e.getContent()?.body === reply),
        `the encrypted reply ${JSON.stringify(reply)}, decrypted`,
    );
    check(got.getType() === "m.room.message", `the reply decrypted to a ${got.getType()}`);
    console.log(`received ${JSON.stringify({ event_id: got.getId(), sender: got.getSender() })}`);
    step("decrypt the reply");

    // Key backup as Element turns it on: a new backup version, then the
    // library's backup loop uploads the room keys this device holds (its own
    // session and the one of the reply) and says when none is left.
    let remaining = null;
    client.on(CryptoEvent.KeyBackupSessionsRemaining, (n) => (remaining = n));
    await expectOk(crypto.resetKeyBackup(), "resetKeyBackup");
    // resetKeyBackup starts the check that enables the backup without waiting for it.
    const checked = await expectOk(crypto.checkKeyBackupAndEnable(), "checkKeyBackupAndEnable");
    check(checked?.trustInfo?.matchesDecryptionKey, `the new backup: ${JSON.stringify(checked)}`);
    const version = await crypto.getActiveSessionBackupVersion();
    check(version === checked.backupInfo.version, `active backup version ${version}, server's ${checked.backupInfo.version}`);
    await until(client, () => remaining === 0, "the backup loop's end (no session left to back up)");
    const v3 = { prefix: sdk.ClientPrefix.V3 };
    const info = await expectOk(
        client.http.authedRequest(sdk.Method.Get, "/room_keys/version", undefined, undefined, v3),
        "GET /room_keys/version",
    );
    check(info.version === version && info.count === 2, `backup version: ${JSON.stringify(info)}, expected version ${version} with 2 keys`);
    const backup = await expectOk(
        client.http.authedRequest(sdk.Method.Get, `/room_keys/keys/${encodeURIComponent(roomId)}`, { version }, undefined, v3),
        "GET /room_keys/keys/{roomId}",
    );
    const sessions = Object.keys(backup.sessions ?? {});
    check(sessions.length === 2, `backed-up sessions of the room: ${JSON.stringify(backup)}`);
    step("key backup: a new version holds the room's two sessions");
}

await main("js-sdk e2ee", "BASE_URL USER_ID PASSWORD ROOM_ID BODY REPLY", run, SUITE_MS);
