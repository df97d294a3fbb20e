//! Room state as a map.

use std::collections::HashMap;

use ruma::OwnedEventId;

/// (event type, state key) → event id.
pub type StateMap = HashMap<(String, String), OwnedEventId>;
