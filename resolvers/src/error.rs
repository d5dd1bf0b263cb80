//! Errors of the graph, and the one place where they become GraphQL errors.
//!
//! Every error a client sees carries a stable `extensions.code`; upstream failures add
//! `extensions.source` (`backend`, `crm`, `process`, `carrier`). Internal causes (status codes,
//! bodies, connection errors) are logged here and never shown to clients.

use async_graphql::ErrorExtensions;

use crate::ports::Source;

/// A failed call to an upstream, as an adapter reports it.
///
/// Deliberately not `Display`: async-graphql turns any `Display` error into a GraphQL error
/// without our extensions, so an `UpstreamError` can only reach a client through
/// [`GraphError`], which sets `code` and `source`.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// Which upstream failed.
    pub source: Source,
    /// How it failed.
    pub kind: UpstreamErrorKind,
}

/// How an upstream call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamErrorKind {
    /// Could not get a usable answer: connection refused, timeout, 5xx, a malformed body, our
    /// own credentials refused. `detail` is for logs only.
    #[error("unavailable: {detail}")]
    Unavailable { detail: String },
    /// The upstream is rate limiting or out of quota.
    #[error("rate limited: {detail}")]
    RateLimited { detail: String },
    /// The upstream refused the request for a business reason the client can act on. `code`
    /// is one of ours (e.g. `OUT_OF_STOCK`), `message` is safe to show.
    #[error("rejected ({code}): {message}")]
    Rejected { code: &'static str, message: String },
    /// The thing asked for does not exist upstream.
    #[error("not found")]
    NotFound,
}

impl UpstreamError {
    /// An upstream that gave no usable answer.
    pub fn unavailable(source: Source, detail: impl Into<String>) -> Self {
        Self {
            source,
            kind: UpstreamErrorKind::Unavailable {
                detail: detail.into(),
            },
        }
    }

    /// An upstream that refused for a business reason.
    pub fn rejected(source: Source, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            source,
            kind: UpstreamErrorKind::Rejected {
                code,
                message: message.into(),
            },
        }
    }
}

/// An error a resolver returns.
///
/// Not `Display` either (see [`UpstreamError`]): `?` turns it into a GraphQL error through
/// the `From` impl below, the one place that sets `extensions.code`.
#[derive(Debug, Clone)]
pub enum GraphError {
    /// No valid bearer token came with the request.
    Unauthenticated,
    /// The caller may not see or change this.
    Forbidden(String),
    /// Nothing with that id.
    NotFound(String),
    /// The arguments are wrong; the message says how.
    BadInput(String),
    /// A business rule refuses the change: a stable code (e.g. `NOT_RETURNABLE`) and a message.
    Rejected(&'static str, String),
    /// An upstream failed.
    Upstream(UpstreamError),
}

impl From<UpstreamError> for GraphError {
    fn from(e: UpstreamError) -> Self {
        GraphError::Upstream(e)
    }
}

impl GraphError {
    /// The stable `extensions.code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            GraphError::Unauthenticated => "UNAUTHENTICATED",
            GraphError::Forbidden(_) => "FORBIDDEN",
            GraphError::NotFound(_) => "NOT_FOUND",
            GraphError::BadInput(_) => "BAD_USER_INPUT",
            GraphError::Rejected(code, _) => code,
            GraphError::Upstream(e) => match &e.kind {
                UpstreamErrorKind::Unavailable { .. } => "UPSTREAM_UNAVAILABLE",
                UpstreamErrorKind::RateLimited { .. } => "UPSTREAM_RATE_LIMITED",
                UpstreamErrorKind::Rejected { code, .. } => code,
                UpstreamErrorKind::NotFound => "NOT_FOUND",
            },
        }
    }

    /// What the client reads: never an internal detail.
    fn public_message(&self) -> String {
        match self {
            GraphError::Upstream(e) => match &e.kind {
                UpstreamErrorKind::Unavailable { .. } => {
                    format!("the {} service is unavailable right now", e.source)
                }
                UpstreamErrorKind::RateLimited { .. } => {
                    format!("the {} service is busy; try again shortly", e.source)
                }
                UpstreamErrorKind::Rejected { message, .. } => message.clone(),
                UpstreamErrorKind::NotFound => format!("not found at the {} service", e.source),
            },
            GraphError::Unauthenticated => {
                "sign in first: this needs a valid bearer token".to_owned()
            }
            GraphError::Forbidden(m)
            | GraphError::NotFound(m)
            | GraphError::BadInput(m)
            | GraphError::Rejected(_, m) => m.clone(),
        }
    }
}

impl ErrorExtensions for GraphError {
    fn extend(&self) -> async_graphql::Error {
        if let GraphError::Upstream(e) = self {
            match &e.kind {
                UpstreamErrorKind::Unavailable { detail }
                | UpstreamErrorKind::RateLimited { detail } => {
                    tracing::warn!(source = %e.source, code = self.code(), %detail, "upstream failed");
                }
                _ => {}
            }
        }
        let code = self.code();
        let source = match self {
            GraphError::Upstream(e) => Some(e.source.as_str()),
            _ => None,
        };
        async_graphql::Error::new(self.public_message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(source) = source {
                ext.set("source", source);
            }
        })
    }
}

impl From<GraphError> for async_graphql::Error {
    fn from(e: GraphError) -> Self {
        e.extend()
    }
}

impl From<UpstreamError> for async_graphql::Error {
    fn from(e: UpstreamError) -> Self {
        GraphError::Upstream(e).extend()
    }
}

/// What resolvers return.
pub(crate) type GraphResult<T> = Result<T, GraphError>;
