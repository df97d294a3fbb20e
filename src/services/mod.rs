//! Domain logic. Handlers call these; these call storage.

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod admin_users;
pub mod appservice_txns;
pub mod appservices;
pub mod cross_signing;
pub mod directory;
pub mod e2e_keys;
pub mod ephemeral;
pub mod expiring;
pub mod expiry;
pub mod federation;
pub mod filtering;
pub mod filters;
pub mod guests;
pub mod jobs;
pub mod key_backup;
pub mod key_cache;
pub mod legacy_sync;
pub mod lifecycle;
pub mod media;
pub mod memberships;
pub mod notices;
pub mod notifications;
pub mod observe;
pub mod openid;
pub mod passwords;
pub mod pipeline;
pub mod presence;
pub mod profiles;
pub mod push_rules;
pub mod pushers;
pub mod ratelimit;
pub mod registration_tokens;
pub mod relations;
pub mod reports;
pub mod room_admin;
pub mod room_upgrade;
pub mod rooms;
pub mod search;
pub mod sessions;
pub mod shared_secret;
pub mod sliding_sync;
pub mod spaces;
pub mod stream;
pub mod sync;
pub mod to_device;
pub mod turn;
pub mod uia;
pub mod workers;

use std::sync::Arc;

use ruma::OwnedServerName;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::keys::SigningKey;
use crate::storage::Storage;

/// Every service, built once at start-up and shared by all requests.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    storage: Storage,
    pub signing_key: Arc<SigningKey>,
    /// The time every service reads (the system's, or a test's mock).
    pub clock: SharedClock,
    pub stream: Arc<stream::Stream>,
    pub rooms: rooms::Rooms,
    pub account_data: account_data::AccountData,
    pub ephemeral: ephemeral::Ephemeral,
    pub unread: Arc<notifications::UnreadCounts>,
    /// Pushers, notifications and their delivery (a pipeline subscriber).
    pub pushers: Arc<pushers::Pushers>,
    /// The member events lazy-loading syncs sent each device.
    pub lazy_members: sync::LazyMembers,
    /// Sliding sync connections (in memory).
    pub sliding: sliding_sync::Connections,
    pub presence: presence::Presence,
    pub to_device: to_device::ToDevice,
    pub key_backup: key_backup::KeyBackup,
    pub e2e_keys: e2e_keys::E2eKeys,
    pub cross_signing: cross_signing::CrossSigning,
    /// The content repository.
    pub media: media::Media,
    pub jobs: jobs::Jobs,
    /// `None` when `search.enabled` is off.
    pub search: Option<Arc<search::Search>>,
    /// The index was (re)created empty at start: rebuild it from the events.
    pub search_needs_rebuild: bool,
    pub accounts: accounts::Accounts,
    /// The registered application services (`app_services` in the config).
    pub appservices: appservices::AppServices,
    /// Transactions to the application services (a pipeline subscriber).
    pub as_delivery: Arc<appservice_txns::Delivery>,
    pub sessions: Arc<sessions::Sessions>,
    pub profiles: profiles::Profiles,
    pub openid: openid::OpenId,
    /// Requests to other servers, their keys, incoming authentication.
    pub federation: federation::Federation,
    pub filters: filters::Filters,
    pub registration_tokens: registration_tokens::RegistrationTokens,
    pub uia: uia::Uia,
    /// Present only when `registration.shared_secret` is configured.
    pub shared_secret: Option<shared_secret::SharedSecret>,
    /// Per (user, device); `None` when rate limits are off.
    pub client_limiter: Option<ratelimit::RateLimiter>,
    /// Per IP, for login and registration; `None` when rate limits are off.
    pub login_limiter: Option<ratelimit::RateLimiter>,
    /// Search's subscriber to the event pipeline, whose task
    /// [`Services::start`] starts.
    indexer: Option<Arc<search::Indexer>>,
    /// When the next ephemeral message is due (`None` when
    /// `rooms.ephemeral_messages` is off).
    expiry: Option<Arc<expiry::MessageExpiry>>,
    /// The background tasks (`lifecycle.rs`).
    workers: workers::Workers,
    /// Prometheus metrics (`crate::metrics`; scrape-time values in
    /// `observe.rs`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The highest stream position anything took before start-up: events,
