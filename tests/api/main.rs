//! One integration-test binary for the whole HTTP surface (one link step, not
//! one per file). Each module covers one area; `harness` starts servers.
#![allow(
    clippy::too_many_lines,
    reason = "a test reads best as one scenario, top to bottom"
)]

mod harness;

// Client-Server API
mod account_data; // account data (global, room), tags, push rule endpoints, unread counts
mod appservice; // application services: registration files, as_token masquerading, AS register/login, exclusive namespaces, ts, rate_limited, ping, admin appservice_id
mod appservice_queries; // what the homeserver asks application services: user and alias queries, /thirdparty routed and merged
mod appservice_txns; // transactions to application services: interest, order, retries with the same id, durability over restarts, a hanging service isolated
mod bounded_caches; // caches: bounded nonces (and their per-IP limit), UIA sessions, one-entry room caches
mod client_account; // /account/password, /account/deactivate
mod client_basics; // /versions, /.well-known, CORS, 404/405, r0 aliases, capabilities
mod client_compat; // matrix-nio compatibility: device fields, legacy UIA auth, pre-m.mentions push rules
mod client_devices; // /devices, /devices/{id}, /delete_devices, last-seen tracking
mod client_login; // /login, /logout, /logout/all, whoami, tokens (header, query, missing, unknown)
mod client_profile; // /profile and its fields
mod client_pushrules_filters; // /pushrules/, filters
mod client_ratelimit;
mod client_register; // /register (UIA dummy, registration tokens, guests), /register/available // 429 M_LIMIT_EXCEEDED, admins exempt
mod conformance_smalls; // sytest's small causes: push rule paths, send without txn id, event size, typing, UTF-8, redact across rooms, kicks, repeated state, join content, /messages end
mod directory; // aliases, room visibility, /publicRooms, user directory, /relations
mod directory_canonical; // deleting an alias drops it from the canonical alias
mod e2e_cross_signing; // /keys/device_signing/upload (UIA rule), /keys/signatures/upload (failures), /keys/query merges, device_lists, deactivation
mod e2e_keys; // /keys/upload, /keys/query, /keys/claim (concurrent), /keys/changes, /sync key counts and device_lists, keys gone with their device
mod ephemeral; // receipts, read markers, typing, presence
mod ephemeral_messages; // MSC2228 org.matrix.self_destruct_after: pruned when due (messages, event, sync, search), across a restart, switched off
mod erasure; // deactivation with erase: an erased user's events redacted for later joiners (/sync, /messages, /event, /context), admin erase and reactivation
mod group_commit; // the event writer: concurrent sends form one chain, txn retries while queued, a failed write fails alone (and no other room)
mod guest_access; // guests: join only can_join rooms, send/read/leave, removal on revocation, display names, upgrade, no presence, closed endpoints
mod key_backup; // /room_keys/version and /room_keys/keys: versions, keys, the replacement rule, etags, wrong/unknown versions, owners only, deactivation
mod knock; // POST /knock (knock, knock_restricted), rooms.knock in /sync, accept/reject/rescind, restricted joins through the allow list
mod legacy_sync; // deprecated r0 GET /events (long-poll, paging, ephemeral and account data, peeking), /initialSync, /rooms/{id}/initialSync
mod media; // the content repository: upload/download (bytes, headers), dedup on disk, size limit, async uploads, authenticated media, quarantine, remote, params, cut-off uploads, the upload body deadline
mod media_preview; // URL previews: OpenGraph, fallbacks, image stored, cache, blocklist (literal, name, redirect), size cap, non-HTML, disabled, errors
mod media_s3; // the S3 media backend against moto (skipped without it unless MYELIN_REQUIRE_S3=1): round trips, multipart, dedup, async uploads, thumbnails, deletion, cut-off uploads, an unreachable bucket
mod media_thumbnails; // thumbnails: crop/scale of PNG, JPEG, WebP, GIF, EXIF orientation, animated GIFs, configured sizes and on-demand ones, non-images and bombs, legacy auth rule, params, pending uploads
mod observability; // metrics listener (text format, counters by route template, long-polls, caches; promtool), /health (503 when PostgreSQL refuses), X-Request-Id, JSON log lines, SIGHUP log levels
mod presence_sync; // presence through /sync: set_presence, own presence, shared rooms only, newly shared rooms
mod profile_fields; // custom profile fields (v1.16, MSC4133): set/get/delete, stable and unstable paths, key and size limits, erasure
mod profile_propagation; // a profile change reaches the member event of every joined room
mod push; // pushers (set/list/delete/append/validation, device and account deletion), delivery to a fake gateway (shape, event_id_only, retries in order, rejected pushkeys, restart), /notifications
mod reverse_proxy; // trusted_proxies: X-Forwarded-For / Forwarded, last-seen IP, login limit per client
mod room_summary; // GET /room_summary/{roomIdOrAlias} and MSC3266's unstable paths: fields, membership, visibility (unauthenticated too), errors
mod room_upgrade; // POST /rooms/{id}/upgrade: tombstone, copied state, aliases, directory, carried tags and push rules
mod room_versions; // every stable room version 1-12: create, join, send, read, state, redact, kick, ban; id and PDU formats; capabilities
mod rooms_races; // concurrent createRoom (one alias, one user), no-op membership changes
mod rooms_read; // /event, /state, /members, /joined_members, /joined_rooms, /messages, /context, history visibility
mod rooms_write; // createRoom, membership, send (txn ids), state PUT, redact
mod search; // POST /search (shape, paging, order, keys, filter, context, state, groups, edits, redactions, visibility, errors), fulltext reindex job, index rebuilt at start
mod sliding_sync; // simplified sliding sync (MSC4186): positions, lists, room fields, required state, incremental answers, long-poll, subscriptions, filters, extensions
mod sliding_sync_lists; // sliding sync's in-memory room lists: joins, leaves, invites, recency, m.direct, tags, encryption, upgrades and eviction seen by the next first response
mod spaces; // GET /rooms/{id}/hierarchy: depth-first order, max_depth, paging, suggested_only, visibility, cycles
mod spec_versions; // /versions checked: every endpoint of each advertised spec version is routed (spec_endpoints.txt)
mod startup_endpoints; // /account/3pid*, requestToken, /thirdparty, OpenID tokens and federation userinfo, /voip/turnServer, capabilities and versions flags
mod sync; // /sync: initial, incremental, long-poll, filters, lazy members, invites/leaves, summary
mod sync_conformance; // /sync as sytest expects: newly joined and left rooms, current state in timelines, filtered-out rooms, summaries, account data filters, ignored users
mod sync_details; // r0 room events with user_id, read receipts never moving back, presence of newly shared users who never had one
mod threads; // GET /threads (order, include, paging, visibility, errors), thread summaries in every event answer, threaded receipts, unread counts by thread
mod to_device; // PUT /sendToDevice and /sync to_device: shape, acknowledgement, txn ids, wildcard, wake-ups, 100 per sync, deleted devices, restarts
mod uia; // UIA sessions bound to their operation and caller, registration sessions remember and repeat
mod user_directory; // /user_directory/search: shared and public rooms (join rules, history visibility), guests, deactivated, migration, errors

