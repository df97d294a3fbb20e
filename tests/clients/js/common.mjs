// What the matrix-js-sdk suites here share (smoke.mjs, e2ee.mjs): failing a step
// with a message, waiting on the sync loop with a bound, starting clients, and
// running a suite as a script with an overall deadline.

import * as sdk from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import loglevel from "loglevel";

const WAIT_MS = 30_000; // bound on waiting for one thing to arrive through sync

// The library's own log (loglevel): off, or at MYELIN_JS_SDK_LOG (e.g. debug). It logs
// harmless errors (state events of a room it is still creating); its parts make
// their loggers as they start, so quiet() is applied again then.
const LOG_LEVEL = process.env.MYELIN_JS_SDK_LOG ?? "silent";
export const quiet = () => {
    for (const l of [loglevel, ...Object.values(loglevel.getLoggers())]) l.setLevel(LOG_LEVEL, false);
};

export class Failure extends Error {}

export function check(cond, what) {
    if (!cond) throw new Failure(what);
}

export function step(name) {
    console.log(`ok - ${name}`);
}

// Awaits a client-library promise; a rejection fails the step, showing the Matrix error.
export async function expectOk(promise, what) {
    try {
        return await promise;
    } catch (e) {
        const detail = e?.errcode ? `${e.httpStatus} ${e.errcode}: ${e.data?.error ?? e.message}` : String(e);
        throw new Failure(`${what}: ${detail}`);
    }
}

// Resolves once pred() holds, checking after each sync, room event,
// decryption and key backup progress; fails after WAIT_MS.
export function until(client, pred, what) {
    return new Promise((resolve, reject) => {
        const events = [
            sdk.ClientEvent.Sync,
            sdk.RoomEvent.Timeline,
            sdk.RoomEvent.MyMembership,
            sdk.MatrixEventEvent.Decrypted,
            CryptoEvent.KeyBackupSessionsRemaining,
        ];
        const done = (f) => {
            clearTimeout(timer);
            for (const ev of events) client.off(ev, test);
            f();
        };
        const test = () => {
            let ok;
            try {
                ok = pred();
            } catch (e) {
                return done(() => reject(e));
            }
            if (ok) done(() => resolve(ok));
        };
        const timer = setTimeout(
            () => done(() => reject(new Failure(`${what}: not seen within ${WAIT_MS / 1000} s`))),
            WAIT_MS,
        );
        for (const ev of events) client.on(ev, test);
        test();
    });
}

const clients = [];

// A client for an account, started with its sync loop; resolves once the first
// sync is in. With `crypto`, the Rust crypto (WebAssembly, in-memory store) is
// initialised first, as an application does before startClient.
export async function started(base, login, opts = {}, { crypto = false } = {}) {
    const client = sdk.createClient({
        baseUrl: base,
        userId: login.user_id,
        accessToken: login.access_token,
        deviceId: login.device_id,
    });
    clients.push(client);
    if (crypto) await expectOk(client.initRustCrypto({ useIndexedDB: false }), `initRustCrypto of ${login.user_id}`);
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === sdk.SyncState.Prepared) resolve();
            if (state === sdk.SyncState.Error) reject(new Failure(`sync of ${login.user_id}: ${data?.error}`));
        });
    });
    quiet();
    await client.startClient({ lazyLoadMembers: false, ...opts });
    quiet();
    await prepared;
    return client;
}

// Runs `run(...args)` with the command line's arguments (`usage` names them),
// within `ms`; prints the outcome and exits 0 (passed), 1 (failed) or 2 (usage).
export async function main(name, usage, run, ms) {
    const args = process.argv.slice(2);
    if (args.length !== usage.split(" ").length) {
        console.error(`usage: node ${process.argv[1]} ${usage}`);
        process.exit(2);
    }
    const start = Date.now();
    const deadline = setTimeout(() => {
        console.log(`FAILED - the suite did not finish within ${ms / 1000} s`);
        process.exit(1);
    }, ms);
    try {
        await run(...args);
        console.log(`${name}: all steps passed in ${((Date.now() - start) / 1000).toFixed(1)} s`);
        process.exitCode = 0;
    } catch (e) {
        console.log(`FAILED - ${e instanceof Failure ? e.message : e?.stack ?? e}`);
        process.exitCode = 1;
    } finally {
        clearTimeout(deadline);
        for (const c of clients) c.stopClient();
    }
    // Lingering sockets or timers of the library must not keep the process alive.
    process.exit(process.exitCode);
}
