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

use std::sync::Arc;
use std::time::Duration;

use resolvers::cache::Cache;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::error::TransportError;
use super::request::GraphQlRequest;
use crate::cache::{MemoryCache, RedisCache};
use crate::config::PersistedQueriesConfig;

/// The registered documents, by hash.
pub(crate) struct PersistedQueries {
    /// `None`: persisted queries are off.
    store: Option<Arc<dyn Cache>>,
    /// How long a registration lasts.
    ttl: Duration,
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
    /// The store the config asks for.
    pub(crate) async fn build(config: &PersistedQueriesConfig) -> anyhow::Result<Self> {
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
        })
    }

    /// Resolves the request's persisted query: fills in the document of a hash-only request,
    /// or checks the hash of a document sent with one.
    pub(crate) async fn resolve(
        &self,
        request: &mut GraphQlRequest,
    ) -> Result<Persisted, TransportError> {
        let Some(hash) = requested_hash(request)? else {
            return Ok(Persisted::No);
        };
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

    /// Registers `document` under `hash` (its SHA-256, checked by [`Self::resolve`]).
    pub(crate) async fn register(&self, hash: String, document: &str) {
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
        PersistedQueries::build(&PersistedQueriesConfig::default())
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
            apq.resolve(&mut hash_only).await,
            Err(TransportError::PersistedQueryNotFound)
        ));
        let mut with_document =
            request(json!({"query": "{ __typename }", "extensions": persisted(&hash)}));
        let Ok(Persisted::Register(registered)) = apq.resolve(&mut with_document).await else {
            panic!("the document should be registered");
        };
        apq.register(registered, &with_document.query).await;
        let mut hash_only = request(json!({"extensions": persisted(&hash.to_uppercase())}));
        assert!(matches!(
            apq.resolve(&mut hash_only).await,
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
            apq.resolve(&mut forged).await,
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
                    apq.resolve(&mut bad).await,
                    Err(TransportError::BadRequest(_))
                ),
                "{extensions}"
            );
        }
    }

    #[tokio::test]
    async fn switched_off_every_persisted_query_is_not_supported() {
        let apq = PersistedQueries::build(&PersistedQueriesConfig {
            enabled: false,
            ..PersistedQueriesConfig::default()
        })
        .await
        .expect("no store");
        let mut hash_only = request(json!({"extensions": persisted(&sha256_hex("{ a }"))}));
        assert!(matches!(
            apq.resolve(&mut hash_only).await,
            Err(TransportError::PersistedQueryNotSupported)
        ));
        let mut plain = request(json!({"query": "{ a }"}));
        assert!(matches!(apq.resolve(&mut plain).await, Ok(Persisted::No)));
    }
}
