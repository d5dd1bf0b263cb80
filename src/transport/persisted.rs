//! Automatic persisted queries, Apollo's protocol (what Apollo Client's
//! `createPersistedQueryLink` and urql's `persistedExchange` speak), for every transport.
//!
//! A request carries `extensions.persistedQuery: {version: 1, sha256Hash}`:
//! - without a document (hash only, POST or GET): the document registered under the hash
//!   runs; an unknown hash is the request error `PERSISTED_QUERY_NOT_FOUND` (message
//!   `PersistedQueryNotFound`, as both clients test), answered with HTTP 200, and the client
//!   retries with the document;
//! - with a document: its SHA-256 (lower-case hex of the exact text sent) must be the hash
//!   (`PERSISTED_QUERY_HASH_MISMATCH` otherwise); once the document has parsed within the
//!   limits it is registered, so later hash-only requests are served.
//!
//! Documents live in the cache adapters' stores: Redis when `[persisted_queries] redis_url`
//! is set (shared by the replicas), memory otherwise (bounded, per replica). A store that
//! cannot be read answers a miss, so the client sends the document and is served anyway.
//! With `[persisted_queries] enabled = false` every persisted query is refused with
//! `PERSISTED_QUERY_NOT_SUPPORTED`, on which both clients stop sending hashes.
//!
//! **Trusted documents** (what mobile apps ship): a manifest of the apps' operations by hash
//! (`[persisted_queries] manifest`, or the operations built into the binary), served by hash
//! without registration. With `trusted_only` (the production profile's default) nothing else
//! runs: a document or hash not in the manifest is `PERSISTED_QUERY_NOT_IN_LIST`, and nothing
//! is registered, except for the `trusted_clients` (by their `apollographql-client-name`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use resolvers::cache::Cache;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::error::TransportError;
use super::request::GraphQlRequest;
use crate::cache::{MemoryCache, RedisCache};
use crate::config::PersistedQueriesConfig;

/// Largest document registered: real operations are a few KB (the home screen 1.2 KB), so
/// the store holds at most `max_entries` × this, in memory or in Redis.
const MAX_REGISTERED_BYTES: usize = 32 * 1024;

/// The `format` of Apollo's persisted query manifest.
const APOLLO_MANIFEST_FORMAT: &str = "apollo-persisted-query-manifest";

/// The registered documents, by hash.
pub(crate) struct PersistedQueries {
    /// `None`: persisted queries are off.
    store: Option<Arc<dyn Cache>>,
    /// How long a registration lasts.
    ttl: Duration,
    /// The trusted documents, by hash.
    manifest: HashMap<String, String>,
    /// Run nothing but the manifest's documents (but for `trusted_clients`).
    trusted_only: bool,
    /// `apollographql-client-name`s that may send any document.
    trusted_clients: Vec<String>,
}

/// What a request's `extensions.persistedQuery` asks for, once resolved.
pub(crate) enum Persisted {
    /// No persisted query: the request's own document runs.
    No,
    /// The document was sent with its hash: register it once it is known to be good.
    Register(String),
    /// The document was filled in from the store.
    Found,
}

impl PersistedQueries {
    /// The store and manifest the config asks for; `production` sets `trusted_only`'s
    /// default.
    pub(crate) async fn build(
        config: &PersistedQueriesConfig,
        production: bool,
    ) -> anyhow::Result<Self> {
        let manifest = match &config.manifest {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading persisted_queries.manifest {}", path.display())
                })?;
                read_manifest(&text)
                    .with_context(|| format!("persisted_queries.manifest {}", path.display()))?
            }
            None => built_in_manifest(),
        };
        let store: Option<Arc<dyn Cache>> = match (&config.redis_url, config.enabled) {
            (_, false) => None,
            (Some(url), true) => Some(Arc::new(
                RedisCache::connect(url.expose(), &config.key_prefix).await?,
            )),
            (None, true) => Some(Arc::new(MemoryCache::new(config.max_entries))),
        };
        Ok(Self {
            store,
            ttl: Duration::from_secs(config.ttl_secs),
            manifest,
            trusted_only: config.trusted_only.unwrap_or(production),
            trusted_clients: config.trusted_clients.clone(),
        })
    }

    /// Resolves the request's persisted query: fills in the document of a hash-only request,
    /// or checks the hash of a document sent with one; with `trusted_only`, refuses what is
    /// not in the manifest unless `client` (its `apollographql-client-name`) is trusted.
    pub(crate) async fn resolve(
        &self,
        request: &mut GraphQlRequest,
        client: Option<&str>,
    ) -> Result<Persisted, TransportError> {
        let hash = requested_hash(request)?;
        let trusted_client =
            client.is_some_and(|client| self.trusted_clients.iter().any(|c| c == client));
        if self.trusted_only && !trusted_client {
            return self.trusted(request, hash);
        }
        let Some(hash) = hash else {
            return Ok(Persisted::No);
        };
        if request.query.is_empty()
            && let Some(document) = self.manifest.get(&hash)
        {
            request.query = document.clone();
            return Ok(Persisted::Found);
        }
        let Some(store) = &self.store else {
            return Err(TransportError::PersistedQueryNotSupported);
        };
        if !request.query.is_empty() {
            if sha256_hex(&request.query) != hash {
                return Err(TransportError::PersistedQueryHashMismatch);
            }
            return Ok(Persisted::Register(hash));
        }
        let found = store.get_many(std::slice::from_ref(&hash)).await;
        let document = found
            .into_iter()
            .next()
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            // A stored document that no longer hashes to its key is not served.
            .filter(|document| sha256_hex(document) == hash)
            .ok_or(TransportError::PersistedQueryNotFound)?;
        request.query = document;
        Ok(Persisted::Found)
    }

    /// Only the manifest's documents: by hash, or sent in full (a document is its hash).
    fn trusted(
        &self,
        request: &mut GraphQlRequest,
        hash: Option<String>,
    ) -> Result<Persisted, TransportError> {
        if request.query.is_empty() {
            let document = hash
                .and_then(|hash| self.manifest.get(&hash))
                .ok_or(TransportError::PersistedQueryNotInList)?;
            request.query = document.clone();
            return Ok(Persisted::Found);
        }
        let actual = sha256_hex(&request.query);
        if hash.is_some_and(|hash| hash != actual) {
            return Err(TransportError::PersistedQueryHashMismatch);
        }
        if !self.manifest.contains_key(&actual) {
            return Err(TransportError::PersistedQueryNotInList);
        }
        Ok(Persisted::Found)
    }

    /// Registers `document` under `hash` (its SHA-256, checked by [`Self::resolve`]), unless
    /// it is over [`MAX_REGISTERED_BYTES`] (it runs, and its client keeps sending it whole).
    pub(crate) async fn register(&self, hash: String, document: &str) {
        if document.len() > MAX_REGISTERED_BYTES {
            return;
        }
        if let Some(store) = &self.store {
            store
                .put_many(vec![(hash, document.as_bytes().to_vec())], self.ttl)
                .await;
        }
    }
}

