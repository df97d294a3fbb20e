//! User profiles of local users: display name, avatar and custom fields
//! (spec v1.16, MSC4133).

use ruma::UserId;
use serde_json::{Map, Value};

use crate::error::{MatrixError, Result};
use crate::storage::Storage;

pub struct Profiles {
    storage: Storage,
    /// Serializes custom field writes, so that the size check and the write
    /// see the same profile.
    field_writes: tokio::sync::Mutex<()>,
}

/// Longest custom field name, in bytes (the spec's 255).
pub const MAX_FIELD_NAME_BYTES: usize = 255;
/// Largest whole profile, as JSON, in bytes (the spec's 64 KiB).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// `displayname` and `avatar_url`, the fields that live in `profiles` and
/// go into member events.
pub fn is_standard_field(name: &str) -> bool {
    name == "displayname" || name == "avatar_url"
}

/// A field name as the spec requires it: the Common Namespaced Identifier
/// Grammar (`[a-z][a-z0-9._-]*`, at most 255 bytes), as Synapse checks it;
/// 400 `M_KEY_TOO_LARGE` when longer, `M_INVALID_PARAM` otherwise.
pub fn check_field_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(MatrixError::invalid_param("Field name too short"));
    }
    if name.len() > MAX_FIELD_NAME_BYTES {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::KeyTooLarge,
            "Field name too long",
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    {
        return Err(MatrixError::invalid_param(
            "Field name does not follow the Common Namespaced Identifier Grammar",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Profile {
    /// The profile as a member event carries it: `displayname` and
    /// `avatar_url`, each only when set.
    pub fn member_content(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut content = serde_json::Map::new();
        if let Some(n) = &self.displayname {
            content.insert("displayname".into(), n.clone().into());
        }
        if let Some(a) = &self.avatar_url {
            content.insert("avatar_url".into(), a.clone().into());
        }
        content
    }
}

impl Profiles {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            field_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The profile, or 404 `M_NOT_FOUND` for a user we don't know.
    pub async fn get(&self, user_id: &UserId) -> Result<Profile> {
        let row = self
            .storage
            .profile(user_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Profile not found"))?;
        Ok(Profile {
            displayname: row.displayname,
            avatar_url: row.avatar_url,
        })
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        Ok(self
            .storage
            .set_displayname(user_id.as_str(), name.filter(|n| !n.is_empty()))
            .await?)
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> Result<()> {
        Ok(self
            .storage
            .set_avatar_url(user_id.as_str(), url.filter(|u| !u.is_empty()))
            .await?)
    }

    /// The custom fields of a user's profile (not `displayname` and
    /// `avatar_url`), by name.
    pub async fn fields(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        let rows = self.storage.profile_fields(user_id.as_str()).await?;
        rows.into_iter()
            .map(|(name, json)| {
                Ok((
                    name,
                    serde_json::from_str(&json).map_err(MatrixError::internal)?,
                ))
            })
            .collect()
    }

    /// One custom field, or 404 `M_NOT_FOUND` (as for an unknown user).
    pub async fn field(&self, user_id: &UserId, name: &str) -> Result<Value> {
        self.get(user_id).await?;
        let json = self
            .storage
            .profile_field(user_id.as_str(), name)
            .await?
            .ok_or_else(|| MatrixError::not_found("Profile field not found"))?;
        serde_json::from_str(&json).map_err(MatrixError::internal)
    }

    /// Sets a custom field; 400 `M_PROFILE_TOO_LARGE` when the whole
    /// profile as JSON would pass 64 KiB (nothing is written then).
    pub async fn set_field(&self, user_id: &UserId, name: &str, value: &Value) -> Result<()> {
        let _write = self.field_writes.lock().await;
        let standard = self.get(user_id).await?;
        let mut profile = self.fields(user_id).await?;
        profile.insert(name.to_owned(), value.clone());
        profile.extend(standard.member_content());
        let size = serde_json::to_vec(&profile)
            .map_err(MatrixError::internal)?
            .len();
        if size > MAX_PROFILE_BYTES {
            return Err(MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::ProfileTooLarge,
                format!("The profile would be {size} bytes, more than {MAX_PROFILE_BYTES}"),
            ));
        }
        let json = serde_json::to_string(value).map_err(MatrixError::internal)?;
        Ok(self
            .storage
            .set_profile_field(user_id.as_str(), name, &json)
            .await?)
    }

    /// Removes a custom field (nothing to do when it is not set).
    pub async fn delete_field(&self, user_id: &UserId, name: &str) -> Result<()> {
        let _write = self.field_writes.lock().await;
        Ok(self
            .storage
            .delete_profile_field(user_id.as_str(), name)
            .await?)
    }

    /// Removes every custom field (account erasure).
    pub async fn erase_fields(&self, user_id: &UserId) -> Result<()> {
        let _write = self.field_writes.lock().await;
        Ok(self
            .storage
            .delete_all_profile_fields(user_id.as_str())
            .await?)
    }
}
