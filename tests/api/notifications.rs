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
    let apns = json!({"platform": "IOS", "apns": {"token": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "bundleId": "com.example.retail", "environment": "SANDBOX"}});
    app.data(&ada, REGISTER, json!({ "input": apns })).await;
    let web = json!({"platform": "WEB", "webPush": {"endpoint": "HTTPS://push.example.com/sub/1",
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg"}});
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

    // At most ten: the eleventh and twelfth push out the two registered longest ago.
    for i in 0..12 {
        app.data(
            &bob,
            REGISTER,
            json!({"input": {"platform": "ANDROID", "fcmToken": format!("cap-{i}"), "appVersion": format!("1.0.{i}")}}),
        )
        .await;
    }
    let kept: Vec<String> = app.data(&bob, DEVICES, json!({})).await["myDevices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["appVersion"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (2..12).map(|i| format!("1.0.{i}")).collect();
    assert_eq!(kept, expected);
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
        json!({"platform": "WEB", "webPush": {"endpoint": "https://", "p256dh": "k", "auth": "a"}}),
        json!({"platform": "WEB", "webPush": {"endpoint": "https://p.example/1", "p256dh": "!!!not base64$$", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}),
        json!({"platform": "WEB", "webPush": {"endpoint": "https://p.example/1",
               "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "YQ"}}),
        json!({"platform": "IOS", "apns": {"token": "not hex!! /../", "bundleId": "c", "environment": "PRODUCTION"}}),
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

/// Addresses nothing could ever be pushed to are refused when registered, naming the field
/// (before, they were kept, every push to them dead-lettered and the e-mail fallback never
/// came); the forms apps really send still register.
#[tokio::test]
async fn addresses_that_can_never_work_are_refused_at_registration() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let web = |endpoint: &str| {
        json!({"platform": "WEB", "webPush": {"endpoint": endpoint,
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg"}})
    };
    let token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let ios = |bundle: &str| json!({"platform": "IOS", "apns": {"token": token, "bundleId": bundle, "environment": "PRODUCTION"}});
    let android = |token: &str| json!({"platform": "ANDROID", "fcmToken": token});
    let refused = [
        (web("https://example.com:99999/x"), "webPush.endpoint"),
        (web("https://exa mple.com/x"), "webPush.endpoint"),
        (web("https://[::1/x"), "webPush.endpoint"),
        (web("https://%00/x"), "webPush.endpoint"),
        (web("mailto:someone@example.com"), "webPush.endpoint"),
        (ios("com.example/../retail"), "apns.bundleId"),
        (ios("com example retail"), "apns.bundleId"),
        (ios(&"a".repeat(156)), "apns.bundleId"),
        (android("tok en"), "fcmToken"),
        (android("token/../../x"), "fcmToken"),
        (android("token\u{0}"), "fcmToken"),
        (android(&"t".repeat(4097)), "fcmToken"),
    ];
    for (input, field) in refused {
        let (_, body) = app
            .post(Some(&ada), REGISTER, json!({ "input": input }))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{input}: {message}");
    }
    assert_eq!(
        app.data(&ada, DEVICES, json!({})).await["myDevices"],
        json!([]),
        "none was kept"
    );
    for input in [
        web("HTTPS://push.example.com/sub/1"),
        web("https://fcm.googleapis.com:443/fcm/send/dGVzdA:APA91b-x_y"),
        ios("com.example.retail-beta"),
        android("dXfT3_-q:APA91bH-x_Y09"),
        android(&"t".repeat(4096)),
    ] {
        let body = app.data(&ada, REGISTER, json!({ "input": input })).await;
        assert!(body["registerDevice"]["id"].is_string(), "{input}: {body}");
    }
    app.stop().await;
}

/// iOS hands the token out as bytes and apps hex-encode them in either case: the same token in
/// upper case is the same device, not a second one that gets every push again.
#[tokio::test]
async fn an_apns_token_in_upper_case_is_the_same_device() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let mut ids = Vec::new();
    for token in [token.to_owned(), token.to_ascii_uppercase()] {
        let input = json!({"platform": "IOS", "apns": {"token": token,
            "bundleId": "com.example.retail", "environment": "PRODUCTION"}});
        let body = app.data(&ada, REGISTER, json!({ "input": input })).await;
        ids.push(body["registerDevice"]["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    let devices = app.data(&ada, DEVICES, json!({})).await["myDevices"].clone();
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
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
        json!({"quietHours": {"start": "7:5", "end": "22:00"}}),
        json!({"quietHours": {"start": "22:00", "end": "7:00"}}),
        json!({"quietHours": {"start": "22:00", "end": "07:00:00"}}),
        json!({"quietHours": {"start": "+7:00", "end": "22:00"}}),
    ] {
        let (_, body) = app
            .post(Some(&ada), update, json!({ "input": input }))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            input["quietHours"].is_null() || message.contains("HH:MM"),
            "{message}"
        );
    }
    // The same start and end would be quiet hours that are never quiet.
    let (_, body) = app
        .post(
            Some(&ada),
            update,
            json!({"input": {"quietHours": {"start": "07:00", "end": "07:00"}}}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("start and end are the same"),
        "{body}"
    );
    let kept = app.data(&ada, read, json!({})).await["notificationPreferences"].clone();
    assert_eq!(
        kept["quietHours"],
        json!({"start": "22:00", "end": "07:00"}),
        "what was refused changed nothing"
    );
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

// ---------------------------------------------------------------------------------------
// From an event to the devices, the centre and the inbox of e-mail
// ---------------------------------------------------------------------------------------

use std::time::Instant;

use sandbox::{ApnsEnvironment, ReceivedPush};

use crate::support::WAIT;

const APP: &str = "com.example.retail";

/// A signed backend webhook: `order` of `customer` is now `status`.
fn order_event(id: &str, customer: &str, order: &str, status: &str) -> Value {
    json!({"id": id, "type": "order.status_changed", "occurredAt": "2026-01-01T10:00:00Z",
           "data": {"orderId": order, "customerId": customer, "status": status}})
}

/// A signed carrier webhook: the parcel of `order` is out for delivery (urgent).
fn out_for_delivery(id: &str, customer: &str, order: &str) -> Value {
    json!({"id": id, "event": "tracking.updated", "created_at": "2026-01-01T10:00:00Z",
           "data": {"tracking_number": "PC100000123", "carrier": "PARCELCO",
                    "status": "OUT_FOR_DELIVERY", "location": "London, GB",
                    "description": "Out for delivery", "reference": order,
                    "customer_reference": customer}})
}

/// What the sandbox's providers received, once at least `n` pushes are there.
async fn pushes(app: &TestApp, n: usize) -> Vec<ReceivedPush> {
    let deadline = Instant::now() + WAIT;
    loop {
        let received = app.sandbox.push().received();
        if received.len() >= n {
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} pushes, got {received:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The title each push carried, by provider.
fn titles(received: &[ReceivedPush]) -> Vec<(String, String)> {
    received
        .iter()
        .map(|push| match push {
            ReceivedPush::Fcm(m) => (
                "fcm".into(),
                m.message["notification"]["title"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
            ),
            ReceivedPush::Apns(m) => (
                "apns".into(),
                m.payload["aps"]["alert"]["title"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
            ),
            ReceivedPush::WebPush(m) => {
                let payload: Value = serde_json::from_str(&m.payload).unwrap_or_default();
                (
                    "webpush".into(),
                    payload["title"].as_str().unwrap_or("").into(),
                )
            }
            ReceivedPush::Email(m) => ("email".into(), m.subject.clone().unwrap_or_default()),
        })
        .collect()
}

/// Ada's newest order id.
async fn adas_order(app: &TestApp, token: &str) -> String {
    app.first_order(token).await
}

/// Registers an FCM, an APNs (German) and a Web Push device for the token's customer.
async fn three_devices(app: &TestApp, token: &str) {
    let key = app.data(token, "{ webPushPublicKey }", json!({})).await["webPushPublicKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let subscription = app.sandbox.push().webpush_subscribe(Some(&key)).unwrap();
    let apns = app
        .sandbox
        .push()
        .apns_device(APP, ApnsEnvironment::Development);
    for input in [
        json!({"platform": "ANDROID", "fcmToken": "fcm-ada-1"}),
        json!({"platform": "IOS", "locale": "de", "apns": {"token": apns, "bundleId": APP, "environment": "SANDBOX"}}),
        json!({"platform": "WEB", "webPush": {"endpoint": subscription.endpoint,
               "p256dh": subscription.keys.p256dh, "auth": subscription.keys.auth}}),
    ] {
        app.data(token, REGISTER, json!({ "input": input })).await;
    }
}

#[tokio::test]
async fn a_shipped_order_reaches_every_device_in_its_language_and_the_centre() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    three_devices(&app, &ada).await;
    let order = adas_order(&app, &ada).await;
    let shipped = order_event("evt_ship_1", ADA, &order, "SHIPPED");
    assert_eq!(app.post_webhook("backend", &shipped).await.0, 202);

    let received = pushes(&app, 3).await;
    let mut got = titles(&received);
    got.sort();
    assert_eq!(
        got,
        [
            (
                "apns".to_owned(),
                "Deine Bestellung ist unterwegs".to_owned()
            ),
            ("fcm".to_owned(), "Your order is on its way".to_owned()),
            ("webpush".to_owned(), "Your order is on its way".to_owned()),
        ]
    );
    for push in &received {
        match push {
            ReceivedPush::Fcm(m) => {
                assert_eq!(
                    m.message["data"]["notificationId"],
                    "ntf:backend:evt_ship_1"
                );
                assert_eq!(
                    m.message["data"]["deepLink"],
                    format!("retail://orders/{order}")
                );
            }
            ReceivedPush::Apns(m) => {
                assert_eq!(m.headers["apns-collapse-id"], format!("order:{order}"));
                assert_eq!(m.headers["apns-priority"], "5", "not urgent");
            }
            ReceivedPush::WebPush(m) => {
                let payload: Value = serde_json::from_str(&m.payload).unwrap();
                assert_eq!(payload["body"], format!("Order {order} has shipped."));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // The notification centre has the same notification, unread.
    let centre = "{ notifications(first: 5) { edges { node { id kind title body deepLink read } } } unreadNotificationCount }";
    let data = app.data(&ada, centre, json!({})).await;
    let node = &data["notifications"]["edges"][0]["node"];
    assert_eq!(node["kind"], "ORDER_SHIPPED");
    assert_eq!(node["title"], "Your order is on its way");
    assert_eq!(node["read"], false);
    assert_eq!(data["unreadNotificationCount"], 1);
    let read = app
        .data(
            &ada,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({"ids": [node["id"]]}),
        )
        .await;
    assert_eq!(read["markNotificationsRead"], 1);
    let data = app.data(&ada, centre, json!({})).await;
    assert_eq!(data["unreadNotificationCount"], 0);
    assert_eq!(data["notifications"]["edges"][0]["node"]["read"], true);

    // The same webhook delivered again (a sender's retry): nothing twice.
    assert_eq!(app.post_webhook("backend", &shipped).await.0, 200);
    let cancelled = order_event("evt_cancel_1", ADA, &order, "CANCELLED");
    app.post_webhook("backend", &cancelled).await;
    let received = pushes(&app, 6).await;
    assert_eq!(
        received.len(),
        6,
        "three shipped, three cancelled: {:#?}",
        titles(&received)
    );
    app.stop().await;
}

#[tokio::test]
async fn preferences_and_quiet_hours_decide_where_and_when() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    app.data(
        &ada,
        REGISTER,
        json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-quiet"}}),
    )
    .await;
    let order = adas_order(&app, &ada).await;
    let update = "mutation($input: NotificationPreferencesInput!) { updateNotificationPreferences(input: $input) { locale } }";
    // Quiet all day long in Berlin: the shipment waits, the delivery van does not.
    app.data(
        &ada,
        update,
        json!({"input": {"timeZone": "Europe/Berlin", "quietHours": {"start": "00:00", "end": "23:59"}}}),
    )
    .await;
    app.post_webhook("backend", &order_event("evt_q_1", ADA, &order, "SHIPPED"))
        .await;
    app.post_webhook("carrier", &out_for_delivery("whk_q_2", ADA, &order))
        .await;
    let received = pushes(&app, 1).await;
    assert_eq!(
        titles(&received),
        [("fcm".to_owned(), "Arriving today".to_owned())],
        "only the urgent one, the shipment waits for the end of the quiet hours"
    );
    // Both are in the centre at once.
    let centre = app
        .data(
            &ada,
            "{ notifications(first: 5) { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        centre["notifications"]["edges"].as_array().unwrap().len(),
        2
    );

    // No push for orders, and no centre either: only what is still on arrives.
    app.data(
        &ada,
        update,
        json!({"input": {"clearQuietHours": true, "categories": [
            {"category": "ORDERS", "push": false, "email": false, "inApp": false}]}}),
    )
    .await;
    app.sandbox.push().reset();
    app.post_webhook("backend", &order_event("evt_q_3", ADA, &order, "DELIVERED"))
        .await;
    let closed = json!({"schema": "CaseChangeEvent-v60",
        "event": {"replayId": 9, "EventUuid": "7a1f7b1e-2b1a-4c57-9e7a-0d3f5b2a9c11"},
        "payload": {"ChangeEventHeader": {"entityName": "Case", "changeType": "UPDATE",
                        "recordIds": ["500000000000001AAA"], "commitTimestamp": 1767261600000u64,
                        "changedFields": ["Status"]},
                    "Status": "Closed", "CaseNumber": "00001001", "Customer_Id__c": ADA}});
    app.post_webhook("crm", &closed).await;
    let received = pushes(&app, 1).await;
    assert_eq!(
        titles(&received),
        [("fcm".to_owned(), "Your request is resolved".to_owned())],
        "the delivered order sent nothing; the case (SUPPORT) did"
    );
    let centre = app
        .data(
            &ada,
            "{ notifications(first: 5) { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    let kinds: Vec<&str> = centre["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["CASE_RESOLVED", "ORDER_OUT_FOR_DELIVERY", "ORDER_SHIPPED"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_customer_without_a_device_gets_an_email() {
    let app = TestApp::spawn().await;
    let agent = app.token(AGENT).await;
    let email = app
        .data(&agent, "query($id: ID!) { customer(id: $id) { email orders(first: 1) { edges { node { id } } } } }", json!({"id": BOB}))
        .await["customer"]
        .clone();
    let order = email["orders"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_webhook(
        "backend",
        &order_event("evt_mail_1", BOB, &order, "SHIPPED"),
    )
    .await;
    let received = pushes(&app, 1).await;
    let ReceivedPush::Email(mail) = &received[0] else {
        panic!("expected an e-mail, got {received:#?}");
    };
    assert_eq!(mail.to, [email["email"].as_str().unwrap()]);
    assert!(
        mail.data.contains(&format!("Order {order} has shipped.")),
        "{}",
        mail.data
    );
    app.stop().await;
}

/// The scenario Switchyard is built around: the app hits an error, reports it, customer
/// service gets a case with the app's context, the customer hears "we're on it" everywhere;
/// the same error again is a comment on that case, not a second case; an agent's answer is
/// news again.
#[tokio::test]
async fn a_reported_error_opens_one_case_and_the_customer_hears_of_it() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    app.data(
        &ada,
        REGISTER,
        json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-support"}}),
    )
    .await;
    let mut feed = crate::support::ws::signed_in(&app, ADA).await;
    feed.subscribe(
        "n",
        "subscription { notifications { kind supportCase { caseNumber } message { kind title } } }",
    )
    .await;
    feed.expect_quiet().await;

    let report = "mutation($input: ReportClientErrorInput!) { reportClientError(input: $input) { repeated case { id caseNumber subject description status } } }";
    let input = json!({"input": {"code": "CHECKOUT_TIMEOUT", "message": "The payment took too long",
        "screen": "Checkout", "appVersion": "4.2.0", "context": {"network": "3G", "cartItems": 3}}});
    let first = app.data(&ada, report, input.clone()).await["reportClientError"].clone();
    assert_eq!(first["repeated"], false);
    let case = &first["case"];
    assert_eq!(case["subject"], "App error CHECKOUT_TIMEOUT on Checkout");
    let description = case["description"].as_str().unwrap();
    for part in ["The payment took too long", "4.2.0", "\"network\": \"3G\""] {
        assert!(description.contains(part), "{part} in {description}");
    }
    let number = case["caseNumber"].as_str().unwrap().to_owned();

    // "We're on it", with the case number: on the device, in the centre, on the feed.
    let received = pushes(&app, 1).await;
    let ReceivedPush::Fcm(push) = &received[0] else {
        panic!("{received:#?}");
    };
    assert_eq!(push.message["notification"]["title"], "We're on it");
    assert!(
        push.message["notification"]["body"]
            .as_str()
            .unwrap()
            .contains(&number)
    );
    let centre = app
        .data(
            &ada,
            "{ notifications(first: 5) { edges { node { kind body } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        centre["notifications"]["edges"][0]["node"]["kind"],
        "CLIENT_ERROR_REPORTED"
    );
    let next = feed.recv().await;
    let notification = &next["payload"]["data"]["notifications"];
    assert_eq!(notification["kind"], "CASE_UPDATED", "{next:#}");
    assert_eq!(notification["supportCase"]["caseNumber"], number.as_str());
    assert_eq!(
        notification["message"]["kind"], "CLIENT_ERROR_REPORTED",
        "{next:#}"
    );

    // The same error again: a comment on the same case, and no second "we're on it".
    let again = app.data(&ada, report, input).await["reportClientError"].clone();
    assert_eq!(again["repeated"], true);
    assert_eq!(again["case"]["id"], case["id"]);
    let comments = app
        .data(
            &ada,
            "query($id: ID!) { supportCase(id: $id) { comments { body } } }",
            json!({"id": case["id"]}),
        )
        .await;
    let bodies = comments["supportCase"]["comments"].to_string();
    assert!(bodies.contains("reported this error again"), "{bodies}");
    let next = feed.recv().await;
    assert_eq!(
        next["payload"]["data"]["notifications"]["kind"], "CASE_COMMENT_ADDED",
        "{next:#}"
    );
    assert_eq!(
        next["payload"]["data"]["notifications"]["message"],
        Value::Null,
        "{next:#}"
    );

    // An agent answers: news again.
    let agent = app.token(AGENT).await;
    app.data(
        &agent,
        "mutation($id: ID!) { addCaseComment(caseId: $id, body: \"We found the cause.\") { id } }",
        json!({"id": case["id"]}),
    )
    .await;
    let received = pushes(&app, 2).await;
    let ReceivedPush::Fcm(answer) = &received[1] else {
        panic!("{received:#?}");
    };
    assert_eq!(
        answer.message["notification"]["title"],
        "We replied to your request"
    );
    assert_eq!(
        app.sandbox.push().received().len(),
        2,
        "the repeat sent nothing"
    );
    app.stop().await;
}

const REPORT: &str = "mutation($input: ReportClientErrorInput!) { reportClientError(input: $input) { repeated case { id subject } } }";

/// The subjects of the customer's support cases that `reportClientError` opened.
async fn reported_cases(app: &TestApp, token: &str) -> Vec<String> {
    let data = app
        .data(token, "{ me { supportCases { subject } } }", json!({}))
        .await;
    data["me"]["supportCases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["subject"].as_str())
        .filter(|s| s.starts_with("App error"))
        .map(str::to_owned)
        .collect()
}

/// The same error reported eight times at once (a retrying app, several tabs) is one case:
/// one report opens it, the others wait for it and are repeats on it.
async fn simultaneous_reports_open_one_case(app: TestApp) {
    let ada = app.token(ADA).await;
    // A CRM slow enough that all eight are in flight before the case exists.
    let slow = sandbox::UpstreamKnobs {
        latency_ms: 150,
        ..Default::default()
    };
    app.sandbox
        .set_faults(sandbox::Upstream::Crm, slow)
        .unwrap();
    let input = json!({"input": {"code": "RACE", "message": "Timed out", "screen": "Checkout"}});
    let answers =
        futures::future::join_all((0..8).map(|_| app.post(Some(&ada), REPORT, input.clone())))
            .await;
    let mut opened = 0;
    let mut case_ids = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200);
        let answer = &body["data"]["reportClientError"];
        assert!(answer.is_object(), "{body}");
        if answer["repeated"] == false {
            opened += 1;
        }
        case_ids.push(answer["case"]["id"].clone());
    }
    assert_eq!(opened, 1, "{answers:#?}");
    case_ids.dedup();
    assert_eq!(case_ids.len(), 1, "every answer names the one case");
    assert_eq!(
        reported_cases(&app, &ada).await,
        ["App error RACE on Checkout"]
    );
    app.stop().await;
}

#[tokio::test]
async fn simultaneous_reports_open_one_case_in_memory() {
    simultaneous_reports_open_one_case(TestApp::spawn().await).await;
}

#[tokio::test]
async fn simultaneous_reports_open_one_case_in_redis() {
    let redis = RedisServer::start();
    simultaneous_reports_open_one_case(with_redis(&redis).await).await;
}

/// A customer's reports open at most ten cases an hour: the eleventh distinct error is
/// refused, saying so, and opens nothing; a repeat of an open case is still a comment. A
/// report whose case could not be opened (the CRM down) can be sent again at once.
#[tokio::test]
async fn reports_open_at_most_ten_cases_an_hour() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let report = |code: String| json!({"input": {"code": code, "message": "Timed out"}});

    for n in 1..10 {
        let opened = app.data(&ada, REPORT, report(format!("E{n}"))).await;
        assert_eq!(opened["reportClientError"]["repeated"], false, "{opened}");
    }
    // The CRM down: no case, and neither the error's claim nor a slot is used up.
    let down = sandbox::UpstreamKnobs {
        error_rate: 1.0,
        ..Default::default()
    };
    app.sandbox
        .set_faults(sandbox::Upstream::Crm, down)
        .unwrap();
    let (_, body) = app.post(Some(&ada), REPORT, report("E0".into())).await;
    assert_eq!(code(&body), "UPSTREAM_UNAVAILABLE", "{body}");
    app.sandbox
        .set_faults(sandbox::Upstream::Crm, Default::default())
        .unwrap();
    let started = Instant::now();
    let again = app.data(&ada, REPORT, report("E0".into())).await;
    assert_eq!(again["reportClientError"]["repeated"], false, "{again}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the failed report's claim was let go, not waited out"
    );
    let (status, body) = app.post(Some(&ada), REPORT, report("E10".into())).await;
    assert_eq!(status, 200);
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("at most 10"), "{message}");
    assert_eq!(reported_cases(&app, &ada).await.len(), 10);

    let repeat = app.data(&ada, REPORT, report("E3".into())).await;
    assert_eq!(repeat["reportClientError"]["repeated"], true, "{repeat}");
    // Another customer has their own ten.
    let bob = app.token(BOB).await;
    let bobs = app.data(&bob, REPORT, report("E10".into())).await;
    assert_eq!(bobs["reportClientError"]["repeated"], false, "{bobs}");
    app.stop().await;
}

/// What is left of a report once its control characters are gone is what is checked: a code
/// or message of nothing but control characters opens no case ("App error " with an empty
/// text), and an app version carrying them is refused, in a report and in a device.
#[tokio::test]
async fn reports_and_devices_made_of_control_characters_are_refused() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let cases = "{ me { supportCases { subject } } }";
    let before = app.data(&ada, cases, json!({})).await;
    let report = "mutation($input: ReportClientErrorInput!) { reportClientError(input: $input) { case { subject description } } }";
    for (input, field) in [
        (
            json!({"code": "\u{0}\u{1}", "message": "Timed out"}),
            "code",
        ),
        (
            json!({"code": "C1", "message": "\u{0}\u{7}\u{1b}\r"}),
            "message",
        ),
        (
            json!({"code": "C1", "message": "Timed out", "screen": "\u{0}"}),
            "screen",
        ),
        (
            json!({"code": "C1", "message": "Timed out", "appVersion": "\u{0}\u{7}x"}),
            "appVersion",
        ),
    ] {
        let (_, body) = app
            .post(Some(&ada), report, json!({ "input": input }))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{input}: {message}");
    }
    assert_eq!(
        app.data(&ada, cases, json!({})).await,
        before,
        "no case opened"
    );
    let device = json!({"platform": "ANDROID", "fcmToken": "fcm-ctl", "appVersion": "\u{0}\u{7}x"});
    let (_, body) = app
        .post(Some(&ada), REGISTER, json!({ "input": device }))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("appVersion")
    );
    assert_eq!(
        app.data(&ada, DEVICES, json!({})).await["myDevices"],
        json!([])
    );
    app.stop().await;
}

/// The playground's path: a Web Push subscription and an iPhone's APNs token from the
/// sandbox, registered as devices, and the pushes they get (Web Push decrypted) in
/// `GET /dev/pushes`.
#[tokio::test]
async fn the_sandbox_hands_out_devices_and_shows_what_arrived() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    for (route, service) in [
        ("/dev/webpush-subscription", "WEB_PUSH"),
        ("/dev/apns-device", "APNS"),
    ] {
        let input: Value = app
            .http
            .post(app.url(route))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let device = app.data(&ada, REGISTER, json!({ "input": input })).await;
        assert_eq!(device["registerDevice"]["pushService"], service);
    }
    let order = adas_order(&app, &ada).await;
    app.post_webhook("backend", &order_event("evt_dev_1", ADA, &order, "SHIPPED"))
        .await;
    pushes(&app, 2).await;
    let shown: Value = app
        .http
        .get(app.url("/dev/pushes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by = |provider: &str| {
        shown
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == provider)
            .unwrap_or_else(|| panic!("no {provider} push: {shown:#}"))
            .clone()
    };
    let payload: Value = serde_json::from_str(by("webpush")["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["title"], "Your order is on its way");
    assert_eq!(
        by("apns")["payload"]["aps"]["alert"]["title"],
        "Your order is on its way",
        "the iPhone's push was accepted by APNs, not refused as a bad token"
    );
    let devices = app.data(&ada, DEVICES, json!({})).await;
    assert_eq!(
        devices["myDevices"].as_array().unwrap().len(),
        2,
        "both kept"
    );
    app.stop().await;
}

/// A device its provider says is gone (FCM `UNREGISTERED`) is forgotten after the first push
/// to it; the customer's other devices keep theirs.
#[tokio::test]
async fn a_device_its_provider_says_is_gone_is_forgotten() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    for token in ["unregistered-old-phone", "fcm-new-phone"] {
        app.data(
            &ada,
            REGISTER,
            json!({"input": {"platform": "ANDROID", "fcmToken": token}}),
        )
        .await;
    }
    let order = adas_order(&app, &ada).await;
    app.post_webhook(
        "backend",
        &order_event("evt_gone_1", ADA, &order, "SHIPPED"),
    )
    .await;
    pushes(&app, 1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let devices = app.data(&ada, DEVICES, json!({})).await["myDevices"].clone();
        if devices.as_array().unwrap().len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gone device is still there: {devices}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let received = app.sandbox.push().received();
    let ReceivedPush::Fcm(push) = &received[0] else {
        panic!("{received:#?}");
    };
    assert_eq!(push.message["token"], "fcm-new-phone");
    app.stop().await;
}

/// Changes a product in the sandbox's backend as the catalogue team would (its `PATCH`),
/// which posts a `product.updated` webhook to this Switchyard.
async fn change_product(app: &TestApp, product: &str, change: Value) -> Value {
    let response = app
        .http
        .patch(format!("{}/products/{product}", app.sandbox.urls().backend))
        .bearer_auth(&app.sandbox.config().backend_token)
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The kinds in the customer's notification centre, newest first, once it holds `n`.
async fn centre_kinds(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    centre_until(app, token, "kind", |kinds| kinds.len() >= n).await
}

/// One field (`id`, `kind`) of each notification in the customer's centre, newest first,
/// once `done` says so.
async fn centre_until(
    app: &TestApp,
    token: &str,
    field: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let query = format!("{{ notifications(first: 20) {{ edges {{ node {{ {field} }} }} }} }}");
    loop {
        let data = app.data(token, &query, json!({})).await;
        let values: Vec<String> = data["notifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"][field].as_str().unwrap().to_owned())
            .collect();
        if done(&values) {
            return values;
        }
        assert!(Instant::now() < deadline, "the centre holds {values:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_product_viewed_three_times_that_gets_cheaper_is_one_marketing_notification_a_day() {
    marketing_once_a_day(TestApp::spawn().await).await;
}

#[tokio::test]
async fn views_and_the_daily_limit_of_marketing_live_in_redis_when_configured() {
    let redis = RedisServer::start();
    marketing_once_a_day(with_redis(&redis).await).await;
}

/// Three customers look at a product; it gets cheaper twice in a day: only the one who
/// looked three times and opted in hears of it, once.
async fn marketing_once_a_day(app: TestApp) {
    let product = "prod-0007";
    let before = change_product(&app, product, json!({"inStock": true})).await;
    let price = before["price"]["minorUnits"].as_i64().unwrap();
    let name = before["name"].as_str().unwrap().to_owned();
    let marketing = json!({"input": {"categories": [
        {"category": "MARKETING", "push": true, "email": false, "inApp": true}]}});
    let opt_in = "mutation($input: NotificationPreferencesInput!) { updateNotificationPreferences(input: $input) { locale } }";
    let view = "mutation($id: ID!) { trackProductView(productId: $id) }";
    // Ada: opted in, three views, a phone. Bob: three views, no opt-in. Carla
    // (cust-0003): opted in, two views. Only Ada hears of it.
    let customers = [(ADA, true, 3), (BOB, false, 3), ("cust-0003", true, 2)];
    for (customer, opted_in, views) in customers {
        let token = app.token(customer).await;
        app.data(
            &token,
            REGISTER,
            json!({"input": {"platform": "ANDROID", "fcmToken": format!("fcm-{customer}")}}),
        )
        .await;
        if opted_in {
            app.data(&token, opt_in, marketing.clone()).await;
        }
        for n in 1..=views {
            let counted = app.data(&token, view, json!({"id": product})).await;
            assert_eq!(counted["trackProductView"], n);
        }
    }
    let ada = app.token(ADA).await;
    let shown = "query($id: ID!) { product(id: $id) { price { minorUnits } } }";
    let cached = app.data(&ada, shown, json!({"id": product})).await;
    assert_eq!(cached["product"]["price"]["minorUnits"], price);

    change_product(&app, product, json!({"priceMinor": price - 500})).await;
    let received = pushes(&app, 1).await;
    assert_eq!(
        titles(&received),
        [("fcm".to_owned(), format!("{name} is waiting for you"))]
    );
    let ReceivedPush::Fcm(push) = &received[0] else {
        unreachable!()
    };
    assert_eq!(push.message["token"], "fcm-cust-0001", "to Ada's phone");
    assert_eq!(
        push.message["notification"]["body"],
        format!("{name} is cheaper.")
    );
    assert_eq!(
        push.message["data"]["deepLink"],
        format!("retail://products/{product}")
    );
    assert_eq!(centre_kinds(&app, &ada, 1).await, ["PRODUCT_DEAL"]);
    // The event made the cached product stale: the new price shows at once.
    let fresh = app.data(&ada, shown, json!({"id": product})).await;
    assert_eq!(fresh["product"]["price"]["minorUnits"], price - 500);

    // Cheaper again the same day: not a second one. The shipment after it is handled
    // after it, so once the shipment is in the centre, a second deal would be too (the
    // shipment happened on New Year's Day: newest first, it comes last).
    change_product(&app, product, json!({"priceMinor": price - 900})).await;
    let order = adas_order(&app, &ada).await;
    app.post_webhook("backend", &order_event("evt_mk_1", ADA, &order, "SHIPPED"))
        .await;
    assert_eq!(
        centre_kinds(&app, &ada, 2).await,
        ["PRODUCT_DEAL", "ORDER_SHIPPED"]
    );
    // Once the shipment's push is there, the deal's pushes: one.
    let deadline = Instant::now() + WAIT;
    let received = loop {
        let received = app.sandbox.push().received();
        let shipped = titles(&received)
            .iter()
            .any(|(_, title)| title == "Your order is on its way");
        if shipped {
            break received;
        }
        assert!(Instant::now() < deadline, "{:#?}", titles(&received));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let deals = titles(&received)
        .into_iter()
        .filter(|(_, title)| title.ends_with("is waiting for you"))
        .count();
    assert_eq!(deals, 1, "{:#?}", titles(&received));
    app.stop().await;
}

/// Upstream event ids may hold `:`, so the id of a deal for Ada (event `coll1`) once read the
/// same as that of her order's event `coll1:cust-0001`, and the second was dropped as a
/// repeat of the first: each kind of notification id has its own form now.
#[tokio::test]
async fn a_deal_and_an_order_event_never_share_a_notification_id() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let opt_in = json!({"input": {"categories": [
        {"category": "MARKETING", "push": false, "email": false, "inApp": true}]}});
    app.data(
        &ada,
        "mutation($input: NotificationPreferencesInput!) { updateNotificationPreferences(input: $input) { locale } }",
        opt_in,
    )
    .await;
    for _ in 0..3 {
        app.data(
            &ada,
            "mutation { trackProductView(productId: \"prod-0007\") }",
            json!({}),
        )
        .await;
    }
    let cheaper = json!({"id": "coll1", "type": "product.updated", "occurredAt": "2026-01-01T10:00:00Z",
        "data": {"productId": "prod-0007", "name": "Lamp", "inStock": true,
                 "price": {"minorUnits": 900, "currency": "EUR"},
                 "previous": {"inStock": true, "price": {"minorUnits": 1000, "currency": "EUR"}}}});
    let (status, body) = app.post_webhook("backend", &cheaper).await;
    assert!(status < 300, "{status} {body}");
    assert_eq!(centre_kinds(&app, &ada, 1).await, ["PRODUCT_DEAL"]);
    let order = adas_order(&app, &ada).await;
    let (status, body) = app
        .post_webhook(
            "backend",
            &order_event("coll1:cust-0001", ADA, &order, "SHIPPED"),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let mut kinds = centre_kinds(&app, &ada, 2).await;
    kinds.sort();
    assert_eq!(kinds, ["ORDER_SHIPPED", "PRODUCT_DEAL"]);
    app.stop().await;
}

#[tokio::test]
async fn an_event_naming_someone_else_s_order_notifies_nobody() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let bob = app.token(BOB).await;
    for (token, fcm) in [(&ada, "fcm-ada-own"), (&bob, "fcm-bob-own")] {
        app.data(
            token,
            REGISTER,
            json!({"input": {"platform": "ANDROID", "fcmToken": fcm}}),
        )
        .await;
    }
    let adas = adas_order(&app, &ada).await;
    let bobs = app
        .data(
            &bob,
            "{ me { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await["me"]["orders"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Ada's order under Bob's name, an order that does not exist, then Bob's own.
    for event in [
        order_event("evt_forged_1", BOB, &adas, "SHIPPED"),
        out_for_delivery("whk_forged_2", BOB, &adas),
        order_event("evt_forged_3", ADA, "ord-999999", "SHIPPED"),
        order_event("evt_own_4", BOB, &bobs, "SHIPPED"),
    ] {
        let source = if event.get("event").is_some() {
            "carrier"
        } else {
            "backend"
        };
        assert_eq!(app.post_webhook(source, &event).await.0, 202);
    }
    // Events are handled in order: once Bob's own is in his centre, the others were
    // handled before it, and would be there too.
    let ids = centre_until(&app, &bob, "id", |ids| {
        ids.iter().any(|id| id == "ntf:backend:evt_own_4")
    })
    .await;
    assert_eq!(ids, ["ntf:backend:evt_own_4"], "only his own");
    let received = pushes(&app, 1).await;
    assert_eq!(received.len(), 1, "{:#?}", titles(&received));
    let ReceivedPush::Fcm(push) = &received[0] else {
        unreachable!()
    };
    assert_eq!(push.message["token"], "fcm-bob-own");
    let adas_centre = app
        .data(&ada, "{ unreadNotificationCount }", json!({}))
        .await;
    assert_eq!(adas_centre["unreadNotificationCount"], 0);
    app.stop().await;
}

/// Paging the centre: a cursor that is not the customer's is `BAD_CURSOR`; a cursor read
/// since still pages on through the unread ones older than it.
async fn centre_cursors(app: TestApp) {
    let ada = app.token(ADA).await;
    let bob = app.token(BOB).await;
    let order = adas_order(&app, &ada).await;
    for (i, status) in ["SHIPPED", "DELIVERED", "CANCELLED"].iter().enumerate() {
        let mut event = order_event(&format!("evt_page_{i}"), ADA, &order, status);
        event["occurredAt"] = json!(format!("2026-01-01T10:0{i}:00Z"));
        app.post_webhook("backend", &event).await;
    }
    centre_kinds(&app, &ada, 3).await;
    let page = "query($after: String, $unread: Boolean!) { notifications(first: 1, after: $after, unreadOnly: $unread) { edges { node { id } } pageInfo { hasNextPage } } }";
    let ids = |data: &Value| -> Vec<String> {
        data["notifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest = ids(&app
        .data(&ada, page, json!({"after": null, "unread": true}))
        .await);
    assert_eq!(newest, ["ntf:backend:evt_page_2"]);
    app.data(
        &ada,
        "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
        json!({"ids": newest}),
    )
    .await;
    let next = app
        .data(&ada, page, json!({"after": newest[0], "unread": true}))
        .await;
    assert_eq!(
        ids(&next),
        ["ntf:backend:evt_page_1"],
        "read since, still a cursor"
    );
    assert_eq!(next["notifications"]["pageInfo"]["hasNextPage"], true);
    for (token, after) in [(&ada, "ntf:nope"), (&bob, newest[0].as_str())] {
        let (_, body) = app
            .post(Some(token), page, json!({"after": after, "unread": false}))
            .await;
        assert_eq!(code(&body), "BAD_CURSOR", "{after}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn centre_cursors_are_checked_in_memory() {
    centre_cursors(TestApp::spawn().await).await;
}

#[tokio::test]
async fn centre_cursors_are_checked_in_redis() {
    let redis = RedisServer::start();
    centre_cursors(with_redis(&redis).await).await;
}

/// Views are counted up to a bound: a client looping on `trackProductView` cannot grow
/// the store.
async fn views_are_bounded(app: TestApp) {
    let ada = app.token(ADA).await;
    let fields: String = (0..105)
        .map(|i| format!("v{i}: trackProductView(productId: \"prod-0007\") "))
        .collect();
    let counted = app
        .data(&ada, &format!("mutation {{ {fields} }}"), json!({}))
        .await;
    assert_eq!(counted["v2"], 3);
    assert_eq!(counted["v99"], 100);
    assert_eq!(counted["v104"], 100, "the newest 100 are kept");
    app.stop().await;
}

#[tokio::test]
async fn views_are_bounded_in_memory() {
    views_are_bounded(TestApp::spawn().await).await;
}

#[tokio::test]
async fn views_are_bounded_in_redis() {
    let redis = RedisServer::start();
    views_are_bounded(with_redis(&redis).await).await;
}

#[tokio::test]
async fn redis_restarted_empty_the_rules_run_again_on_what_comes_after() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(SandboxConfig::default(), move |c| {
        c.events.redis_url = Some(Secret::new(url.clone()));
        c.notifications.redis_url = Some(Secret::new(url.clone()));
        c.outbox.redis_url = Some(Secret::new(url));
    })
    .await;
    let ada = app.token(ADA).await;
    let fcm = json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-ada-restart"}});
    app.data(&ada, REGISTER, fcm.clone()).await;
    let order = adas_order(&app, &ada).await;
    app.post_webhook(
        "backend",
        &order_event("evt_restart_1", ADA, &order, "SHIPPED"),
    )
    .await;
    pushes(&app, 1).await;

    // Redis comes back with nothing: no stream, no consumer group, no devices.
    redis.restart();
    // The store's connection comes back on its own; until then registering fails clearly.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app.post(Some(&ada), REGISTER, fcm.clone()).await;
        if status == 200 && body.get("errors").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A sender retries a 503 (the bus reconnecting), as the upstreams' senders do.
    loop {
        let event = order_event("evt_restart_2", ADA, &order, "DELIVERED");
        let (status, body) = app.post_webhook("backend", &event).await;
        if status == 202 {
            break;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "{status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let received = pushes(&app, 2).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    app.stop().await;
}

#[tokio::test]
async fn with_the_memory_bus_a_failing_rule_is_retried_and_nothing_is_lost() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    app.data(
        &ada,
        REGISTER,
        json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-ada-retry"}}),
    )
    .await;
    let order = adas_order(&app, &ada).await;
    // The rules check the order with the backend before notifying: make that fail.
    let failing = sandbox::UpstreamKnobs {
        error_rate: 1.0,
        ..Default::default()
    };
    app.sandbox
        .set_faults(sandbox::Upstream::Backend, failing)
        .unwrap();
    let (status, _) = app
        .post_webhook(
            "backend",
            &order_event("evt_retry_1", ADA, &order, "SHIPPED"),
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.sandbox.push().received().is_empty());
    // The backend recovers (its breaker lets a probe through after 5 s): the push goes.
    app.sandbox
        .set_faults(sandbox::Upstream::Backend, Default::default())
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while app.sandbox.push().received().is_empty() {
        assert!(Instant::now() < deadline, "the event was lost");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_retried_push_is_not_sent_to_a_device_that_moved_to_someone_else() {
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        c.outbox.backoff_base_ms = 300;
        c.outbox.backoff_max_ms = 300;
    })
    .await;
    let (ada, bob) = (app.token(ADA).await, app.token(BOB).await);
    let shared = json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-shared-tablet"}});
    app.data(&ada, REGISTER, shared.clone()).await;
    let order = adas_order(&app, &ada).await;
    // A first push goes through (and Switchyard holds an FCM access token from then on).
    app.post_webhook(
        "backend",
        &order_event("evt_moved_0", ADA, &order, "SHIPPED"),
    )
    .await;
    pushes(&app, 1).await;
    // FCM fails: Ada's next push waits for a retry.
    let failing = sandbox::UpstreamKnobs {
        error_rate: 1.0,
        ..Default::default()
    };
    app.sandbox
        .set_faults(sandbox::Upstream::Fcm, failing)
        .unwrap();
    app.post_webhook(
        "backend",
        &order_event("evt_moved_1", ADA, &order, "CANCELLED"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Meanwhile the tablet is Bob's; FCM recovers.
    app.data(&bob, REGISTER, shared).await;
    app.sandbox
        .set_faults(sandbox::Upstream::Fcm, Default::default())
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    // Only the first push: the retry found the tablet was no longer Ada's.
    let received = app.sandbox.push().received();
    assert_eq!(
        received.len(),
        1,
        "Ada's push reached Bob's tablet: {received:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn one_customer_s_endpoints_that_never_answer_do_not_hold_back_everyone_else() {
    // A Web Push "service" that takes connections and never answers (a tarpit).
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_addr = tarpit.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = tarpit.accept().await {
            connections.push(connection);
        }
    });
    let app = TestApp::spawn().await;
    let (ada, bob) = (app.token(ADA).await, app.token(BOB).await);
    let key = app.data(&bob, "{ webPushPublicKey }", json!({})).await["webPushPublicKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = app
        .sandbox
        .push()
        .webpush_subscribe(Some(&key))
        .unwrap()
        .keys;
    for i in 0..6 {
        let endpoint = format!("http://{tarpit_addr}/push/bob-{i}");
        app.data(
            &bob,
            REGISTER,
            json!({"input": {"platform": "WEB", "webPush": {"endpoint": endpoint,
                   "p256dh": keys.p256dh, "auth": keys.auth}}}),
        )
        .await;
    }
    app.data(
        &ada,
        REGISTER,
        json!({"input": {"platform": "ANDROID", "fcmToken": "fcm-ada-fair"}}),
    )
    .await;
    // Three notifications for Bob: 18 sends that each hang until the Web Push timeout (10 s),
    // more than the outbox's 16 senders.
    let bobs = adas_order(&app, &bob).await;
    for (i, status) in ["SHIPPED", "DELIVERED", "CANCELLED"].iter().enumerate() {
        let event = order_event(&format!("evt_tarpit_{i}"), BOB, &bobs, status);
        app.post_webhook("backend", &event).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Ada's push is not stuck behind them.
    let started = Instant::now();
    let order = adas_order(&app, &ada).await;
    app.post_webhook(
        "backend",
        &order_event("evt_fair_ada", ADA, &order, "SHIPPED"),
    )
    .await;
    while app.sandbox.push().received().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "Ada's push waited behind Bob's endpoints"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    held.abort();
    app.stop().await;
}

/// Notifications made at the same moment page on from a cursor read since, none twice.
async fn centre_cursors_with_ties(app: TestApp) {
    let ada = app.token(ADA).await;
    let order = adas_order(&app, &ada).await;
    for i in 1..=6 {
        let event = order_event(&format!("evt_same{i}"), ADA, &order, "SHIPPED");
        app.post_webhook("backend", &event).await;
    }
    centre_kinds(&app, &ada, 6).await;
    let page = "query($after: String) { notifications(first: 2, after: $after, unreadOnly: true) { edges { node { id } } } }";
    let ids = |data: Value| -> Vec<String> {
        data["notifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = ids(app.data(&ada, page, json!({"after": null})).await);
    assert_eq!(first.len(), 2);
    app.data(
        &ada,
        "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
        json!({"ids": [first[1]]}),
    )
    .await;
    let next = ids(app.data(&ada, page, json!({"after": first[1]})).await);
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(
        next.iter().all(|id| !first.contains(id)),
        "a notification came twice: {first:?} then {next:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn centre_cursors_with_ties_in_memory() {
    centre_cursors_with_ties(TestApp::spawn().await).await;
}

#[tokio::test]
async fn centre_cursors_with_ties_in_redis() {
    let redis = RedisServer::start();
    centre_cursors_with_ties(with_redis(&redis).await).await;
}