/// The lower-case hex SHA-256 `extensions.persistedQuery` names, if the request has one.
fn requested_hash(request: &GraphQlRequest) -> Result<Option<String>, TransportError> {
    let Some(persisted) = request
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("persistedQuery"))
    else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(TransportError::BadRequest(format!(
            "`extensions.persistedQuery` {why}: send {{\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}}"
        )))
    };
    let Value::Object(persisted) = persisted else {
        return bad("is not an object");
    };
    if persisted.get("version").and_then(Value::as_u64) != Some(1) {
        return bad("has no `version` 1, the only version there is");
    }
    match persisted.get("sha256Hash").and_then(Value::as_str) {
        Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(hash.to_ascii_lowercase()))
        }
        _ => bad("has no `sha256Hash` of 64 hex digits"),
    }
}

/// The manifest of the operations built into the binary (`schema/operations/`), in Apollo's
/// format: what `switchyard manifest` prints and apps ship.
pub(crate) fn manifest_json() -> String {
    let operations: Vec<Value> = super::playground::example_operations()
        .into_iter()
        .map(|op| {
            let kind = operation_type(&op.query);
            json!({"id": sha256_hex(&op.query), "name": op.name, "type": kind, "body": op.query})
        })
        .collect();
    let manifest = json!({
        "format": APOLLO_MANIFEST_FORMAT,
        "version": 1,
        "operations": operations,
    });
    serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"
}

/// `query`, `mutation` or `subscription`: the first operation keyword of the document.
fn operation_type(document: &str) -> &'static str {
    document
        .lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with('#'))
        .flat_map(str::split_whitespace)
        .find_map(|word| match word {
            "mutation" => Some("mutation"),
            "subscription" => Some("subscription"),
            "query" | "{" => Some("query"),
            _ => None,
        })
        .unwrap_or("query")
}

fn built_in_manifest() -> HashMap<String, String> {
    super::playground::example_operations()
        .into_iter()
        .map(|op| (sha256_hex(&op.query), op.query))
        .collect()
}

/// The documents of a manifest in Apollo's format or GraphQL Codegen's, by hash; each
/// document must hash to its id.
fn read_manifest(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let operations = manifest_operations(text)?;
    for op in &operations {
        anyhow::ensure!(
            sha256_hex(&op.body) == op.id,
            "the document of {} does not hash to it",
            op.id
        );
    }
    Ok(operations.into_iter().map(|op| (op.id, op.body)).collect())
}

/// One operation of a persisted query manifest, as the manifest states it (its id is not
/// checked against its body here).
pub(crate) struct ManifestOperation {
    /// The id the manifest gives it, lower-cased: the SHA-256 of `body` if the manifest is right.
    pub(crate) id: String,
    /// The operation's name, if the manifest names it (Apollo's format does).
    pub(crate) name: Option<String>,
    /// The document.
    pub(crate) body: String,
}

