//! Single-flight: identical reads in flight at the same time reach the upstream once.
//!
//! The first caller of a key leads: it makes the call and lands its outcome, which every
//! caller that joined meanwhile receives. Callers that come after the landing make a call of
//! their own (by then the loaders have usually stored the answer in the entity cache). A
//! leader that goes away before landing (its request ended) hands the call on: its followers
//! are told, and one of them leads again. So after an event makes an order stale, the
//! thousands of subscriptions re-reading it make one backend call, and sixteen identical
//! concurrent views make one of each of their calls.
//!
//! What makes two reads identical is their URL and headers (`flight_key`): our upstream calls
//! carry Switchyard's own credentials, never the app user's, and the resolvers authorize what
//! they show of an answer, so sharing one answer never hands one user's data to another.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

/// The reads in flight, by key.
#[derive(Debug)]
pub(crate) struct Flights<T>(Mutex<HashMap<Vec<u8>, watch::Receiver<Option<T>>>>);

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

/// A caller's part in the flight of its key.
pub(crate) enum Flight<'a, T> {
    /// Make the call, then [`Landing::land`] its outcome.
    Lead(Landing<'a, T>),
    /// Wait for the leader's outcome (`Some`); a closed channel means the leader went away.
    Follow(watch::Receiver<Option<T>>),
}

/// The leader's duty to land its outcome; dropped without landing, it ends the flight so
/// that a follower can lead.
pub(crate) struct Landing<'a, T> {
    flights: &'a Flights<T>,
    key: Vec<u8>,
    sender: watch::Sender<Option<T>>,
    landed: bool,
}

impl<T: Clone> Flights<T> {
    /// Joins the flight of `key`, or starts it.
    pub(crate) fn join(&self, key: &[u8]) -> Flight<'_, T> {
        let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(landed) = flights.get(key) {
            return Flight::Follow(landed.clone());
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(key.to_vec(), receiver);
        Flight::Lead(Landing {
            flights: self,
            key: key.to_vec(),
            sender,
            landed: false,
        })
    }

    fn end(&self, key: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

impl<T: Clone> Landing<'_, T> {
    /// Ends the flight and hands `outcome` to every follower.
    pub(crate) fn land(mut self, outcome: &T) {
        self.flights.end(&self.key);
        self.landed = true;
        let _ = self.sender.send(Some(outcome.clone()));
    }
}

impl<T> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        if !self.landed {
            // Once landed, the key may already belong to a newer flight: only an unlanded
            // flight is still the one in the map.
            self.flights
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}

/// What makes two requests the same read: method, URL and headers, except those that differ
/// per request of the app (trace context, request ids).
pub(crate) fn flight_key(request: &reqwest::Request) -> Vec<u8> {
    const PER_REQUEST: [&str; 4] = ["traceparent", "tracestate", "baggage", "x-request-id"];
    let mut key = Vec::with_capacity(256);
    key.extend_from_slice(request.method().as_str().as_bytes());
    key.push(b' ');
    key.extend_from_slice(request.url().as_str().as_bytes());
    for (name, value) in request.headers() {
        if PER_REQUEST.contains(&name.as_str()) {
            continue;
        }
        key.push(b'\n');
        key.extend_from_slice(name.as_str().as_bytes());
        key.push(b':');
        key.extend_from_slice(value.as_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(flight: Flight<'_, u32>) -> Landing<'_, u32> {
        match flight {
            Flight::Lead(landing) => landing,
            Flight::Follow(_) => panic!("expected to lead"),
        }
    }

    fn follow(flight: Flight<'_, u32>) -> watch::Receiver<Option<u32>> {
        match flight {
            Flight::Follow(receiver) => receiver,
            Flight::Lead(_) => panic!("expected to follow"),
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_later_callers_lead_again() {
        let flights = Flights::default();
        let landing = lead(flights.join(b"a"));
        let mut first = follow(flights.join(b"a"));
        let mut second = follow(flights.join(b"a"));
        // Another key is another flight.
        drop(lead(flights.join(b"b")));
        landing.land(&7);
        assert_eq!(*first.wait_for(Option::is_some).await.unwrap(), Some(7));
        assert_eq!(*second.wait_for(Option::is_some).await.unwrap(), Some(7));
        let next = lead(flights.join(b"a"));
        next.land(&8);
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_hands_the_call_on() {
        let flights = Flights::default();
        let landing = lead(flights.join(b"a"));
        let mut waiting = follow(flights.join(b"a"));
        drop(landing);
        assert!(waiting.wait_for(Option::is_some).await.is_err());
        // The follower leads now.
        lead(flights.join(b"a")).land(&1);
    }

    #[tokio::test]
    async fn a_landed_flight_leaves_a_newer_one_of_its_key_alone() {
        let flights = Flights::default();
        let old = lead(flights.join(b"a"));
        old.land(&1);
        let newer = lead(flights.join(b"a"));
        let mut waiting = follow(flights.join(b"a"));
        newer.land(&2);
        assert_eq!(*waiting.wait_for(Option::is_some).await.unwrap(), Some(2));
    }

    #[test]
    fn per_request_headers_do_not_make_another_read() {
        let client = reqwest::Client::new();
        let read = |trace: &str, auth: &str| {
            client
                .get("http://backend/orders?ids=o1")
                .header("authorization", auth)
                .header("traceparent", trace)
                .build()
                .unwrap()
        };
        assert_eq!(
            flight_key(&read("00-a-b-01", "Bearer x")),
            flight_key(&read("00-c-d-01", "Bearer x"))
        );
        assert_ne!(
            flight_key(&read("00-a-b-01", "Bearer x")),
            flight_key(&read("00-a-b-01", "Bearer y"))
        );
    }
}
