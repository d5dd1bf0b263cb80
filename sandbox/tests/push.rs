//! The sandbox's push providers on their own, over the wire, with clients written here from
//! the providers' public contracts (not Switchyard's): FCM's JWT grant and message checks,
//! APNs' HTTP/2-only TLS with the sandbox's CA, the Web Push service's subscriptions, the SMTP
//! sink's conversation, and the `/_sandbox/push` log.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode, Version};
use sandbox::{ReceivedPush, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

async fn start() -> Sandbox {
    Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    })
    .await
    .expect("the sandbox starts")
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// A JWT grant for the sandbox's service account, with `tweak` applied to its claims.
fn grant(account: &Value, kid: &str, tweak: impl FnOnce(&mut Value)) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": account["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": account["token_uri"],
        "iat": now,
        "exp": now + 3600,
    });
    tweak(&mut claims);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key =
        EncodingKey::from_rsa_pem(account["private_key"].as_str().unwrap().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn exchange(account: &Value, assertion: &str) -> (StatusCode, Value) {
    let response = client()
        .post(account["token_uri"].as_str().unwrap())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn fcm_verifies_the_grant_and_the_message_shape() {
    let sandbox = start().await;
    let credentials = sandbox.push().credentials();
    let account: Value = serde_json::from_str(
        &std::fs::read_to_string(&credentials.fcm_service_account_file).unwrap(),
    )
    .unwrap();
    assert_eq!(
        account["token_uri"],
        format!("{}/token", sandbox.urls().fcm)
    );
    let kid = account["private_key_id"].as_str().unwrap();

    let (status, body) = exchange(&account, &grant(&account, "other-kid", |_| {})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = exchange(
        &account,
        &grant(&account, kid, |c| {
            c["aud"] = json!("https://elsewhere/token")
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = exchange(
        &account,
        &grant(&account, kid, |c| c["scope"] = json!("email")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (status, body) = exchange(
        &account,
        &grant(&account, kid, |c| {
            c["exp"] = json!(c["iat"].as_i64().unwrap() + 7200)
        }),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let (status, token) = exchange(&account, &grant(&account, kid, |_| {})).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let access = token["access_token"].as_str().unwrap();

    let send_url = format!(
        "{}/v1/projects/{}/messages:send",
        sandbox.urls().fcm,
        credentials.fcm_project_id
    );
    let send = |bearer: &str, body: Value| {
        client()
            .post(&send_url)
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let response = send("ya29.forged", json!({"message": {"token": "t"}}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(
        access,
        json!({"message": {"token": "t", "data": {"count": 3}}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error["error"]["details"][0]["errorCode"],
        "INVALID_ARGUMENT"
    );
    let response = send(
        access,
        json!({"message": {"token": "t", "android": {"ttl": "3600"}}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = send(
        access,
        json!({"message": {"token": "t", "data": {"count": "3"}}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let name: Value = response.json().await.unwrap();
    assert!(
        name["name"]
            .as_str()
            .unwrap()
            .starts_with("projects/switchyard-sandbox/messages/")
    );
    let response = send(access, json!({"message": {"token": "unregistered-1"}}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["details"][0]["errorCode"], "UNREGISTERED");
    assert_eq!(sandbox.pushes().len(), 1);
}

#[tokio::test]
async fn apns_speaks_http2_over_tls_with_the_sandbox_ca_only() {
    let sandbox = start().await;
    let ca = reqwest::Certificate::from_pem(sandbox.push().ca_pem().as_bytes()).unwrap();
    let h2 = Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let url = format!("{}/3/device/abc", sandbox.urls().apns);
    let response = h2.post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "MissingProviderToken");

    // HTTP/1.1 over TLS: no protocol in common, the handshake fails.
    let h1 = Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    assert!(h1.post(&url).body("{}").send().await.is_err());
    // Without the sandbox's CA the certificate is not trusted.
    let untrusting = Client::builder().tls_certs_only([]).build().unwrap();
    assert!(untrusting.post(&url).send().await.is_err());
}

#[tokio::test]
async fn webpush_mints_subscriptions_and_forgets_them() {
    let sandbox = start().await;
    let base = &sandbox.urls().webpush;
    let response = client()
        .post(format!("{base}/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let subscription: Value = response.json().await.unwrap();
    let endpoint = subscription["endpoint"].as_str().unwrap().to_owned();
    assert!(endpoint.starts_with(&format!("{base}/push/")), "{endpoint}");
    assert_eq!(subscription["keys"]["p256dh"].as_str().unwrap().len(), 87);
    assert_eq!(subscription["keys"]["auth"].as_str().unwrap().len(), 22);

    let response = client()
        .post(&endpoint)
        .header("ttl", "60")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no VAPID");
    let id = endpoint.rsplit('/').next().unwrap();
    let response = client()
        .delete(format!("{base}/subscriptions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client()
        .post(&endpoint)
        .header("ttl", "60")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
    let response = client()
        .post(format!("{base}/push/unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = client()
        .post(format!("{base}/subscriptions"))
        .json(&json!({"applicationServerKey": "not a key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_smtp_sink_takes_a_message_and_refuses_error_recipients() {
    let sandbox = start().await;
    let address = sandbox
        .urls()
        .smtp
        .strip_prefix("smtp://")
        .unwrap()
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reply = async || -> String {
        // Multi-line replies: read up to the line with a space after the code.
        let mut text = String::new();
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return text;
            }
        }
    };
    assert!(reply().await.starts_with("220 "));
    let mut say = async |line: &str| {
        write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap()
    };
    say("EHLO test.example").await;
    assert!(reply().await.contains("250 SIZE"));
    say("MAIL FROM:<from@example.com>").await;
    assert!(reply().await.starts_with("250 "));
    say("RCPT TO:<unknown-1@example.com>").await;
    assert!(reply().await.starts_with("550 5.1.1"));
    say("RCPT TO:<full-1@example.com>").await;
    assert!(reply().await.starts_with("452 "));
    say("RCPT TO:<ada@example.com>").await;
    assert!(reply().await.starts_with("250 "));
    say("DATA").await;
    assert!(reply().await.starts_with("354 "));
    say("Subject: Hello\r\n\r\n..a line that starts with a dot\r\n.").await;
    assert!(reply().await.starts_with("250 "));
    say("QUIT").await;
    assert!(reply().await.starts_with("221 "));

    let pushes = sandbox.pushes();
    let [ReceivedPush::Email(email)] = pushes.as_slice() else {
        panic!("{pushes:#?}")
    };
    assert_eq!(email.from, "from@example.com");
    assert_eq!(email.to, ["ada@example.com"]);
    assert_eq!(email.subject.as_deref(), Some("Hello"));
    assert_eq!(
        email.data,
        "Subject: Hello\r\n\r\n.a line that starts with a dot\r\n"
    );
}

#[tokio::test]
async fn the_push_log_is_listed_and_reset_over_http() {
    let sandbox = start().await;
    let log = format!("{}/_sandbox/push", sandbox.urls().fcm);
    let listed: Value = client()
        .get(&log)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    let device = sandbox
        .push()
        .apns_device("com.example.app", sandbox::ApnsEnvironment::Production);
    assert_eq!(device.len(), 64);
    let response = client().delete(&log).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Credential files exist while the sandbox runs, and go with it.
    let credentials = sandbox.push().credentials().clone();
    for file in [
        &credentials.fcm_service_account_file,
        &credentials.apns_key_file,
        &credentials.apns_ca_file,
    ] {
        assert!(file.exists(), "{}", file.display());
    }
    sandbox.shutdown().await;
    assert!(!credentials.apns_key_file.exists());
}
