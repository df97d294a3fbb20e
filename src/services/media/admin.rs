//! The content repository's admin side (Synapse's media admin API): a
//! user's media, information on one media id, deletion (one, a user's, or
//! old media by last access and size, avatars kept on request), quarantine
//! (one, a room's, a user's) and protection, the media a room's events
//! name, and per-user usage. Deletion removes the rows (media and
//! thumbnails) in one transaction, then the bodies nothing names any more.

use std::collections::HashSet;

use ruma::{MxcUri, UserId};
use serde_json::Value;

use super::Media;
use crate::error::{MatrixError, Result};
pub use crate::storage::media::MediaRow;
pub use crate::storage::media_admin::{
    Page, StatsFilter, UserMediaUsage, media_order_column, stats_order_column,
};

/// The media a room's events name, as `mxc://` URIs: this server's and
/// other servers'.
#[derive(Debug, Default)]
pub struct RoomMedia {
    pub local: Vec<String>,
    pub remote: Vec<String>,
}

/// What old media to delete.
#[derive(Debug, Clone, Copy)]
pub struct OldMedia {
    /// Last accessed (or, never accessed, uploaded) before this time, in ms.
    pub before_ts: i64,
    /// Larger than this many bytes.
    pub size_gt: i64,
    /// Keep media used as a user's, room's or room member's avatar.
    pub keep_profiles: bool,
}

impl Media {
    /// A page of the media `user` uploaded, and how many there are.
    pub async fn user_media(&self, user: &UserId, page: Page) -> Result<(Vec<MediaRow>, i64)> {
        Ok(self
            .storage
            .user_media_page(self.server_name.as_str(), user.as_str(), page)
            .await?)
    }

    /// Deletes the page of `user`'s media that [`Media::user_media`] lists;
    /// the ids deleted.
    pub async fn delete_user_media(&self, user: &UserId, page: Page) -> Result<Vec<String>> {
        let (rows, _) = self.user_media(user, page).await?;
        let ids: Vec<String> = rows.into_iter().map(|r| r.media_id).collect();
        self.delete_media_ids(&ids).await
    }

