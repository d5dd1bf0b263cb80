//! The messages of the two websocket subprotocols, read into one vocabulary and written back.
//!
//! | meaning | graphql-transport-ws | graphql-ws (legacy) |
//! |---|---|---|
//! | client asks to connect | `connection_init` | `connection_init` |
//! | server accepts | `connection_ack` | `connection_ack` (then `ka`) |
//! | server refuses | close 4403 | `connection_error`, then close |
//! | client runs an operation | `subscribe` | `start` |
//! | a result | `next` | `data` |
//! | the operation could not run | `error` | `error` |
//! | the operation is done | `complete` | `complete` |
//! | client stops an operation | `complete` | `stop` |
//! | keep-alive | `ping` (client answers `pong`) | `ka` |
//! | client leaves | close frame | `connection_terminate` |

use serde_json::{Map, Value, json};

use crate::transport::request::GraphQlRequest;

/// A websocket subprotocol we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>
    TransportWs,
    /// Apollo's `subscriptions-transport-ws`, for older clients.
    Legacy,
}

impl Protocol {
    /// Both, in order of preference.
    pub(super) const ALL: [Protocol; 2] = [Protocol::TransportWs, Protocol::Legacy];

    /// The `Sec-WebSocket-Protocol` name.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }

    /// The protocol with this `Sec-WebSocket-Protocol` name.
    pub(super) fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What a client can say, in either protocol.
#[derive(Debug)]
pub(super) enum ClientMessage {
    /// `connection_init`, with its payload (the credentials).
    Init(Option<Map<String, Value>>),
    /// `subscribe` / `start`: run an operation under this id.
    Subscribe {
        id: String,
        operation: GraphQlRequest,
    },
    /// `complete` / `stop`: stop the operation with this id.
    Stop { id: String },
    /// `ping` (graphql-transport-ws), with the payload to echo.
    Ping(Option<Value>),
    /// `pong` (graphql-transport-ws).
    Pong,
    /// `connection_terminate` (legacy).
    Terminate,
}

/// Largest `ping` whose payload is echoed in its `pong`.
const MAX_ECHOED_PING_BYTES: usize = 1024;

/// Why a message is not one the protocol knows; short enough for a close frame's reason
/// once truncated.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Invalid(pub(super) String);

fn invalid(why: impl std::fmt::Display) -> Invalid {
    Invalid(format!("Invalid message: {why}"))
}

/// Reads one text message of `protocol`.
pub(super) fn decode(protocol: Protocol, text: &str) -> Result<ClientMessage, Invalid> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
        return Err(invalid("not a JSON object"));
    };
    let kind = match message.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(invalid("no `type`")),
    };
    match (protocol, kind.as_str()) {
        (_, "connection_init") => Ok(ClientMessage::Init(object(&mut message, &kind)?)),
        (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
            let id = id(&mut message, &kind)?;
            let payload = message
                .remove("payload")
                .ok_or_else(|| invalid(format_args!("`{kind}` needs a payload")))?;
            // Only a persisted query's hash may stand for the document.
            let hashed = payload.pointer("/extensions/persistedQuery").is_some();
            if payload.get("query").is_none() && !hashed {
                return Err(invalid(format_args!(
                    "`{kind}` payload: missing field `query`"
                )));
            }
            let operation = serde_json::from_value::<GraphQlRequest>(payload)
                .map_err(|e| invalid(format_args!("`{kind}` payload: {e}")))?;
            Ok(ClientMessage::Subscribe { id, operation })
        }
        (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
            Ok(ClientMessage::Stop {
                id: id(&mut message, &kind)?,
            })
        }
        // A small payload is echoed in the `pong`; a large one is not (the spec does not ask
        // for an echo, and echoing would let a client fill our queue with its own bytes).
        (Protocol::TransportWs, "ping") => {
            let payload = object(&mut message, &kind)?;
            let echoed = text.len() <= MAX_ECHOED_PING_BYTES;
            Ok(ClientMessage::Ping(
                payload.filter(|_| echoed).map(Value::Object),
            ))
        }
        (Protocol::TransportWs, "pong") => {
            object(&mut message, &kind)?;
            Ok(ClientMessage::Pong)
        }
        (Protocol::Legacy, "connection_terminate") => Ok(ClientMessage::Terminate),
        _ => Err(invalid(format_args!("unknown type {kind:?}"))),
    }
}