/// the side streams, to-device sends and device-list changes.
async fn start_position(storage: &Storage) -> sqlx::Result<i64> {
    Ok([
        storage.max_stream_ordering().await?,
        storage.max_side_stream().await?,
        storage.to_device_high_water().await?,
        storage.device_lists_high_water().await?,
    ]
    .into_iter()
    .max()
    .unwrap_or(0))
}

/// The long admin jobs, each kind with its runner.
fn admin_jobs(storage: &Storage, clock: &SharedClock) -> jobs::Jobs {
    jobs::Jobs::new(
        storage.clone(),
        jobs::Runners {
            reindex: search::reindex_job,
            purge_history: admin::purge_history_job,
            room_delete: admin::resume_room_delete,
        },
        clock.clone(),
    )
}

impl Services {
    /// Builds every service from its explicit dependencies, in dependency
    /// order. Nothing runs yet: [`Services::start`] (`lifecycle.rs`) starts
    /// the background work and [`Services::shutdown`] stops it.
    pub async fn new(
        config: Config,
        storage: Storage,
        signing_key: SigningKey,
        clock: SharedClock,
    ) -> anyhow::Result<Arc<Self>> {
        // What the services share: the server's identity and the stream.
        let server_name = OwnedServerName::try_from(config.server_name.as_str())?;
        let signing_key = Arc::new(signing_key);
        let stream = Arc::new(stream::Stream::new(start_position(&storage).await?));
        let lists = e2e_keys::DeviceLists::shared(&storage, &stream, config.caches.device_keys);
        let workers = workers::Workers::default();
        let metrics = observe::new_metrics(&config, &storage);

        // Accounts, sessions and what guards them.
        let hasher = passwords::PasswordHasherService::new(&config.password_hashing);
        let accounts =
            accounts::Accounts::new(storage.clone(), hasher, server_name.clone(), clock.clone())
                .with_device_lists(lists.clone());
        let sessions = sessions::Sessions::new(storage.clone(), clock.clone(), lists.clone());
        let appservices = appservices::AppServices::load(&config, &server_name, storage.clone())?;
        appservices.create_senders(clock.now_ms()).await?;
        let profiles = profiles::Profiles::new(storage.clone());
        let openid = openid::OpenId::new(storage.clone(), clock.clone());
        let (client_limiter, login_limiter) = ratelimit::RateLimiter::client_and_login(&config);

        let listeners = EventListeners::build(&config, &storage, &stream, &appservices).await?;

        // Rooms (the event pipeline) and what reads or writes beside it.
        let default_version = ruma::RoomVersionId::try_from(config.rooms.default_version.as_str())?;
        let rooms = rooms::Rooms::new(rooms::RoomsDeps {
            storage: storage.clone(),
            server_name: server_name.clone(),
            signing_key: signing_key.clone(),
            stream: stream.clone(),
            default_version,
            subscribers: listeners.subscribers,
            caches: &config.caches,
            clock: clock.clone(),
            ephemeral_messages: config.rooms.ephemeral_messages,
            metrics: metrics.clone(),
        });
        let account_data = account_data::AccountData::new(
            storage.clone(),
            stream.clone(),
            listeners.unread.clone(),
        );
        account_data.subscribe(listeners.room_lists.clone());

        let federation = federation::Federation::new(
            &config,
            storage.clone(),
            server_name.clone(),
            signing_key.clone(),
            clock.clone(),
        )?;
        let federation_client = federation.client.clone();

        Ok(Arc::new(Self {
            federation,
            media: media::Media::open(&config, storage.clone(), sessions.clone(), clock.clone())?,
            to_device: to_device::ToDevice::load(storage.clone(), stream.clone(), &config, &lists)
                .await?,
            key_backup: key_backup::KeyBackup::new(storage.clone()),
            cross_signing: cross_signing::CrossSigning::new(
                storage.clone(),
                stream.clone(),
                lists.clone(),
            ),
            e2e_keys: e2e_keys::E2eKeys::new(storage.clone(), lists, &server_name)
                .with_federation(federation_client),
            filters: filters::Filters::new(storage.clone()),
            ephemeral: ephemeral::Ephemeral::new(storage.clone(), stream.clone(), clock.clone()),
            presence: presence::Presence::new(storage.clone(), stream.clone(), clock.clone()),
            jobs: admin_jobs(&storage, &clock),
            registration_tokens: registration_tokens::RegistrationTokens::new(
                storage.clone(),
                clock.clone(),
            ),
            uia: uia::Uia::new(config.caches.uia_sessions),
            shared_secret: config
                .registration
                .shared_secret
                .clone()
                .map(|k| shared_secret::SharedSecret::new(k, config.caches.registration_nonces)),
            config,
            server_name,
            storage,
            signing_key,
            clock,
            stream,
            rooms,
            account_data,
            unread: listeners.unread,
            pushers: listeners.pushers,
            lazy_members: sync::LazyMembers::default(),
            sliding: sliding_sync::Connections::new(listeners.room_lists),
            search: listeners.search,
            search_needs_rebuild: listeners.search_needs_rebuild,
            accounts,
            appservices,
            as_delivery: listeners.as_delivery,
            sessions,
            profiles,
            openid,
            client_limiter,
            login_limiter,
            indexer: listeners.indexer,
            expiry: listeners.expiry,
            workers,
            metrics,
        }))
    }
}