    /// The row of a media id, 404 `M_NOT_FOUND` when there is none (remote
    /// media included: this server keeps no copies of remote media yet).
    pub async fn media_info(&self, server_name: &str, media_id: &str) -> Result<MediaRow> {
        self.storage
            .media(server_name, media_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown media"))
    }

    /// Deletes one local media id: 400 for remote media, 404 for unknown.
    pub async fn delete_one(&self, server_name: &str, media_id: &str) -> Result<Vec<String>> {
        if server_name != self.server_name.as_str() {
            return Err(MatrixError::unknown(
                http::StatusCode::BAD_REQUEST,
                "Can only delete local media",
            ));
        }
        self.media_info(server_name, media_id).await?;
        self.delete_media_ids(&[media_id.to_owned()]).await
    }

    /// Deletes the local media `old` describes (never quarantined or
    /// protected media); the ids deleted.
    pub async fn delete_old(&self, old: OldMedia) -> Result<Vec<String>> {
        let mut ids = self
            .storage
            .old_media_ids(self.server_name.as_str(), old.before_ts, old.size_gt)
            .await?;
        if old.keep_profiles {
            let avatars = self.avatar_media_ids().await?;
            ids.retain(|id| !avatars.contains(id));
        }
        self.delete_media_ids(&ids).await
    }

    /// Deletes local media ids, their thumbnails, and then the bodies no
    /// other media or thumbnail names; the ids that existed.
    pub async fn delete_media_ids(&self, media_ids: &[String]) -> Result<Vec<String>> {
        if media_ids.is_empty() {
            return Ok(Vec::new());
        }
        let deleted = self
            .storage
            .delete_media_rows(self.server_name.as_str(), media_ids)
            .await?;
        for sha256 in &deleted.bodies {
            if self.storage.media_body_in_use(sha256).await? {
                continue;
            }
            // The rows are gone already: a body left behind is only disk
            // space, so the deletion still succeeds.
            if let Err(e) = self.store.delete(sha256).await {
                tracing::warn!(sha256, error = %e, "could not delete a media body");
            }
        }
        Ok(deleted.media_ids)
    }

    /// The local media ids used as avatars: users' (profiles), rooms'
    /// (current `m.room.avatar`) and room members' (current member events).
    async fn avatar_media_ids(&self) -> Result<HashSet<String>> {
        let (profiles, events) = self.storage.avatar_sources().await?;
        let from_events = events.iter().filter_map(|json| {
            let event: Value = serde_json::from_str(json).ok()?;
            let content = &event["content"];
            let key = if event["type"] == "m.room.avatar" {
                "url"
            } else {
                "avatar_url"
            };
            content[key].as_str().map(str::to_owned)
        });
        Ok(profiles
            .into_iter()
            .chain(from_events)
            .filter_map(|uri| self.local_media_id(&uri))
            .collect())
    }

    /// The media id of an `mxc://` URI of this server.
    fn local_media_id(&self, uri: &str) -> Option<String> {
        let uri = <&MxcUri>::from(uri);
        let (server, media_id) = uri.parts().ok()?;
        (server == self.server_name).then(|| media_id.to_owned())
    }

    /// The media a room's events name (as Synapse: the `url` of events
    /// that have one, and their `info.thumbnail_url`), newest event first,
    /// each URI once. Encrypted events name none the server can see. 404
    /// for an unknown room.
    pub async fn room_media(&self, room_id: &str) -> Result<RoomMedia> {
        if self.storage.room(room_id).await?.is_none() {
            return Err(MatrixError::not_found("Room not found"));
        }
        let mut seen = HashSet::new();
        let mut media = RoomMedia::default();
        for json in self.storage.room_events_naming_media(room_id).await? {
            let Ok(event) = serde_json::from_str::<Value>(&json) else {
                continue;
            };
            let content = &event["content"];
            let Some(url) = content["url"].as_str() else {
                continue;
            };
            let thumbnail = content["info"]["thumbnail_url"].as_str();
            for uri in std::iter::once(url).chain(thumbnail) {
                let Ok((server, _)) = <&MxcUri>::from(uri).parts() else {
                    continue;
                };
                if !seen.insert(uri.to_owned()) {
                    continue;
                }
                if server == self.server_name {
                    media.local.push(uri.to_owned());
                } else {
                    media.remote.push(uri.to_owned());
                }
            }
        }
        Ok(media)
    }

    /// Quarantines the local media a room's events name, except protected
    /// media; how many were quarantined (remote media: none is kept here).
    pub async fn quarantine_room(&self, room_id: &str, by: &str) -> Result<u64> {
        let media = self.room_media(room_id).await?;
        let ids: Vec<String> = media
            .local
            .iter()
            .filter_map(|uri| self.local_media_id(uri))
            .collect();
        Ok(self
            .storage
            .quarantine_media_ids(self.server_name.as_str(), &ids, by)
            .await?)
    }

    /// Quarantines every media `user` uploaded, except protected media.
    pub async fn quarantine_user(&self, user: &UserId, by: &str) -> Result<u64> {
        Ok(self
            .storage
            .quarantine_user_media(self.server_name.as_str(), user.as_str(), by)
            .await?)
    }

    /// Quarantines (`by`) or releases (`None`) one media id; 404 when there
    /// is none. Protected media is not quarantined (and that is no error).
    pub async fn quarantine_one(
        &self,
        server_name: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<()> {
        let found = if server_name == self.server_name.as_str() {
            self.set_quarantined(media_id, by).await?
        } else {
            false
        };
        if found {
            Ok(())
        } else {
            Err(MatrixError::not_found("Unknown media"))
        }
    }

    /// Marks a local media id safe from quarantine (or not); 404 when there
    /// is none.
    pub async fn set_protected(&self, media_id: &str, protected: bool) -> Result<()> {
        if self
            .storage
            .set_media_protected(self.server_name.as_str(), media_id, protected)
            .await?
        {
            Ok(())
        } else {
            Err(MatrixError::not_found("Unknown media"))
        }
    }

    /// Per-uploader usage, a page of it and how many uploaders match.
    pub async fn usage(
        &self,
        filter: StatsFilter<'_>,
        page: Page,
    ) -> Result<(Vec<UserMediaUsage>, i64)> {
        Ok(self
            .storage
            .user_media_usage(self.server_name.as_str(), filter, page)
            .await?)
    }
}