/// The message's non-empty string `id`.
fn id(message: &mut Map<String, Value>, kind: &str) -> Result<String, Invalid> {
    match message.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        _ => Err(invalid(format_args!(
            "`{kind}` needs a non-empty string `id`"
        ))),
    }
}

/// The message's optional payload, which must be an object (or null) where present.
fn object(
    message: &mut Map<String, Value>,
    kind: &str,
) -> Result<Option<Map<String, Value>>, Invalid> {
    match message.remove("payload") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(payload)) => Ok(Some(payload)),
        Some(_) => Err(invalid(format_args!("`{kind}` payload must be an object"))),
    }
}

/// The bearer token of a `connection_init` payload: `{"Authorization": "Bearer <jwt>"}`
/// (also spelled `authorization`), or the same inside `{"headers": {...}}`.
pub(super) fn bearer_token(payload: Option<&Map<String, Value>>) -> Result<&str, &'static str> {
    let payload = payload.ok_or("connection_init has no payload")?;
    let value = authorization(payload)
        .or_else(|| payload.get("headers")?.as_object().and_then(authorization))
        .ok_or("connection_init payload has no Authorization")?;
    let value = value.as_str().ok_or("Authorization is not a string")?;
    crate::transport::request::bearer_value(value)
        .map_err(|_| "use `Authorization: Bearer <token>`")
}

fn authorization(map: &Map<String, Value>) -> Option<&Value> {
    map.get("Authorization")
        .or_else(|| map.get("authorization"))
}

