//! Notifications in the server: the store of devices, preferences and notification centres
//! (`store`: memory or Redis).
pub(crate) mod store;
