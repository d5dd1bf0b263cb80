//! The event bus (being written).
