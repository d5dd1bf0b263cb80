//! Every error the transport raises itself (before, around or instead of running an
//! operation), with its stable `extensions.code` and HTTP status, in one enum.
//!
//! Over HTTP each becomes a GraphQL response `{"errors": [...]}` with its status
//! ([`TransportError::into_response`]); the live transports report the same errors in their
//! protocol's `error` message, or close the connection with the protocol's code.
//! Errors raised while running an operation are the graph's (`resolvers::error`); the codes
//! async-graphql's own errors get are given in [`super::shape`].

use async_graphql::{Pos, ServerError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The media type of GraphQL responses.
pub(crate) const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// Seconds a client is asked to wait (`Retry-After`) when the instance is full.
const RETRY_AFTER_SECS: &str = "5";

/// An error the transport answers with instead of (or around) a result.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TransportError {
    /// The request is not a GraphQL request (bad JSON, a bad query string, no `query`).
    #[error("{0}")]
    BadRequest(String),
    /// The body is not `application/json`.
    #[error("send the GraphQL request as `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The client accepts none of the media types this endpoint answers with.
    #[error("accept {0}")]
    NotAcceptable(&'static str),
    /// A mutation over `GET`.
    #[error("mutations must be sent with POST")]
    MethodNotAllowed,
    /// A method the route does not take (`PUT /graphql`).
    #[error("this route does not take this method")]
    WrongMethod,
    /// No such route.
    #[error("no such route: the GraphQL endpoint is /graphql")]
    NoSuchRoute,
    /// Over a rate limit (see `rate_limit`).
    #[error(
        "too many requests from this {by}: at most {limit} a minute; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// Seconds until the window ends (`Retry-After`).
        retry_after_secs: u64,
        /// `client address` or `user`.
        by: &'static str,
        /// The limit.
        limit: u64,
    },
    /// `_entities` or `_service` asked of a server that does not serve a gateway.
    #[error(
        "this server is not a federation subgraph for its callers (server.federation, off in the production profile): `_entities` and `_service` are for a gateway"
    )]
    FederationDisabled,
    /// `__schema` or `__type` asked of a server that does not answer introspection.
    #[error(
        "introspection is off on this server (server.introspection, or the production profile)"
    )]
    IntrospectionDisabled,
    /// A GET a browser could have sent cross-site without asking first (see `http`).
    #[error(
        "this GET was refused as a possible cross-site request forgery: send a `content-type` header (`application/json`) or a non-empty `apollo-require-preflight` or `x-apollo-operation-name` header"
    )]
    Csrf,
    /// The body did not arrive in full within `server.body_read_timeout_ms`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The body is over `server.max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The document does not parse.
    #[error("{message}")]
    Parse {
        /// What the parser says.
        message: String,
        /// Where.
        locations: Vec<Pos>,
    },
    /// The document is over one of the limits of `super::limits` (the code names which).
    #[error("{message}")]
    Limit {
        /// `MAX_DEPTH_LIMIT`, `MAX_SELECTIONS_LIMIT`, ...
        code: &'static str,
        /// Which limit, and its value.
        message: String,
    },
    /// The document does not validate, found out before async-graphql's validation would
    /// (see `limits`).
    #[error("{0}")]
    Invalid(String),
    /// No operation of the document can be picked: the name matches none, or the document
    /// has several and the request names none.
    #[error("{0}")]
    UnknownOperation(String),
    /// A variable is missing, `null` where it may not be, or of the wrong shape.
    #[error("{0}")]
    BadVariables(String),
    /// A bearer token that does not validate (or no token where one is required).
    #[error("{0}")]
    Unauthenticated(String),
    /// The identity provider's keys could not be read: not the client's fault.
    #[error("the identity provider's keys are unavailable")]
    AuthUnavailable,
    /// The operation ran past `server.request_timeout_ms`.
    #[error("the operation ran longer than server.request_timeout_ms allows and was stopped")]
    Timeout,
    /// A result whose JSON would be larger than `server.max_response_bytes` (the bound).
    #[error(
        "the answer is larger than {0} bytes (server.max_response_bytes) and was not sent: select fewer fields or smaller pages"
    )]
    ResponseTooLarge(usize),
    /// This instance has `subscriptions.max_connections` live connections already.
    #[error("this instance has as many live connections as it takes: retry later")]
    TooManyConnections,
    /// A connection runs `subscriptions.max_subscriptions_per_connection` operations already.
    #[error("at most {0} operations may run at once on one connection: complete one first")]
    TooManySubscriptions(usize),
    /// An operation sent on a websocket before its `connection_init` was accepted (the
    /// legacy protocol; graphql-transport-ws closes with 4401 instead).
    #[error("send connection_init with a token first")]
    NotInitialised,
    /// A hash-only persisted query whose document is not registered (the client then sends
    /// it with the document). The message is what Apollo Client and urql test for.
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound,
    /// Persisted queries are switched off (the clients then stop sending hashes).
    #[error("PersistedQueryNotSupported")]
    PersistedQueryNotSupported,
    /// With trusted documents only: a document or hash that is not in the manifest.
    #[error(
        "PersistedQueryNotInList: this server runs only the apps' trusted documents (the persisted query manifest)"
    )]
    PersistedQueryNotInList,
    /// A document sent with a persisted query's hash that is not its SHA-256.
    #[error(
        "provided sha256Hash does not match the query: it must be the lower-case hex SHA-256 of the exact text of `query`"
    )]
    PersistedQueryHashMismatch,
    /// Something that should not happen; the cause is logged, not shown.
    #[error("internal error")]
    Internal,
}

