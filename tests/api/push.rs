//! The push channels against the sandbox's push providers, over real HTTP (FCM, Web Push),
//! HTTP/2 over TLS with the sandbox's own CA (APNs) and SMTP (e-mail): every answer class of
//! each provider reaches the outcome the outbox acts on. The channels are configured exactly
//! as the embedded sandbox configures them (`sandbox_push_wiring`); what the providers
//! received comes from the sandbox's own log and request counters.

use std::collections::BTreeMap;
use std::time::Duration;

use sandbox::{
    ApnsEnvironment, ReceivedPush, Sandbox, SandboxConfig, Upstream, UpstreamKnobs,
    WebPushSubscription,
};
use serde_json::{Value, json};
use switchyard::config::PushConfig;
use switchyard::push::{Channel as _, Channels, PushMessage, SendOutcome, Target};

/// The bundle id of the demo iOS app.
const APP: &str = "com.example.switchyard";

// ----- harness --------------------------------------------------------------------------------

struct Harness {
    sandbox: Sandbox,
    channels: Channels,
}

async fn harness() -> Harness {
    harness_with(SandboxConfig::default(), |_| {}).await
}

/// A sandbox with `knobs`, and the channels wired to it as the embedded sandbox wires them,
/// after `tweak`.
async fn harness_with(knobs: SandboxConfig, tweak: impl FnOnce(&mut PushConfig)) -> Harness {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..knobs
    })
    .await
    .expect("sandbox starts");
    let mut config = switchyard::embedded::sandbox_push_wiring(&sandbox).expect("push wiring");
    tweak(&mut config);
    let channels = switchyard::push::build(&config).expect("channels build");
    Harness { sandbox, channels }
}

impl Harness {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        self.channels.send(target, message).await
    }

    fn requests(&self, upstream: Upstream, route: &str) -> u64 {
        self.sandbox
            .requests(upstream)
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    fn subscribe(&self) -> WebPushSubscription {
        let key = self
            .channels
            .vapid_public_key()
            .expect("web push is configured");
        self.sandbox
            .push()
            .webpush_subscribe(Some(&key))
            .expect("a subscription")
    }
}

fn message(id: &str) -> PushMessage {
    PushMessage {
        id: id.to_owned(),
        title: "Your order has shipped".to_owned(),
        body: "ord-016201 is on its way: 2 items, arriving Thursday.".to_owned(),
        data: BTreeMap::from([
            ("orderId".to_owned(), "ord-016201".to_owned()),
            ("kind".to_owned(), "ORDER_SHIPPED".to_owned()),
        ]),
        deep_link: Some("https://shop.example/orders/ord-016201".to_owned()),
        collapse_key: Some("order-ord-016201".to_owned()),
        urgent: true,
        ttl: Duration::from_secs(3600),
    }
}

fn fcm(token: &str) -> Target {
    Target::Fcm {
        token: token.to_owned(),
    }
}

fn apns(token: &str, sandbox: bool) -> Target {
    Target::Apns {
        token: token.to_owned(),
        topic: APP.to_owned(),
        sandbox,
    }
}

fn webpush(subscription: &WebPushSubscription) -> Target {
    Target::WebPush {
        endpoint: subscription.endpoint.clone(),
        p256dh: subscription.keys.p256dh.clone(),
        auth: subscription.keys.auth.clone(),
    }
}

fn email(address: &str) -> Target {
    Target::Email {
        address: address.to_owned(),
        locale: "en-GB".to_owned(),
    }
}

fn retry(secs: Option<u64>) -> SendOutcome {
    SendOutcome::Retry {
        after: secs.map(Duration::from_secs),
    }
}

fn is_rejected(outcome: &SendOutcome) -> bool {
    matches!(outcome, SendOutcome::Rejected { .. })
}

// ----- FCM ------------------------------------------------------------------------------------