// Request input and connections, across both APIs
mod http_input; // empty body == {}, body cap before reading, body-read timeout, keep-alive after early answers (raw TCP), search-term bounds

// Admin API
mod admin_auth_matrix; // every admin endpoint: no/bad/normal/deactivated tokens, admin success, malformed and unknown ids, CORS
mod admin_evacuate; // /_dendrite/admin/evacuateRoom, evacuateUser
mod admin_media; // Synapse's media admin API: user media (list, delete), info, delete (one, by age/size/avatars), quarantine/protect, room media, cache purge, statistics
mod admin_misc;
mod admin_notices; // send_server_notice (POST, PUT txn), broadcast_server_notice
mod admin_purge; // purgeRoom: no row left in any table
mod admin_purge_history; // purge_history + status, the generic job status
mod admin_register; // /_synapse/admin/v1/register (shared secret, HMAC vectors)
mod admin_reports; // event/room/user reports, /_synapse/admin/v1/event_reports, admin auth matrix
mod admin_reset_password; // /_dendrite/admin/resetPassword/{userID}
mod admin_synadm; // synadm (the Synapse admin CLI from PyPI) run against the server, side effects checked over HTTP
mod admin_whois; // whois at both paths // server_version, admin check on every request, error shapes

// Server-Server API
mod federation; // issue 22's first step: TLS listener, keys and the notary API, X-Matrix, queries, remote profiles
mod federation_keys; // GET /_matrix/key/v2/server

// The binary
mod backup; // myelin backup under send load, restore (refusals, --force), migrate-db SQLite -> PostgreSQL
mod cli; // generate-config, create-account, serve config errors
mod crash; // kill -9 and restart: search catches up, interrupted admin jobs complete
mod lifecycle; // background workers, the cache report, shutdown drains the writer
mod shutdown; // SIGTERM under send load: parked syncs answered, every acknowledged send kept, exit 0

// The suite itself
mod test_databases; // a dropped test server leaves no data dir or PostgreSQL database behind
