//! A client for GraphQL over SSE (`/graphql/stream`): the request, then its event stream read
//! as it comes, with every wait bounded by [`WAIT`].

use serde_json::Value;

use super::{TestApp, WAIT};

/// A POST to `/graphql/stream` with `Accept: text/event-stream`.
pub async fn sse(app: &TestApp, token: Option<&str>, body: Value) -> SseResponse {
    let mut request = app
        .http
        .post(app.url("/graphql/stream"))
        .header("accept", "text/event-stream")
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    SseResponse(request.send().await.expect("the request is answered"))
}

pub struct SseResponse(pub reqwest::Response);

impl SseResponse {
    /// A JSON refusal: status and body.
    pub async fn json_error(self) -> (u16, Value) {
        let status = self.0.status().as_u16();
        let content_type = self.0.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/graphql-response+json");
        (status, self.0.json().await.expect("a JSON body"))
    }

    /// The event stream (the answer must be one).
    pub fn stream(self) -> EventStream {
        let response = self.0;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        EventStream {
            response,
            buffer: String::new(),
        }
    }
}

/// Reads an SSE body as it comes.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// The next block (an event, or a comment), raw; `None` when the body ends.
    pub async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end + 2].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("more of the stream within the timeout")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buffer.is_empty(), "a cut event: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// The next event (skipping keep-alive comments): its name and data.
    pub async fn event(&mut self) -> Option<(String, String)> {
        loop {
            let block = self.block().await?;
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push(value);
                } else {
                    assert!(
                        line.starts_with(':') || line.is_empty(),
                        "unexpected line {line:?}"
                    );
                }
            }
            if let Some(name) = name {
                return Some((name, data.join("\n")));
            }
        }
    }

    /// The next event must be `next`: its data.
    pub async fn next(&mut self) -> Value {
        match self.event().await {
            Some((name, data)) if name == "next" => serde_json::from_str(&data).unwrap(),
            other => panic!("expected a next event, got {other:?}"),
        }
    }

    /// The stream must complete now, and end.
    pub async fn complete(&mut self) {
        assert_eq!(self.block().await.as_deref(), Some("event: complete\n\n"));
        assert_eq!(self.block().await, None);
    }
}