#[tokio::test]
async fn fcm_delivers_one_message_with_every_platform_s_fields() {
    let h = harness().await;
    let outcome = h.send(&fcm("device-token-1"), &message("n-1")).await;
    assert_eq!(outcome, SendOutcome::Delivered);

    let pushes = h.sandbox.pushes();
    let [ReceivedPush::Fcm(received)] = pushes.as_slice() else {
        panic!("one FCM message: {pushes:#?}");
    };
    assert_eq!(received.project_id, "switchyard-sandbox");
    assert!(
        received
            .name
            .starts_with("projects/switchyard-sandbox/messages/")
    );
    let m = &received.message;
    assert_eq!(m["token"], "device-token-1");
    assert_eq!(
        m["notification"],
        json!({"title": "Your order has shipped", "body": "ord-016201 is on its way: 2 items, arriving Thursday."})
    );
    assert_eq!(
        m["data"],
        json!({
            "orderId": "ord-016201",
            "kind": "ORDER_SHIPPED",
            "notificationId": "n-1",
            "deepLink": "https://shop.example/orders/ord-016201",
        })
    );
    assert_eq!(
        m["android"],
        json!({"priority": "HIGH", "ttl": "3600s", "collapse_key": "order-ord-016201"})
    );
    assert_eq!(m["apns"]["headers"]["apns-priority"], "10");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "order-ord-016201");
    assert_eq!(
        m["webpush"]["headers"],
        json!({"Urgency": "high", "TTL": "3600", "Topic": "order-ord-016201"})
    );
}

#[tokio::test]
async fn fcm_error_codes_decide_the_outcome() {
    let h = harness().await;
    let cases = [
        ("unregistered-1", SendOutcome::Gone),
        ("mismatch-1", SendOutcome::Gone),
        ("quota-1", retry(Some(30))),
        ("unavailable-1", retry(Some(10))),
        ("internal-1", retry(None)),
    ];
    for (token, expected) in cases {
        assert_eq!(
            h.send(&fcm(token), &message("n-1")).await,
            expected,
            "{token}"
        );
    }
    for token in ["invalid-1", "toolarge-1", "badrequest-1"] {
        let outcome = h.send(&fcm(token), &message("n-1")).await;
        assert!(is_rejected(&outcome), "{token}: {outcome:?}");
    }
    // A data key FCM reserves never reaches FCM.
    let before = h.requests(Upstream::Fcm, "POST /v1/projects/{project}/messages:send");
    let mut reserved = message("n-2");
    reserved.data.insert("google.c.a.e".into(), "1".into());
    assert!(is_rejected(
        &h.send(&fcm("device-token-1"), &reserved).await
    ));
    assert_eq!(
        h.requests(Upstream::Fcm, "POST /v1/projects/{project}/messages:send"),
        before
    );
    assert!(h.sandbox.pushes().is_empty(), "nothing was accepted");
}

