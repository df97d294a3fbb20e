//! Client-Server API handlers, one module per area of the spec.

mod account;
mod account_data;
mod devices;
mod directory;
mod discovery;
mod filter;
mod legacy_sync;
mod profile;
mod push;
mod register;
mod report;
mod room_read;
pub(crate) mod rooms;
mod search;
mod session;
mod sync;

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = discovery::routes(r);
    let r = session::routes(r);
    let r = account::routes(r);
    let r = account_data::routes(r);
    let r = register::routes(r);
    let r = report::routes(r);
    let r = devices::routes(r);
    let r = directory::routes(r);
    let r = profile::routes(r);
    let r = push::routes(r);
    let r = rooms::routes(r);
    let r = room_read::routes(r);
    let r = filter::routes(r);
    let r = search::routes(r);
    let r = legacy_sync::routes(r);
    sync::routes(r)
}
