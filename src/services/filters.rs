//! Sync filters: stored per user, referred to by a numeric id.

use ruma::UserId;
use ruma::api::client::filter::FilterDefinition;

use crate::error::{MatrixError, Result};
use crate::storage::Storage;

pub struct Filters {
    storage: Storage,
}

impl Filters {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    pub async fn create(&self, user_id: &UserId, filter: &FilterDefinition) -> Result<String> {
        let json = serde_json::to_string(filter).map_err(MatrixError::internal)?;
        Ok(self
            .storage
            .insert_filter(user_id.as_str(), &json)
            .await?
            .to_string())
    }

    /// The filter, or 404 `M_NOT_FOUND` (ids that are not numbers included).
    pub async fn get(&self, user_id: &UserId, filter_id: &str) -> Result<FilterDefinition> {
        let not_found = || MatrixError::not_found("No such filter");
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        let json = self
            .storage
            .filter(user_id.as_str(), id)
            .await?
            .ok_or_else(not_found)?;
        serde_json::from_str(&json).map_err(MatrixError::internal)
    }
}