/// The operations of a manifest in Apollo's format
/// (`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{id, name,
/// type, body}]}`) or Relay's and GraphQL Codegen's (`{hash: document}`), in the file's order.
pub(crate) fn manifest_operations(text: &str) -> anyhow::Result<Vec<ManifestOperation>> {
    let value: Value = serde_json::from_str(text).context("not JSON")?;
    match &value {
        Value::Object(object) if object.contains_key("operations") => {
            if let Some(format) = object.get("format") {
                anyhow::ensure!(
                    *format == APOLLO_MANIFEST_FORMAT,
                    "`format` is {format}, not \"{APOLLO_MANIFEST_FORMAT}\""
                );
                anyhow::ensure!(
                    object.get("version") == Some(&json!(1)),
                    "`version` is not 1, the only version of Apollo's manifest there is"
                );
            }
            object["operations"]
                .as_array()
                .context("`operations` is not a list")?
                .iter()
                .map(|op| {
                    let id = op["id"].as_str().context("an operation without `id`")?;
                    let body = op["body"].as_str().context("an operation without `body`")?;
                    Ok(ManifestOperation {
                        id: id.to_ascii_lowercase(),
                        name: op["name"].as_str().map(str::to_owned),
                        body: body.to_owned(),
                    })
                })
                .collect()
        }
        Value::Object(object) => object
            .iter()
            .map(|(id, body)| {
                anyhow::ensure!(
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
                    "`{id}` is not a hash (the keys of a {{hash: document}} map are the \
                     documents' SHA-256)"
                );
                let body = body.as_str().context("a document that is not a string")?;
                Ok(ManifestOperation {
                    id: id.to_ascii_lowercase(),
                    name: None,
                    body: body.to_owned(),
                })
            })
            .collect(),
        _ => anyhow::bail!("neither Apollo's manifest nor GraphQL Codegen's"),
    }
}

/// The lower-case hex SHA-256 of `text`.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> GraphQlRequest {
        GraphQlRequest::from_json(body).expect("a request")
    }

    fn persisted(hash: &str) -> Value {
        json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
    }

    async fn memory() -> PersistedQueries {
        PersistedQueries::build(&PersistedQueriesConfig::default(), false)
            .await
            .expect("a memory store")
    }

    #[test]
    fn the_hash_is_the_lower_case_hex_sha256_of_the_text() {
        // `printf '{ __typename }' | sha256sum`
        assert_eq!(
            sha256_hex("{ __typename }"),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }

    #[tokio::test]
    async fn a_hash_is_unknown_until_its_document_is_registered() {
        let apq = memory().await;
        let hash = sha256_hex("{ __typename }");
        let mut hash_only = request(json!({"extensions": persisted(&hash)}));
        assert!(matches!(
            apq.resolve(&mut hash_only, None).await,
            Err(TransportError::PersistedQueryNotFound)
        ));
        let mut with_document =
            request(json!({"query": "{ __typename }", "extensions": persisted(&hash)}));
        let Ok(Persisted::Register(registered)) = apq.resolve(&mut with_document, None).await
        else {
            panic!("the document should be registered");
        };
        apq.register(registered, &with_document.query).await;
        let mut hash_only = request(json!({"extensions": persisted(&hash.to_uppercase())}));
        assert!(matches!(
            apq.resolve(&mut hash_only, None).await,
            Ok(Persisted::Found)
        ));
        assert_eq!(hash_only.query, "{ __typename }");
    }

    #[tokio::test]
    async fn a_document_that_does_not_hash_to_its_hash_is_refused() {
        let apq = memory().await;
        let mut forged = request(json!({
            "query": "{ __schema { types { name } } }",
            "extensions": persisted(&sha256_hex("{ __typename }")),
        }));
        assert!(matches!(
            apq.resolve(&mut forged, None).await,
            Err(TransportError::PersistedQueryHashMismatch)
        ));
    }

    #[tokio::test]
    async fn malformed_persisted_queries_are_bad_requests() {
        let apq = memory().await;
        for extensions in [
            json!({"persistedQuery": "abc"}),
            json!({"persistedQuery": {"version": 2, "sha256Hash": sha256_hex("{ a }")}}),
            json!({"persistedQuery": {"version": 1, "sha256Hash": "abc"}}),
            json!({"persistedQuery": {"version": 1, "sha256Hash": "z".repeat(64)}}),
        ] {
            let mut bad = request(json!({"extensions": extensions}));
            assert!(
                matches!(
                    apq.resolve(&mut bad, None).await,
                    Err(TransportError::BadRequest(_))
                ),
                "{extensions}"
            );
        }
    }

    #[tokio::test]
    async fn switched_off_every_persisted_query_is_not_supported() {
        let apq = PersistedQueries::build(
            &PersistedQueriesConfig {
                enabled: false,
                ..PersistedQueriesConfig::default()
            },
            false,
        )
        .await
        .expect("no store");
        let mut hash_only = request(json!({"extensions": persisted(&sha256_hex("{ a }"))}));
        assert!(matches!(
            apq.resolve(&mut hash_only, None).await,
            Err(TransportError::PersistedQueryNotSupported)
        ));
        let mut plain = request(json!({"query": "{ a }"}));
        assert!(matches!(
            apq.resolve(&mut plain, None).await,
            Ok(Persisted::No)
        ));
    }
}
