//! A device as handlers show it.

/// One device of an account, with its last-seen record (the newest one, even
/// if not yet written).
#[derive(Debug, Clone)]
pub struct Device {
    pub user_id: ruma::OwnedUserId,
    pub device_id: ruma::OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_user_agent: Option<String>,
    pub last_seen_ts: Option<i64>,
}
