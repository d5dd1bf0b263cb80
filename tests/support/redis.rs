//! A private redis-server per test run (being written).
