//! User profiles (display name, avatar) of local users.

use ruma::UserId;

use crate::error::{MatrixError, Result};
use crate::storage::Storage;

pub struct Profiles {
    storage: Storage,
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
        Self { storage }
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
}
