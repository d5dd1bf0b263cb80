//! Errors of the graph, and the one place where they become GraphQL errors.
//!
//! Every error a client sees carries a stable `extensions.code`; upstream failures add
//! `extensions.source` (`backend`, `crm`, `process`, `carrier`). Internal causes (status codes,
//! bodies, connection errors) are logged here and never shown to clients.

use async_graphql::ErrorExtensions;

use crate::ports::{UpstreamError, UpstreamErrorKind};

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
    /// The change conflicts with what happened meanwhile (the order shipped, someone else
    /// completed the task, the case was closed): a stable code, a message, and the thing's
    /// current state as the schema names its fields, for `extensions.current`, so that the
    /// app can resolve the conflict without reading it again.
    Conflict(&'static str, String, async_graphql::Value),
    /// An upstream failed.
    Upstream(UpstreamError),
    /// A store of ours failed (what, and the cause for logs).
    Unavailable(&'static str, String),
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
            GraphError::Rejected(code, _) | GraphError::Conflict(code, ..) => code,
            GraphError::Unavailable(..) => "UNAVAILABLE",
            GraphError::Upstream(e) => match &e.kind {
                UpstreamErrorKind::Unavailable { .. } | UpstreamErrorKind::NotSent { .. } => {
                    "UPSTREAM_UNAVAILABLE"
                }
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
                UpstreamErrorKind::Unavailable { .. } | UpstreamErrorKind::NotSent { .. } => {
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
            | GraphError::Rejected(_, m)
            | GraphError::Conflict(_, m, _) => m.clone(),
            GraphError::Unavailable(what, _) => format!("{what} are unavailable right now"),
        }
    }
}

impl ErrorExtensions for GraphError {
    fn extend(&self) -> async_graphql::Error {
        if let GraphError::Unavailable(what, detail) = self {
            tracing::warn!(what, %detail, "a store failed");
        }
        if let GraphError::Upstream(e) = self {
            match &e.kind {
                UpstreamErrorKind::Unavailable { detail }
                | UpstreamErrorKind::NotSent { detail }
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
        let current = match self {
            GraphError::Conflict(_, _, current) => Some(current.clone()),
            _ => None,
        };
        let mut error = async_graphql::Error::new(self.public_message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(source) = source {
                ext.set("source", source);
            }
            if let Some(current) = current {
                ext.set("current", current);
            }
        });
        if let GraphError::Upstream(e) = self
            && matches!(e.kind, UpstreamErrorKind::NotSent { .. })
        {
            error.source = Some(std::sync::Arc::new(NotSent));
        }
        error
    }
}

/// Marks the GraphQL error of an upstream call that was never sent (its `source`, which
/// clients never see): a mutation that failed so wrote nothing.
#[derive(Debug)]
pub(crate) struct NotSent;

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
