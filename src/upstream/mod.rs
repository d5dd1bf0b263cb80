//! Upstream adapters: the graph's ports ([`resolvers::ports`]) implemented over HTTP, one
//! client per upstream system, each speaking that system's own API shape
//! (`docs/upstreams.md`).
//!
//! A bulk read (`customers_by_ids`, `cases_by_ids`, ...) is one loader batch's misses: it
//! runs in a `batch` span (`loader`, `keys`), whatever the calls it takes, each of which
//! has its `upstream` span (`http`).
//!
//! [`ports`] builds the four clients from config. Every client has its own connection pool,
//! timeout, retries and concurrency budget (its `CallPolicy`), and turns every failure into an
//! `UpstreamError` of its source, so the graph never sees a status code or a wire format.
//!
//! # Layout
//! - `http`: the one call path all adapters share: the client per upstream, the concurrency
//!   budget, the circuit breaker and retries of reads within a budget (`breaker`), logging
//!   and metrics, single-flight of identical reads (`flights`), and the mapping of transport failures and unusable
//!   answers to `Unavailable`.
//! - `wire`: wire pieces several adapters read (money, enum names), validated strictly.
//! - `backend`: `BackendClient`, our own REST/JSON microservices (bearer token, bulk reads in
//!   chunks of 100, cursor paging, order placement and cancellation).
//! - `crm`: [`CrmClient`], Salesforce REST (client-credentials token shared and renewed on 401,
//!   SOQL with `nextRecordsUrl` paging, sObject creates, `Sforce-Limit-Info`).
//! - `process`: `ProcessClient`, jBPM KIE Server REST (Basic auth, return processes, human
//!   tasks).
//! - `carrier`: `CarrierClient`, the parcel carrier (API key, one parcel per call, 429 with
//!   `Retry-After`).

mod backend;
mod breaker;
mod carrier;
mod crm;
mod flights;
mod http;
mod process;
mod wire;

use std::sync::Arc;

use backend::BackendClient;
use breaker::Breaker;
use carrier::CarrierClient;
pub use crm::{ApiUsage, CrmClient};
use process::ProcessClient;

use crate::config::{BackendConfig, CarrierConfig, CrmConfig, ProcessConfig};

/// The upstreams' circuit breakers, for readiness.
#[derive(Debug, Clone)]
pub struct UpstreamHealth(Vec<Arc<Breaker>>);

impl UpstreamHealth {
    /// The upstreams whose breaker is open or half-open.
    pub(crate) fn open(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|b| b.is_open())
            .map(|b| b.source().as_str())
            .collect()
    }
}

/// The graph's ports over the four configured upstreams, and their breakers. Fails on a
/// config no client can work with (a base URL that is not http(s), a zero timeout, a
/// malformed CRM API version).
pub fn ports(
    backend: &BackendConfig,
    crm: &CrmConfig,
    process: &ProcessConfig,
    carrier: &CarrierConfig,
    cache: Arc<dyn resolvers::cache::Cache>,
) -> anyhow::Result<(resolvers::Ports, UpstreamHealth)> {
    let (backend, crm) = (BackendClient::new(backend)?, CrmClient::new(crm)?);
    let (process, carrier) = (ProcessClient::new(process)?, CarrierClient::new(carrier)?);
    let health = UpstreamHealth(vec![
        backend.http.breaker(),
        crm.http.breaker(),
        process.http.breaker(),
        carrier.http.breaker(),
    ]);
    let ports = resolvers::Ports {
        cache,
        backend: Arc::new(backend),
        crm: Arc::new(crm),
        process: Arc::new(process),
        carrier: Arc::new(carrier),
    };
    Ok((ports, health))
}