/// What the server says, in either protocol.
#[derive(Debug)]
pub(super) enum ServerMessage<'a> {
    /// `connection_ack`.
    Ack,
    /// Legacy only: `connection_error` (graphql-transport-ws closes the socket instead).
    ConnectionError(&'a str),
    /// `next` / `data`: one result (a GraphQL response, as JSON text).
    Next { id: &'a str, result: &'a str },
    /// `error`: the operation could not run; a JSON array of GraphQL errors, each with
    /// `extensions.code`.
    Error { id: &'a str, errors: &'a str },
    /// `complete`: the operation is done.
    Complete { id: &'a str },
    /// `ping` / `ka`: the server's keep-alive.
    KeepAlive,
    /// `pong`, echoing the `ping`'s payload.
    Pong(Option<Value>),
}

impl Protocol {
    /// The text of a server message in this protocol.
    pub(super) fn encode(self, message: ServerMessage<'_>) -> String {
        let legacy = self == Protocol::Legacy;
        // Results and errors come serialized already; they are spliced in as they are.
        let with_payload = |kind: &str, id: &str, payload: &str| {
            format!(
                r#"{{"type":"{kind}","id":{},"payload":{payload}}}"#,
                Value::String(id.to_owned())
            )
        };
        let value = match message {
            ServerMessage::Ack => json!({"type": "connection_ack"}),
            ServerMessage::ConnectionError(message) => {
                json!({"type": "connection_error", "payload": {"message": message}})
            }
            ServerMessage::Next { id, result } => {
                return with_payload(if legacy { "data" } else { "next" }, id, result);
            }
            ServerMessage::Error { id, errors } => return with_payload("error", id, errors),
            ServerMessage::Complete { id } => json!({"type": "complete", "id": id}),
            ServerMessage::KeepAlive if legacy => json!({"type": "ka"}),
            ServerMessage::KeepAlive => json!({"type": "ping"}),
            ServerMessage::Pong(Some(payload)) => json!({"type": "pong", "payload": payload}),
            ServerMessage::Pong(None) => json!({"type": "pong"}),
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever a client sends, it is a message or a refusal, never a panic.
        #[test]
        fn any_text_is_decoded_or_refused(text in ".{0,600}") {
            for protocol in Protocol::ALL {
                let _ = decode(protocol, &text);
            }
        }

        #[test]
        fn json_of_any_shape_is_decoded_or_refused(json in crate::transport::hostile::any_json(4)) {
            let text = json.to_string();
            for protocol in Protocol::ALL {
                let _ = decode(protocol, &text);
            }
        }
    }

    use super::*;

    fn modern(text: &str) -> Result<ClientMessage, Invalid> {
        decode(Protocol::TransportWs, text)
    }

    #[test]
    fn reads_subscribe_and_start() {
        let text = r#"{"type":"subscribe","id":"1","payload":{"query":"{ me { id } }"}}"#;
        assert!(matches!(modern(text), Ok(ClientMessage::Subscribe { id, .. }) if id == "1"));
        let legacy = r#"{"type":"start","id":"7","payload":{"query":"{ a }","variables":null}}"#;
        assert!(matches!(
            decode(Protocol::Legacy, legacy),
            Ok(ClientMessage::Subscribe { id, .. }) if id == "7"
        ));
        // Each protocol only knows its own words.
        assert!(decode(Protocol::Legacy, text).is_err());
        assert!(modern(legacy).is_err());
    }

    #[test]
    fn refuses_malformed_messages_with_short_reasons() {
        for (text, reason) in [
            ("nope", "Invalid message: not a JSON object"),
            ("[]", "Invalid message: not a JSON object"),
            (r#"{"id":"1"}"#, "Invalid message: no `type`"),
            (
                r#"{"type":"hello"}"#,
                r#"Invalid message: unknown type "hello""#,
            ),
            (
                r#"{"type":"subscribe","payload":{"query":"{a}"}}"#,
                "Invalid message: `subscribe` needs a non-empty string `id`",
            ),
            (
                r#"{"type":"subscribe","id":""}"#,
                "Invalid message: `subscribe` needs a non-empty string `id`",
            ),
            (
                r#"{"type":"subscribe","id":"1"}"#,
                "Invalid message: `subscribe` needs a payload",
            ),
            (
                r#"{"type":"connection_init","payload":"x"}"#,
                "Invalid message: `connection_init` payload must be an object",
            ),
        ] {
            assert_eq!(
                modern(text).unwrap_err(),
                Invalid(reason.to_owned()),
                "{text}"
            );
        }
        let Err(Invalid(reason)) = modern(r#"{"type":"subscribe","id":"1","payload":{}}"#) else {
            panic!("a payload without a query is invalid");
        };
        assert!(reason.starts_with("Invalid message: `subscribe` payload: missing field `query`"));
    }

    #[test]
    fn finds_the_token_where_clients_put_it() {
        let payload = |v: Value| v.as_object().cloned();
        for value in [
            json!({"Authorization": "Bearer abc"}),
            json!({"authorization": "bearer abc"}),
            json!({"headers": {"Authorization": "Bearer abc"}}),
        ] {
            assert_eq!(bearer_token(payload(value).as_ref()), Ok("abc"));
        }
        assert!(bearer_token(None).is_err());
        assert!(bearer_token(payload(json!({"Authorization": "Basic abc"})).as_ref()).is_err());
        assert!(bearer_token(payload(json!({"Authorization": 1})).as_ref()).is_err());
        assert!(bearer_token(payload(json!({"token": "abc"})).as_ref()).is_err());
    }

    #[test]
    fn writes_each_protocols_words() {
        let json = |p: Protocol, m: ServerMessage<'_>| {
            serde_json::from_str::<Value>(&p.encode(m)).expect("JSON")
        };
        let next = |id| ServerMessage::Next {
            id,
            result: r#"{"data":null}"#,
        };
        assert_eq!(
            json(Protocol::TransportWs, next("1")),
            json!({"type": "next", "id": "1", "payload": {"data": null}})
        );
        assert_eq!(
            json(Protocol::Legacy, next("1")),
            json!({"type": "data", "id": "1", "payload": {"data": null}})
        );
        let error = ServerMessage::Error {
            id: "a\"b",
            errors: r#"[{"message":"m"}]"#,
        };
        assert_eq!(
            json(Protocol::TransportWs, error),
            json!({"type": "error", "id": "a\"b", "payload": [{"message": "m"}]})
        );
        assert_eq!(
            json(Protocol::Legacy, ServerMessage::KeepAlive),
            json!({"type": "ka"})
        );
        assert_eq!(
            json(Protocol::TransportWs, ServerMessage::KeepAlive),
            json!({"type": "ping"})
        );
        assert_eq!(
            json(
                Protocol::TransportWs,
                ServerMessage::Pong(Some(json!({"n": 1})))
            ),
            json!({"type": "pong", "payload": {"n": 1}})
        );
        assert_eq!(
            json(
                Protocol::Legacy,
                ServerMessage::ConnectionError("Forbidden")
            ),
            json!({"type": "connection_error", "payload": {"message": "Forbidden"}})
        );
    }
}
