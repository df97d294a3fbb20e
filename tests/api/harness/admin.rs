//! Admin endpoints as data: one request, replayed as different callers.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::TestServer;

/// One admin endpoint, with a request an admin can make successfully.
pub struct Endpoint {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Endpoint {
    /// "METHOD path", for failure messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Sends `e` with `token` (or none).
pub async fn call(server: &TestServer, e: &Endpoint, token: Option<&str>) -> (StatusCode, Value) {
    server
        .request(e.method.clone(), &e.path, token, e.body.clone())
        .await
}