/// What hears of every committed event (unread counts, search, push,
/// application-service delivery, message expiry), subscribed to the
/// pipeline the rooms service publishes to.
struct EventListeners {
    subscribers: Arc<pipeline::Subscribers>,
    unread: Arc<notifications::UnreadCounts>,
    search: Option<Arc<search::Search>>,
    search_needs_rebuild: bool,
    indexer: Option<Arc<search::Indexer>>,
    pushers: Arc<pushers::Pushers>,
    as_delivery: Arc<appservice_txns::Delivery>,
    expiry: Option<Arc<expiry::MessageExpiry>>,
    /// Sliding sync's room lists (also told of account data changes).
    room_lists: Arc<sliding_sync::RoomLists>,
}

impl EventListeners {
    async fn build(
        config: &Config,
        storage: &Storage,
        stream: &Arc<stream::Stream>,
        appservices: &appservices::AppServices,
    ) -> anyhow::Result<Self> {
        let subscribers = Arc::new(pipeline::Subscribers::default());
        let unread = Arc::new(notifications::UnreadCounts::new(
            config.caches.unread_counts,
        ));
        subscribers.subscribe(unread.clone());
        let (search, search_needs_rebuild) = search::Search::open_if_enabled(config, stream)?;
        let indexer = search.clone().map(search::Indexer::new);
        if let Some(indexer) = &indexer {
            subscribers.subscribe(indexer.clone());
        }
        let pushers = pushers::Pushers::new(storage, config, stream.current()).await?;
        subscribers.subscribe(pushers.clone());
        let as_delivery = appservice_txns::Delivery::new(
            appservices.all(),
            &config.app_service_delivery,
            &crate::net::outbound::extra_roots(&config.outbound.ca_files)?,
            stream.current(),
        )?;
        if as_delivery.is_active() {
            subscribers.subscribe(as_delivery.clone());
        }
        let expiry =
            expiry::MessageExpiry::subscribed(&config.rooms, &subscribers, storage).await?;
        let room_lists = Arc::new(sliding_sync::RoomLists::new(
            config.caches.sliding_sync_rooms,
        ));
        subscribers.subscribe(room_lists.clone());
        Ok(Self {
            subscribers,
            unread,
            search,
            search_needs_rebuild,
            indexer,
            pushers,
            as_delivery,
            expiry,
            room_lists,
        })
    }
}