impl TransportError {
    /// The stable `extensions.code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            TransportError::BadRequest(_) => "BAD_REQUEST",
            TransportError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            TransportError::NotAcceptable(_) => "NOT_ACCEPTABLE",
            TransportError::MethodNotAllowed | TransportError::WrongMethod => "METHOD_NOT_ALLOWED",
            TransportError::NoSuchRoute => "NOT_FOUND",
            TransportError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            TransportError::BodyTimeout => "REQUEST_TIMEOUT",
            TransportError::Csrf => "CSRF_PREVENTION",
            TransportError::RateLimited { .. } => "RATE_LIMITED",
            TransportError::IntrospectionDisabled => "INTROSPECTION_DISABLED",
            TransportError::FederationDisabled => "FEDERATION_DISABLED",
            TransportError::Parse { .. } => "GRAPHQL_PARSE_FAILED",
            TransportError::Limit { code, .. } => code,
            TransportError::Invalid(_) => "GRAPHQL_VALIDATION_FAILED",
            TransportError::UnknownOperation(_) => "OPERATION_RESOLUTION_FAILURE",
            TransportError::BadVariables(_) => "BAD_USER_INPUT",
            TransportError::Unauthenticated(_) | TransportError::NotInitialised => {
                "UNAUTHENTICATED"
            }
            TransportError::AuthUnavailable => "AUTH_UNAVAILABLE",
            TransportError::Timeout => "TIMEOUT",
            TransportError::ResponseTooLarge(_) => "RESPONSE_TOO_LARGE",
            TransportError::TooManyConnections => "TOO_MANY_CONNECTIONS",
            TransportError::TooManySubscriptions(_) => "TOO_MANY_SUBSCRIPTIONS",
            TransportError::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            TransportError::PersistedQueryNotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
            TransportError::PersistedQueryHashMismatch => "PERSISTED_QUERY_HASH_MISMATCH",
            TransportError::PersistedQueryNotInList => "PERSISTED_QUERY_NOT_IN_LIST",
            TransportError::Internal => "INTERNAL",
        }
    }

    /// The HTTP status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            TransportError::BadRequest(_)
            | TransportError::Parse { .. }
            | TransportError::Limit { .. }
            | TransportError::Invalid(_)
            | TransportError::UnknownOperation(_)
            | TransportError::BadVariables(_)
            | TransportError::Csrf
            | TransportError::IntrospectionDisabled
            | TransportError::FederationDisabled
            | TransportError::PersistedQueryNotInList
            | TransportError::PersistedQueryHashMismatch => StatusCode::BAD_REQUEST,
            // Apollo Router's status: a client's cue to send the document, not a failure.
            TransportError::PersistedQueryNotFound | TransportError::PersistedQueryNotSupported => {
                StatusCode::OK
            }
            TransportError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TransportError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            TransportError::MethodNotAllowed | TransportError::WrongMethod => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            TransportError::NoSuchRoute => StatusCode::NOT_FOUND,
            TransportError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            TransportError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            TransportError::Unauthenticated(_) | TransportError::NotInitialised => {
                StatusCode::UNAUTHORIZED
            }
            TransportError::AuthUnavailable | TransportError::TooManyConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            TransportError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            // The operation ran (a mutation's change stands): it is answered as a result,
            // `data: null` with this error, 200 as the GraphQL-over-HTTP spec says for those.
            TransportError::ResponseTooLarge(_) => StatusCode::OK,
            TransportError::TooManySubscriptions(_) | TransportError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            TransportError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether it is a request error in the GraphQL-over-HTTP sense: the request was read,
    /// but its document or variables do not make an operation to run. A client that accepts
    /// only `application/json` gets these with status 200, as that spec says.
    pub(crate) fn is_request_error(&self) -> bool {
        matches!(
            self,
            TransportError::Parse { .. }
                | TransportError::Limit { .. }
                | TransportError::Invalid(_)
                | TransportError::UnknownOperation(_)
                | TransportError::BadVariables(_)
                | TransportError::PersistedQueryNotFound
                | TransportError::PersistedQueryNotSupported
                | TransportError::PersistedQueryHashMismatch
                | TransportError::PersistedQueryNotInList
                | TransportError::IntrospectionDisabled
                | TransportError::FederationDisabled
        )
    }

    /// As a GraphQL error, with its code.
    pub(crate) fn to_server_error(&self) -> ServerError {
        crate::metrics::graphql_error(self.code());
        let locations = match self {
            TransportError::Parse { locations, .. } => locations.clone(),
            _ => Vec::new(),
        };
        let mut error = ServerError::new(self.to_string(), None);
        error.locations = locations;
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", self.code());
        error
    }

    /// The `errors` array of a response that carries only this error.
    pub(crate) fn to_errors_json(&self) -> String {
        serde_json::json!({ "errors": [self.to_server_error()] }).to_string()
    }

    /// The HTTP answer with `status`, in the GraphQL response shape, with the headers this
    /// error calls for (`Allow`, `WWW-Authenticate`, `Retry-After`).
    pub(crate) fn response_with(&self, status: StatusCode, media: &'static str) -> Response {
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
            self.to_errors_json(),
        )
            .into_response();
        if let TransportError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        let extra = match self {
            TransportError::MethodNotAllowed => Some((header::ALLOW, "POST")),
            TransportError::Unauthenticated(_) => {
                Some((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
            }
            TransportError::AuthUnavailable => Some((header::WWW_AUTHENTICATE, "Bearer")),
            TransportError::TooManyConnections => Some((header::RETRY_AFTER, RETRY_AFTER_SECS)),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

impl IntoResponse for TransportError {
    fn into_response(self) -> Response {
        self.response_with(self.status(), GRAPHQL_RESPONSE)
    }
}

impl From<crate::auth::AuthError> for TransportError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::InvalidToken(_) => {
                TransportError::Unauthenticated(e.to_string())
            }
            crate::auth::AuthError::KeysUnavailable => TransportError::AuthUnavailable,
        }
    }
}