#[tokio::test]
async fn fcm_takes_one_access_token_for_many_racing_sends() {
    let h = harness().await;
    let sends = (0..20).map(|i| {
        let target = fcm(&format!("device-{i}"));
        let message = message(&format!("n-{i}"));
        let h = &h;
        async move { h.send(&target, &message).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(|o| *o == SendOutcome::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(
        h.requests(Upstream::Fcm, "POST /token"),
        1,
        "one token exchange"
    );
    assert_eq!(
        h.requests(Upstream::Fcm, "POST /v1/projects/{project}/messages:send"),
        20
    );
    // And later sends reuse it.
    assert_eq!(
        h.send(&fcm("device-x"), &message("n-x")).await,
        SendOutcome::Delivered
    );
    assert_eq!(h.requests(Upstream::Fcm, "POST /token"), 1);
}

#[tokio::test]
async fn fcm_gets_a_new_token_once_when_the_old_one_is_refused() {
    let h = harness().await;
    assert_eq!(
        h.send(&fcm("device-1"), &message("n-1")).await,
        SendOutcome::Delivered
    );
    h.sandbox.push().expire_fcm_access_tokens();

    assert_eq!(
        h.send(&fcm("device-1"), &message("n-2")).await,
        SendOutcome::Delivered
    );
    assert_eq!(h.requests(Upstream::Fcm, "POST /token"), 2);
    assert_eq!(
        h.requests(Upstream::Fcm, "POST /v1/projects/{project}/messages:send"),
        3,
        "the first send, the one refused with 401, the one with the new token"
    );
    assert_eq!(h.sandbox.pushes().len(), 2);
}

#[tokio::test]
async fn fcm_faults_are_retried_later() {
    let failing = SandboxConfig {
        fcm: UpstreamKnobs::failing(1.0),
        ..SandboxConfig::default()
    };
    let h = harness_with(failing, |_| {}).await;
    // The token endpoint answers 503: no token, retry (after the pause between exchanges).
    let outcome = h.send(&fcm("device-1"), &message("n-1")).await;
    assert!(matches!(outcome, SendOutcome::Retry { .. }), "{outcome:?}");

    let truncated = SandboxConfig {
        fcm: UpstreamKnobs {
            malformed_rate: 1.0,
            ..UpstreamKnobs::default()
        },
        ..SandboxConfig::default()
    };
    let h = harness_with(truncated, |_| {}).await;
    let outcome = h.send(&fcm("device-1"), &message("n-1")).await;
    assert!(
        matches!(outcome, SendOutcome::Retry { .. }),
        "a token answer cut in half: {outcome:?}"
    );
}

// ----- APNs -----------------------------------------------------------------------------------

#[tokio::test]
async fn apns_delivers_over_http2_with_apple_s_headers() {
    let h = harness().await;
    let device = h
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Production);
    let before = chrono::Utc::now().timestamp();
    assert_eq!(
        h.send(&apns(&device, false), &message("n-1")).await,
        SendOutcome::Delivered
    );

    let pushes = h.sandbox.pushes();
    let [ReceivedPush::Apns(received)] = pushes.as_slice() else {
        panic!("one APNs notification: {pushes:#?}");
    };
    assert_eq!(received.environment, ApnsEnvironment::Production);
    assert_eq!(received.device_token, device);
    assert_eq!(received.http_version, "HTTP/2.0");
    let headers = &received.headers;
    assert_eq!(headers["apns-topic"], APP);
    assert_eq!(headers["apns-push-type"], "alert");
    assert_eq!(headers["apns-priority"], "10");
    assert_eq!(headers["apns-collapse-id"], "order-ord-016201");
    let expiration: i64 = headers["apns-expiration"].parse().unwrap();
    assert!(
        (before + 3600..=before + 3605).contains(&expiration),
        "{expiration}"
    );
    let apns_id = &headers["apns-id"];
    assert_eq!(apns_id.len(), 36, "{apns_id}");
    assert_eq!(
        received.payload,
        json!({
            "aps": {"alert": {"title": "Your order has shipped", "body": "ord-016201 is on its way: 2 items, arriving Thursday."}, "sound": "default"},
            "orderId": "ord-016201",
            "kind": "ORDER_SHIPPED",
            "notificationId": "n-1",
            "deepLink": "https://shop.example/orders/ord-016201",
        })
    );

    // The same notification again (a retry) carries the same apns-id; a calm one priority 5.
    let calm = PushMessage {
        urgent: false,
        collapse_key: None,
        ..message("n-1")
    };
    assert_eq!(
        h.send(&apns(&device, false), &calm).await,
        SendOutcome::Delivered
    );
    let pushes = h.sandbox.pushes();
    let ReceivedPush::Apns(again) = &pushes[1] else {
        panic!("{pushes:#?}")
    };
    assert_eq!(&again.headers["apns-id"], apns_id);
    assert_eq!(again.headers["apns-priority"], "5");
    assert!(!again.headers.contains_key("apns-collapse-id"));
}

#[tokio::test]
async fn apns_development_devices_go_to_the_development_environment() {
    let h = harness().await;
    let device = h
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Development);
    assert_eq!(
        h.send(&apns(&device, true), &message("n-1")).await,
        SendOutcome::Delivered
    );
    let pushes = h.sandbox.pushes();
    let [ReceivedPush::Apns(received)] = pushes.as_slice() else {
        panic!("{pushes:#?}")
    };
    assert_eq!(received.environment, ApnsEnvironment::Development);
    // The production environment does not know a development token: BadDeviceToken.
    assert_eq!(
        h.send(&apns(&device, false), &message("n-2")).await,
        SendOutcome::Gone
    );
    // Another app's topic: DeviceTokenNotForTopic.
    let other_app = Target::Apns {
        token: device,
        topic: "com.example.other".into(),
        sandbox: true,
    };
    assert_eq!(h.send(&other_app, &message("n-3")).await, SendOutcome::Gone);
}

#[tokio::test]
async fn apns_reasons_decide_the_outcome() {
    let h = harness().await;
    let cases = [
        ("unregistered-1", SendOutcome::Gone),
        ("invalid-1", SendOutcome::Gone),
        ("mismatch-1", SendOutcome::Gone),
        ("quota-1", retry(Some(30))),
        ("unavailable-1", retry(None)),
        ("internal-1", retry(None)),
    ];
    for (token, expected) in cases {
        assert_eq!(
            h.send(&apns(token, false), &message("n-1")).await,
            expected,
            "{token}"
        );
    }
    for token in ["toolarge-1", "badrequest-1"] {
        let outcome = h.send(&apns(token, false), &message("n-1")).await;
        assert!(is_rejected(&outcome), "{token}: {outcome:?}");
    }
    // Too large for APNs: refused here, never sent.
    let before = h.requests(Upstream::Apns, "POST /3/device/{token}");
    let mut large = message("n-2");
    large.body = "x".repeat(5000);
    let device = h
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Production);
    assert!(is_rejected(&h.send(&apns(&device, false), &large).await));
    assert_eq!(h.requests(Upstream::Apns, "POST /3/device/{token}"), before);
}

#[tokio::test]
async fn apns_reuses_its_provider_token_and_replaces_it_when_expired() {
    let h = harness().await;
    let device = h
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Production);
    let sends = (0..8).map(|i| {
        let (target, message) = (apns(&device, false), message(&format!("n-{i}")));
        let h = &h;
        async move { h.send(&target, &message).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    // A new token per request would be 429 TooManyProviderTokenUpdates.
    assert!(
        outcomes.iter().all(|o| *o == SendOutcome::Delivered),
        "{outcomes:?}"
    );
    let fingerprints = |pushes: &[ReceivedPush]| -> Vec<String> {
        pushes
            .iter()
            .filter_map(|p| match p {
                ReceivedPush::Apns(a) => Some(a.provider_token_fingerprint.clone()),
                _ => None,
            })
            .collect()
    };
    let first = fingerprints(&h.sandbox.pushes());
    assert_eq!(first.len(), 8);
    assert!(
        first.iter().all(|f| *f == first[0]),
        "one provider token: {first:?}"
    );

    h.sandbox.push().expire_apns_provider_tokens();
    assert_eq!(
        h.send(&apns(&device, false), &message("n-9")).await,
        SendOutcome::Delivered
    );
    let all = fingerprints(&h.sandbox.pushes());
    assert_ne!(all[8], first[0], "a new token after ExpiredProviderToken");
    assert_eq!(
        h.requests(Upstream::Apns, "POST /3/device/{token}"),
        10,
        "8, the one refused as expired, the one with the new token"
    );
}

// ----- Web Push -------------------------------------------------------------------------------

#[tokio::test]
async fn webpush_payloads_arrive_encrypted_and_decrypt_to_what_was_sent() {
    let h = harness().await;
    let subscription = h.subscribe();
    assert_eq!(
        h.send(&webpush(&subscription), &message("n-1")).await,
        SendOutcome::Delivered
    );

    let pushes = h.sandbox.pushes();
    let [ReceivedPush::WebPush(received)] = pushes.as_slice() else {
        panic!("one Web Push message: {pushes:#?}");
    };
    assert_eq!(received.endpoint, subscription.endpoint);
    let payload: Value = serde_json::from_str(&received.payload).expect("JSON payload");
    assert_eq!(
        payload,
        json!({
            "notificationId": "n-1",
            "title": "Your order has shipped",
            "body": "ord-016201 is on its way: 2 items, arriving Thursday.",
            "deepLink": "https://shop.example/orders/ord-016201",
            "data": {"orderId": "ord-016201", "kind": "ORDER_SHIPPED"},
        })
    );
    assert_eq!(received.ttl, 3600);
    assert_eq!(received.urgency.as_deref(), Some("high"));
    assert_eq!(received.topic.as_deref(), Some("order-ord-016201"));
    assert_eq!(received.vapid_subject, "mailto:push@switchyard.example");
    assert_eq!(
        Some(received.vapid_public_key.clone()),
        h.channels.vapid_public_key()
    );
    assert_eq!(
        h.channels.vapid_public_key().as_deref(),
        Some(sandbox::DEV_VAPID_PUBLIC_KEY)
    );

    // Without a collapse key the Topic comes from the id, so a retry replaces its own copy.
    let plain = PushMessage {
        collapse_key: None,
        urgent: false,
        ..message("notification 2")
    };
    assert_eq!(
        h.send(&webpush(&subscription), &plain).await,
        SendOutcome::Delivered
    );
    let pushes = h.sandbox.pushes();
    let ReceivedPush::WebPush(second) = &pushes[1] else {
        panic!("{pushes:#?}")
    };
    assert_eq!(second.urgency.as_deref(), Some("normal"));
    let topic = second.topic.clone().unwrap();
    assert_eq!(topic.len(), 32, "derived: {topic}");
}

#[tokio::test]
async fn webpush_statuses_decide_the_outcome() {
    let h = harness().await;
    let subscription = h.subscribe();
    let at = |id: &str| Target::WebPush {
        endpoint: format!("{}/push/{id}", h.sandbox.urls().webpush),
        p256dh: subscription.keys.p256dh.clone(),
        auth: subscription.keys.auth.clone(),
    };
    let cases = [
        ("unregistered-1", SendOutcome::Gone),
        ("no-such-subscription", SendOutcome::Gone),
        ("quota-1", retry(Some(30))),
        ("unavailable-1", retry(Some(10))),
        ("internal-1", retry(None)),
    ];
    for (id, expected) in cases {
        assert_eq!(h.send(&at(id), &message("n-1")).await, expected, "{id}");
    }
    for id in ["toolarge-1", "mismatch-1", "badrequest-1"] {
        let outcome = h.send(&at(id), &message("n-1")).await;
        assert!(is_rejected(&outcome), "{id}: {outcome:?}");
    }

    // Unsubscribed: 410.
    assert!(h.sandbox.push().webpush_unsubscribe(&subscription.endpoint));
    assert_eq!(
        h.send(&webpush(&subscription), &message("n-2")).await,
        SendOutcome::Gone
    );

    // Subscribed with another application server key: the push service refuses ours (403).
    let foreign = h
        .sandbox
        .push()
        .webpush_subscribe(Some("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"))
        .unwrap();
    assert!(is_rejected(
        &h.send(&webpush(&foreign), &message("n-3")).await
    ));
    assert!(h.sandbox.pushes().is_empty());
}

#[tokio::test]
async fn webpush_refuses_plain_http_endpoints_unless_allowed() {
    let h = harness_with(SandboxConfig::default(), |push| {
        push.webpush.as_mut().unwrap().allow_http = false;
    })
    .await;
    let subscription = h.subscribe();
    let outcome = h.send(&webpush(&subscription), &message("n-1")).await;
    let SendOutcome::Rejected { reason } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("allow_http"), "{reason}");
    assert!(
        h.sandbox.requests(Upstream::WebPush).is_empty(),
        "no request was made"
    );

    // Keys that cannot be used are refused here too.
    let broken = Target::WebPush {
        endpoint: "https://push.example/sub".into(),
        p256dh: "not-a-key".into(),
        auth: subscription.keys.auth.clone(),
    };
    assert!(is_rejected(&h.send(&broken, &message("n-1")).await));
}

// ----- e-mail ---------------------------------------------------------------------------------

#[tokio::test]
async fn email_reaches_the_sink_as_text_and_html() {
    let h = harness().await;
    assert_eq!(
        h.send(&email("ada@example.com"), &message("n-1")).await,
        SendOutcome::Delivered
    );

    let pushes = h.sandbox.pushes();
    let [ReceivedPush::Email(received)] = pushes.as_slice() else {
        panic!("one e-mail: {pushes:#?}");
    };
    assert_eq!(received.from, "notifications@switchyard.example");
    assert_eq!(received.to, ["ada@example.com"]);
    assert_eq!(received.subject.as_deref(), Some("Your order has shipped"));
    let data = &received.data;
    for expected in [
        "From: Switchyard <notifications@switchyard.example>",
        "To: ada@example.com",
        "Message-ID: <notification-n-1@switchyard.example>",
        "Content-Language: en-GB",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "ord-016201 is on its way",
        "https://shop.example/orders/ord-016201",
    ] {
        assert!(data.contains(expected), "{expected:?} missing in:\n{data}");
    }
    assert_eq!(h.requests(Upstream::Smtp, "SMTP DATA"), 1);
}

#[tokio::test]
async fn email_replies_decide_the_outcome() {
    let h = harness().await;
    assert_eq!(
        h.send(&email("unknown-1@example.com"), &message("n-1"))
            .await,
        SendOutcome::Gone
    );
    assert_eq!(
        h.send(&email("full-1@example.com"), &message("n-1")).await,
        retry(None)
    );
    assert!(is_rejected(
        &h.send(&email("reject-1@example.com"), &message("n-1"))
            .await
    ));
    assert!(is_rejected(
        &h.send(&email("broken-1@example.com"), &message("n-1"))
            .await
    ));
    assert!(is_rejected(
        &h.send(&email("not an address"), &message("n-1")).await
    ));
    assert!(h.sandbox.pushes().is_empty());

    let down = SandboxConfig {
        smtp: UpstreamKnobs::failing(1.0),
        ..SandboxConfig::default()
    };
    let h = harness_with(down, |_| {}).await;
    assert_eq!(
        h.send(&email("ada@example.com"), &message("n-1")).await,
        retry(None)
    );
}

// ----- all channels ---------------------------------------------------------------------------

#[tokio::test]
async fn the_sandbox_lists_every_push_newest_last() {
    let h = harness().await;
    let device = h
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Production);
    let subscription = h.subscribe();
    for target in [
        fcm("device-1"),
        apns(&device, false),
        webpush(&subscription),
        email("ada@example.com"),
    ] {
        assert_eq!(
            h.send(&target, &message("n-1")).await,
            SendOutcome::Delivered,
            "{target:?}"
        );
    }
    let listed: Value = reqwest::get(format!("{}/_sandbox/push", h.sandbox.urls().fcm))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let providers: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["fcm", "apns", "webpush", "email"]);
    let payload: Value = serde_json::from_str(listed[2]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["title"], "Your order has shipped", "decrypted");
    // Each stamped with when it was accepted, in order.
    let stamps: Vec<chrono::DateTime<chrono::Utc>> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["received_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(stamps.is_sorted(), "{stamps:?}");
    assert_eq!(h.sandbox.push().received_count(), 4);
}

#[tokio::test]
async fn a_target_whose_channel_is_off_is_rejected() {
    let h = harness_with(SandboxConfig::default(), |push| {
        push.apns = None;
        push.webpush = None;
    })
    .await;
    assert_eq!(h.channels.configured(), ["fcm", "email"]);
    assert_eq!(h.channels.vapid_public_key(), None);
    let outcome = h.send(&apns("abc", false), &message("n-1")).await;
    assert_eq!(
        outcome,
        SendOutcome::Rejected {
            reason: "the apns channel is not configured".into()
        }
    );
}

#[tokio::test]
async fn channels_that_cannot_work_fail_to_build_naming_the_key() {
    let sandbox = Sandbox::start(SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let wiring = switchyard::embedded::sandbox_push_wiring(&sandbox).unwrap();
    let error = |tweak: &dyn Fn(&mut PushConfig)| {
        let mut config = wiring.clone();
        tweak(&mut config);
        format!("{:#}", switchyard::push::build(&config).unwrap_err())
    };
    let missing =
        error(&|c| c.fcm.as_mut().unwrap().service_account_file = "/nonexistent.json".into());
    assert!(
        missing.contains("push.fcm.service_account_file"),
        "{missing}"
    );
    let not_a_p8 = error(&|c| {
        let apns = c.apns.as_mut().unwrap();
        apns.key_file = apns.ca_file.clone().unwrap();
    });
    assert!(not_a_p8.contains("push.apns.key_file"), "{not_a_p8}");
    let short = error(&|c| {
        c.webpush.as_mut().unwrap().vapid_private_key =
            Some(switchyard::config::Secret::new("c2hvcnQ"));
    });
    assert!(short.contains("push.webpush.vapid_private_key"), "{short}");
    let both = error(&|c| {
        c.webpush.as_mut().unwrap().vapid_private_key_file = Some("/k.pem".into());
    });
    assert!(both.contains("not both"), "{both}");
    let from = error(&|c| c.email.as_mut().unwrap().from = "nobody".into());
    assert!(from.contains("push.email.from"), "{from}");
    // No secret in any message.
    for text in [&missing, &not_a_p8, &short, &both, &from] {
        assert!(!text.contains(sandbox::DEV_VAPID_PRIVATE_KEY), "{text}");
    }
}
