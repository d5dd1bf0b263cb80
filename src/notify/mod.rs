//! Notifications: what is sent to a customer's devices, and the push outbox that sends it.
pub mod outbox;
