//! The customer's side of notifications over GraphQL: devices, preferences and the
//! notification centre, in memory and in Redis.

use sandbox::SandboxConfig;
use serde_json::{Value, json};
use switchyard::config::Secret;

use crate::support::TestApp;
use crate::support::redis::RedisServer;

const ADA: &str = "cust-0001";
const BOB: &str = "cust-0002";
const AGENT: &str = "agent-01";

const REGISTER: &str = "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { id platform pushService appVersion locale } }";
const DEVICES: &str = "{ myDevices { id platform pushService appVersion locale } }";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn with_redis(redis: &RedisServer) -> TestApp {
    let url = redis.url();
    TestApp::spawn_with(SandboxConfig::default(), move |c| {
        c.notifications.redis_url = Some(Secret::new(url));
    })
    .await
}

/// Registering, re-registering, moving and unregistering devices, as the issue asks.
async fn devices_register_move_and_unregister(app: &TestApp) {
    let ada = app.token(ADA).await;
    let bob = app.token(BOB).await;
    let fcm = json!({"platform": "ANDROID", "fcmToken": "fcm-token-1", "appVersion": "4.1.0", "locale": "de"});
    let first = app.data(&ada, REGISTER, json!({ "input": fcm })).await["registerDevice"].clone();
    assert_eq!(first["pushService"], "FCM");
    assert_eq!(first["locale"], "de");
    let apns = json!({"platform": "IOS", "apns": {"token": "a1b2c3", "bundleId": "com.example.retail", "environment": "SANDBOX"}});
    app.data(&ada, REGISTER, json!({ "input": apns })).await;
    let web = json!({"platform": "WEB", "webPush": {"endpoint": "https://push.example.com/sub/1", "p256dh": "BPk", "auth": "au"}});
    app.data(&ada, REGISTER, json!({ "input": web })).await;

    // The same token again is the same device, updated.
    let again = json!({"platform": "ANDROID", "fcmToken": "fcm-token-1", "appVersion": "4.2.0"});
    let same = app.data(&ada, REGISTER, json!({ "input": again })).await["registerDevice"].clone();
    assert_eq!(same["id"], first["id"]);
    let devices = app.data(&ada, DEVICES, json!({})).await["myDevices"].clone();
    let services: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pushService"].as_str().unwrap())
        .collect();
    assert_eq!(services.len(), 3, "{devices}");
    for service in ["FCM", "APNS", "WEB_PUSH"] {
        assert!(services.contains(&service), "{devices}");
    }
    let fcm_device = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pushService"] == "FCM")
        .unwrap();
    assert_eq!(fcm_device["appVersion"], "4.2.0");

    // The same token registered by another customer moves to them.
    app.data(
        &bob,
        REGISTER,
        json!({ "input": {"platform": "ANDROID", "fcmToken": "fcm-token-1"} }),
    )
    .await;
    let ada_devices = app.data(&ada, DEVICES, json!({})).await["myDevices"].clone();
    assert_eq!(ada_devices.as_array().unwrap().len(), 2, "{ada_devices}");
    let bob_devices = app.data(&bob, DEVICES, json!({})).await["myDevices"].clone();
    assert_eq!(bob_devices[0]["id"], first["id"]);

    // Unregistering: only one's own.
    let unregister = "mutation($id: ID!) { unregisterDevice(id: $id) }";
    let gone = app.data(&ada, unregister, json!({"id": first["id"]})).await;
    assert_eq!(gone["unregisterDevice"], false, "not Ada's any more");
    let gone = app.data(&bob, unregister, json!({"id": first["id"]})).await;
    assert_eq!(gone["unregisterDevice"], true);
    let bob_devices = app.data(&bob, DEVICES, json!({})).await["myDevices"].clone();
    assert_eq!(bob_devices, json!([]));
}

#[tokio::test]
async fn devices_are_registered_once_per_token_and_move_between_customers() {
    let app = TestApp::spawn().await;
    devices_register_move_and_unregister(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn devices_in_redis_outlive_the_replica_that_registered_them() {
    let redis = RedisServer::start();
    let app = with_redis(&redis).await;
    devices_register_move_and_unregister(&app).await;
    let ada = app.token(ADA).await;
    app.data(
        &ada,
        REGISTER,
        json!({ "input": {"platform": "ANDROID", "fcmToken": "kept"} }),
    )
    .await;
    app.stop().await;

    // Another replica on the same Redis sees it.
    let other = with_redis(&redis).await;
    let ada = other.token(ADA).await;
    let devices = other.data(&ada, DEVICES, json!({})).await["myDevices"].clone();
    let tokens: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pushService"].as_str().unwrap())
        .collect();
    assert!(tokens.contains(&"FCM"), "{devices}");
    other.stop().await;
}

#[tokio::test]
async fn bad_devices_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    for input in [
        json!({"platform": "ANDROID"}),
        json!({"platform": "ANDROID", "fcmToken": "a", "apns": {"token": "b", "bundleId": "c", "environment": "PRODUCTION"}}),
        json!({"platform": "IOS", "webPush": {"endpoint": "https://p.example/1", "p256dh": "k", "auth": "a"}}),
        json!({"platform": "WEB", "webPush": {"endpoint": "ftp://p.example/1", "p256dh": "k", "auth": "a"}}),
        json!({"platform": "ANDROID", "fcmToken": " "}),
        json!({"platform": "ANDROID", "fcmToken": "x".repeat(5000)}),
        json!({"platform": "ANDROID", "fcmToken": "a", "locale": "not a locale!"}),
    ] {
        let (status, body) = app
            .post(Some(&ada), REGISTER, json!({ "input": input }))
            .await;
        assert_eq!(status, 200);
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
    }
    let agent = app.token(AGENT).await;
    let (_, body) = app.post(Some(&agent), DEVICES, json!({})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = app.post(None, DEVICES, json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn preferences_have_defaults_and_keep_what_is_changed() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let read = "{ notificationPreferences { locale timeZone quietHours { start end } categories { category push email inApp } } }";
    let defaults = app.data(&ada, read, json!({})).await["notificationPreferences"].clone();
    assert_eq!(defaults["locale"], "en");
    assert_eq!(defaults["quietHours"], Value::Null);
    let marketing = defaults["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "MARKETING")
        .unwrap()
        .clone();
    assert_eq!(
        marketing,
        json!({"category": "MARKETING", "push": false, "email": false, "inApp": false}),
        "marketing only with an opt-in"
    );

    let update = "mutation($input: NotificationPreferencesInput!) { updateNotificationPreferences(input: $input) { locale timeZone quietHours { start end } } }";
    let changed = app
        .data(
            &ada,
            update,
            json!({"input": {
                "locale": "de", "timeZone": "Europe/Berlin",
                "quietHours": {"start": "22:00", "end": "07:00"},
                "categories": [{"category": "MARKETING", "push": true, "email": false, "inApp": true}],
            }}),
        )
        .await;
    assert_eq!(
        changed["updateNotificationPreferences"],
        json!({"locale": "de", "timeZone": "Europe/Berlin", "quietHours": {"start": "22:00", "end": "07:00"}})
    );
    let now = app.data(&ada, read, json!({})).await["notificationPreferences"].clone();
    assert_eq!(now["locale"], "de");
    let marketing = now["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "MARKETING")
        .unwrap()
        .clone();
    assert_eq!(marketing["push"], true);

    for input in [
        json!({"timeZone": "Mars/Olympus"}),
        json!({"quietHours": {"start": "25:00", "end": "07:00"}}),
    ] {
        let (_, body) = app
            .post(Some(&ada), update, json!({ "input": input }))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
    }
    let cleared = app
        .data(&ada, update, json!({"input": {"clearQuietHours": true}}))
        .await;
    assert_eq!(
        cleared["updateNotificationPreferences"]["quietHours"],
        Value::Null
    );
    app.stop().await;
}

#[tokio::test]
async fn the_notification_centre_starts_empty_and_web_apps_get_the_push_key() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let data = app
        .data(
            &ada,
            "{ notifications(first: 5) { edges { node { id } } pageInfo { hasNextPage } } unreadNotificationCount webPushPublicKey }",
            json!({}),
        )
        .await;
    assert_eq!(data["notifications"]["edges"], json!([]));
    assert_eq!(data["unreadNotificationCount"], 0);
    let key = data["webPushPublicKey"]
        .as_str()
        .expect("the sandbox's Web Push is on");
    assert_eq!(
        key.len(),
        87,
        "an uncompressed P-256 point, base64url: {key}"
    );
    let (_, body) = app
        .post(
            Some(&ada),
            "{ notifications(first: 51) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    app.stop().await;
}
