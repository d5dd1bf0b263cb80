//! The sandbox upstreams over real HTTP: each one's main routes and error shapes, as
//! `docs/upstreams.md` promises them, plus request counting and fault injection.

use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use sandbox::{Sandbox, SandboxChange, SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::{Value, json};

const BACKEND_TOKEN: &str = "sandbox-backend-token";
const CARRIER_KEY: &str = "sandbox-carrier-key";

async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("the sandbox starts")
}

async fn start_default() -> Sandbox {
    start(quiet()).await
}

/// The default sandbox without the simulator: only the test changes the world.
fn quiet() -> SandboxConfig {
    SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

async fn json_of(response: Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// GET on the backend with its token; the status and the JSON body.
async fn backend_get(sandbox: &Sandbox, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}{path}", sandbox.urls().backend))
        .bearer_auth(BACKEND_TOKEN)
        .send()
        .await
        .expect("the backend answers");
    (response.status(), json_of(response).await)
}

async fn backend_post(sandbox: &Sandbox, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{}{path}", sandbox.urls().backend))
        .bearer_auth(BACKEND_TOKEN)
        .json(body)
        .send()
        .await
        .expect("the backend answers");
    (response.status(), json_of(response).await)
}

fn ids(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item["id"].as_str().expect("an id"))
        .collect()
}

// ----- backend ---------------------------------------------------------------------------------

#[tokio::test]
async fn backend_serves_the_documented_records() {
    let sandbox = start_default().await;

    let (status, ada) = backend_get(&sandbox, "/customers/cust-0001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ada,
        json!({"id":"cust-0001","firstName":"Ada","lastName":"Lovelace",
               "email":"ada.lovelace@example.com","phone":"+44 20 7946 0001",
               "loyaltyTier":"GOLD","createdAt":"2021-03-04T10:00:00Z",
               "address":{"line1":"12 St James's Square","city":"London",
                          "postalCode":"SW1Y 4JH","country":"GB"}})
    );

    let (status, order) = backend_get(&sandbox, "/orders/ord-000001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        order,
        json!({"id":"ord-000001","customerId":"cust-0001","status":"SHIPPED",
               "placedAt":"2024-05-01T10:00:00Z",
               "lines":[{"lineNo":1,"productId":"prod-0001","quantity":2,
                         "unitPrice":{"minorUnits":8999,"currency":"EUR"}}],
               "total":{"minorUnits":17998,"currency":"EUR"},
               "shipment":{"carrier":"PARCELCO","trackingNumber":"PC100000001"}})
    );

    let (status, product) = backend_get(&sandbox, "/products/prod-0001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(product["name"], "Trail Runner 2");
    assert_eq!(product["category"], "Shoes");
    assert_eq!(
        product["price"],
        json!({"minorUnits": 8999, "currency": "EUR"})
    );
    assert_eq!(product["inStock"], true);
    assert_eq!(product["imageUrl"], "https://img.example.com/prod-0001.jpg");

    let (status, missing) = backend_get(&sandbox, "/orders/ord-999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn backend_bulk_reads_keep_request_order_and_drop_unknown_ids() {
    let sandbox = start_default().await;

    let (status, body) = backend_get(
        &sandbox,
        "/customers?ids=cust-0003,cust-9999,cust-0001,cust-0003",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body["items"]), ["cust-0003", "cust-0001"]);

    let (_, body) = backend_get(&sandbox, "/products?ids=prod-0002,nope,prod-0001").await;
    assert_eq!(ids(&body["items"]), ["prod-0002", "prod-0001"]);

    let (_, body) = backend_get(&sandbox, "/orders?ids=ord-019801,ord-000001").await;
    assert_eq!(ids(&body["items"]), ["ord-019801", "ord-000001"]);
    assert_eq!(body["items"][0]["lines"].as_array().unwrap().len(), 3);
    assert_eq!(body["items"][0]["shipment"], Value::Null);

    let too_many: Vec<String> = (1..=101).map(|n| format!("prod-{n:04}")).collect();
    let (status, body) =
        backend_get(&sandbox, &format!("/products?ids={}", too_many.join(","))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "TOO_MANY_IDS");

    let hundred = &too_many[..100];
    let (status, body) =
        backend_get(&sandbox, &format!("/products?ids={}", hundred.join(","))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn backend_pages_a_customers_orders_newest_first() {
    let sandbox = start_default().await;

    let mut seen = Vec::new();
    let mut path = "/customers/cust-0001/orders?limit=5".to_owned();
    loop {
        let (status, page) = backend_get(&sandbox, &path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(ids(&page["items"]).into_iter().map(str::to_owned));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/customers/cust-0001/orders?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "ord-019801",
            "ord-018001",
            "ord-016201",
            "ord-014401",
            "ord-012601",
            "ord-010801",
            "ord-009001",
            "ord-007201",
            "ord-005401",
            "ord-003601",
            "ord-001801",
            "ord-000001",
        ]
    );

    // Any listed order's id is a cursor; an order of someone else is not.
    let (_, after) = backend_get(
        &sandbox,
        "/customers/cust-0001/orders?limit=2&cursor=ord-012601",
    )
    .await;
    assert_eq!(ids(&after["items"]), ["ord-010801", "ord-009001"]);
    assert_eq!(after["nextCursor"], "ord-009001");
    let (status, body) =
        backend_get(&sandbox, "/customers/cust-0001/orders?cursor=ord-000002").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "BAD_CURSOR");

    let (_, shipped) = backend_get(&sandbox, "/customers/cust-0001/orders?status=SHIPPED").await;
    assert_eq!(
        ids(&shipped["items"]),
        [
            "ord-016201",
            "ord-012601",
            "ord-007201",
            "ord-003601",
            "ord-000001"
        ]
    );
    assert_eq!(shipped["nextCursor"], Value::Null);

    let (status, body) = backend_get(&sandbox, "/customers/cust-0001/orders?status=LOST").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_STATUS");

    let (status, _) = backend_get(&sandbox, "/customers/cust-9999/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn backend_searches_and_pages_customers() {
    let sandbox = start_default().await;

    let (_, ada) = backend_get(&sandbox, "/customers?search=ADA").await;
    assert_eq!(ids(&ada["items"]), ["cust-0001"]);
    assert_eq!(ada["nextCursor"], Value::Null);

    let mut count = 0;
    let mut pages = 0;
    let mut path = "/customers?limit=100".to_owned();
    loop {
        let (_, page) = backend_get(&sandbox, &path).await;
        count += page["items"].as_array().unwrap().len();
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/customers?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((count, pages), (1000, 10));

    for (query, code) in [
        ("limit=0", "INVALID_LIMIT"),
        ("limit=101", "INVALID_LIMIT"),
        ("limit=ten", "INVALID_LIMIT"),
        ("cursor=cust-9999", "BAD_CURSOR"),
    ] {
        let (status, body) = backend_get(&sandbox, &format!("/customers?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn backend_rejects_a_missing_or_wrong_token() {
    let sandbox = start_default().await;
    for token in [None, Some("wrong")] {
        let mut request = client().get(format!("{}/customers/cust-0001", sandbox.urls().backend));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(response).await["error"]["code"], "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn backend_places_and_cancels_orders() {
    let sandbox = start_default().await;
    let mut changes = sandbox.changes();

    let (status, order) = backend_post(
        &sandbox,
        "/orders",
        &json!({"customerId": "cust-0001",
                "lines": [{"productId": "prod-0001", "quantity": 1},
                          {"productId": "prod-0003", "quantity": 3}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(order["id"], "ord-020001");
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(
        order["total"],
        json!({"minorUnits": 8999 + 3 * 1999, "currency": "EUR"})
    );
    assert_eq!(order["lines"][1]["lineNo"], 2);
    assert_eq!(order["shipment"], Value::Null);
    assert_eq!(
        changes.recv().await.unwrap(),
        SandboxChange::OrderStatusChanged {
            order_id: "ord-020001".into(),
            customer_id: "cust-0001".into(),
            status: "CONFIRMED".into(),
        }
    );

    let (_, newest) = backend_get(&sandbox, "/customers/cust-0001/orders?limit=1").await;
    assert_eq!(ids(&newest["items"]), ["ord-020001"]);

    let (status, cancelled) = backend_post(&sandbox, "/orders/ord-020001/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "CANCELLED");
    let (status, again) = backend_post(&sandbox, "/orders/ord-020001/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "NOT_CANCELLABLE");

    let (status, confirmed) = backend_post(&sandbox, "/orders/ord-018001/cancel", &json!({})).await;
    assert_eq!(
        (status, &confirmed["status"]),
        (StatusCode::OK, &json!("CANCELLED"))
    );
    let (status, shipped) = backend_post(&sandbox, "/orders/ord-000001/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(shipped["error"]["code"], "NOT_CANCELLABLE");
    let (status, _) = backend_post(&sandbox, "/orders/ord-999999/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn backend_refuses_orders_it_cannot_place() {
    let sandbox = start_default().await;

    // The first product out of stock, from the catalogue itself.
    let catalogue: Vec<String> = (11..=110).map(|n| format!("prod-{n:04}")).collect();
    let (_, products) =
        backend_get(&sandbox, &format!("/products?ids={}", catalogue.join(","))).await;
    let out_of_stock = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|product| product["inStock"] == false)
        .expect("about 5% of products are out of stock")["id"]
        .clone();

    let line = |product: &Value, quantity: i64| json!({"productId": product, "quantity": quantity});
    for (body, code) in [
        (
            json!({"customerId": "cust-9999", "lines": [line(&json!("prod-0001"), 1)]}),
            "UNKNOWN_CUSTOMER",
        ),
        (
            json!({"customerId": "cust-0001", "lines": [line(&json!("prod-9999"), 1)]}),
            "UNKNOWN_PRODUCT",
        ),
        (
            json!({"customerId": "cust-0001", "lines": [line(&out_of_stock, 1)]}),
            "OUT_OF_STOCK",
        ),
        (
            json!({"customerId": "cust-0001", "lines": [line(&json!("prod-0001"), 0)]}),
            "INVALID_QUANTITY",
        ),
        (
            json!({"customerId": "cust-0001", "lines": [line(&json!("prod-0001"), 100)]}),
            "INVALID_QUANTITY",
        ),
        (
            json!({"customerId": "cust-0001", "lines": []}),
            "EMPTY_ORDER",
        ),
    ] {
        let (status, answer) = backend_post(&sandbox, "/orders", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer["error"]["code"], code, "{body}");
    }

    let response = client()
        .post(format!("{}/orders", sandbox.urls().backend))
        .bearer_auth(BACKEND_TOKEN)
        .header("content-type", "application/json")
        .body("{\"customerId\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["error"]["code"], "INVALID_JSON");
}

// ----- CRM -------------------------------------------------------------------------------------

/// Signs in with client credentials; the access token and instance URL.
async fn crm_token(sandbox: &Sandbox) -> (String, String) {
    let config = sandbox.config();
    let response = client()
        .post(format!("{}/services/oauth2/token", sandbox.urls().crm))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.crm_client_id.as_str()),
            ("client_secret", config.crm_client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["issued_at"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(body["signature"].as_str().is_some_and(|s| !s.is_empty()));
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["instance_url"].as_str().unwrap().to_owned(),
    )
}

async fn crm_get(instance: &str, token: &str, path_and_query: &str) -> Response {
    client()
        .get(format!("{instance}{path_and_query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn soql(instance: &str, token: &str, query: &str) -> Response {
    client()
        .get(format!("{instance}/services/data/v60.0/query"))
        .query(&[("q", query)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn crm_pages_soql_results_with_next_records_url() {
    let sandbox = start(SandboxConfig {
        crm_batch_size: 2,
        ..quiet()
    })
    .await;
    let (token, instance) = crm_token(&sandbox).await;
    assert_eq!(instance, sandbox.urls().crm);

    let response = soql(
        &instance,
        &token,
        "SELECT Id, CaseNumber, Subject, Status, IsClosed, Order_Id__c, Contact.Customer_Id__c \
         FROM Case WHERE Contact.Customer_Id__c IN ('cust-0001') ORDER BY CaseNumber",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["sforce-limit-info"],
        "api-usage=1/1000000"
    );
    let first = json_of(response).await;
    assert_eq!(first["totalSize"], 3);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        first["records"][0],
        json!({
            "attributes": {"type": "Case", "url": "/services/data/v60.0/sobjects/Case/500000000000001AAA"},
            "Id": "500000000000001AAA",
            "CaseNumber": "00001001",
            "Subject": "Where is my parcel?",
            "Status": "Working",
            "IsClosed": false,
            "Order_Id__c": "ord-012601",
            "Contact": {
                "attributes": {"type": "Contact", "url": "/services/data/v60.0/sobjects/Contact/003000000000001AAA"},
                "Customer_Id__c": "cust-0001"
            }
        })
    );
    let next = first["nextRecordsUrl"].as_str().expect("a nextRecordsUrl");
    assert!(next.starts_with("/services/data/v60.0/query/"), "{next}");

    let response = crm_get(&instance, &token, next).await;
    assert_eq!(
        response.headers()["sforce-limit-info"],
        "api-usage=2/1000000"
    );
    let second = json_of(response).await;
    assert_eq!(second["totalSize"], 3);
    assert_eq!(second["done"], true);
    assert!(second.get("nextRecordsUrl").is_none());
    assert_eq!(second["records"][0]["Id"], "500000000000003AAA");
    assert_eq!(second["records"][0]["Status"], "Closed");
    assert_eq!(second["records"][0]["IsClosed"], true);

    // Comments of Ada's open cases, for a batch: ParentId IN (...).
    let response = soql(
        &instance,
        &token,
        "SELECT Id, ParentId, CommentBody, IsPublished FROM CaseComment \
         WHERE ParentId IN ('500000000000001AAA', '500000000000002AAA') ORDER BY CreatedDate",
    )
    .await;
    let comments = json_of(response).await;
    assert_eq!(comments["totalSize"], 3);
    let bad_locator = crm_get(&instance, &token, "/services/data/v60.0/query/01gnope-2").await;
    assert_eq!(bad_locator.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(bad_locator).await[0]["errorCode"],
        "INVALID_QUERY_LOCATOR"
    );
}

#[tokio::test]
async fn crm_answers_bad_soql_with_salesforce_errors() {
    let sandbox = start_default().await;
    let (token, instance) = crm_token(&sandbox).await;

    for (query, code) in [
        ("SELECT Id FROM Case WHERE", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Case WHERE Subject = 'it\\'s",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id, Nope__c FROM Case", "INVALID_FIELD"),
        ("SELECT Id FROM Account", "INVALID_TYPE"),
        (
            "SELECT Id FROM Case WHERE IsClosed = 'no'",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
    ] {
        let response = soql(&instance, &token, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let errors = json_of(response).await;
        assert_eq!(errors[0]["errorCode"], code, "{query}");
        assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Escaped quotes are part of the value.
    let response = soql(
        &instance,
        &token,
        "SELECT Id FROM Case WHERE Subject = 'Ada\\'s parcel'",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["totalSize"], 0);
}

#[tokio::test]
async fn crm_rejects_bad_credentials_and_expired_sessions() {
    let sandbox = start(SandboxConfig {
        crm_token_ttl_secs: 0,
        ..quiet()
    })
    .await;
    let response = client()
        .post(format!("{}/services/oauth2/token", sandbox.urls().crm))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sandbox-crm-client"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["error"], "invalid_client");

    let (token, instance) = crm_token(&sandbox).await;
    let response = soql(&instance, &token, "SELECT Id FROM Contact LIMIT 1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let response = soql(&instance, "made-up", "SELECT Id FROM Contact LIMIT 1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn crm_retrieves_in_id_order_with_null_for_unknown_ids() {
    let sandbox = start_default().await;
    let (token, instance) = crm_token(&sandbox).await;

    let response = crm_get(
        &instance,
        &token,
        "/services/data/v60.0/composite/sobjects/Case\
         ?ids=500000000000003AAA,500000000000999999,500000000000001&fields=Subject,ClosedDate",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("sforce-limit-info"));
    let records = json_of(response).await;
    assert_eq!(records.as_array().unwrap().len(), 3);
    assert_eq!(records[0]["Subject"], "Refund for cancelled order");
    assert_eq!(records[0]["ClosedDate"], "2025-09-04T15:30:00.000+0000");
    assert_eq!(records[1], Value::Null);
    assert_eq!(records[2]["Subject"], "Where is my parcel?");
    assert_eq!(records[2]["ClosedDate"], Value::Null);

    let response = crm_get(
        &instance,
        &token,
        "/services/data/v60.0/composite/sobjects/Case?ids=500000000000001AAA&fields=Nope",
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await[0]["errorCode"], "INVALID_FIELD");
}

#[tokio::test]
async fn crm_creates_cases_and_comments() {
    let sandbox = start_default().await;
    let (token, instance) = crm_token(&sandbox).await;
    let post = |object: &str, body: Value| {
        client()
            .post(format!("{instance}/services/data/v60.0/sobjects/{object}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let response = post(
        "Case",
        json!({"Subject": "Parcel arrived wet", "ContactId": "003000000000001AAA",
               "Origin": "App", "Order_Id__c": "ord-000001"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("sforce-limit-info"));
    let created = json_of(response).await;
    assert_eq!(
        created,
        json!({"id": "500000000001501AAA", "success": true, "errors": []})
    );

    let response = soql(
        &instance,
        &token,
        "SELECT Id, Status, Priority, Origin, IsClosed FROM Case WHERE Id = '500000000001501AAA'",
    )
    .await;
    let found = json_of(response).await;
    assert_eq!(found["totalSize"], 1);
    assert_eq!(found["records"][0]["Status"], "New");
    assert_eq!(found["records"][0]["Priority"], "Medium");
    assert_eq!(found["records"][0]["Origin"], "App");

    let response = post("Case", json!({"Description": "no subject, no contact"}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json_of(response).await;
    assert_eq!(error[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(error[0]["fields"], json!(["Subject", "ContactId"]));

    let response = post(
        "Case",
        json!({"Subject": "x", "ContactId": "003000000000001AAA", "Status": "Lost"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await[0]["errorCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );

    let response = post(
        "CaseComment",
        json!({"ParentId": "500000000009999AAA", "CommentBody": "Hello?", "IsPublished": true}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json_of(response).await;
    assert_eq!(error[0]["errorCode"], "INVALID_CROSS_REFERENCE_KEY");
    assert_eq!(error[0]["fields"], json!(["ParentId"]));

    let mut changes = sandbox.changes();
    let response = post(
        "CaseComment",
        json!({"ParentId": "500000000001501AAA", "CommentBody": "Photo attached.", "IsPublished": true}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let comment = json_of(response).await;
    assert_eq!(comment["success"], true);
    assert_eq!(
        changes.recv().await.unwrap(),
        SandboxChange::CaseCommentAdded {
            case_id: "500000000001501AAA".into(),
            comment_id: comment["id"].as_str().unwrap().into(),
            case_number: "00002501".into(),
            customer_id: Some("cust-0001".into()),
            published: true,
        }
    );
}

#[tokio::test]
async fn crm_enforces_the_daily_api_quota() {
    let sandbox = start(SandboxConfig {
        crm_daily_api_limit: 2,
        ..quiet()
    })
    .await;
    let (token, instance) = crm_token(&sandbox).await;
    for used in 1..=2 {
        let response = soql(&instance, &token, "SELECT Id FROM Contact LIMIT 1").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["sforce-limit-info"],
            format!("api-usage={used}/2").as_str()
        );
    }
    let response = soql(&instance, &token, "SELECT Id FROM Contact LIMIT 1").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["sforce-limit-info"], "api-usage=2/2");
    assert_eq!(
        json_of(response).await,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
}

// ----- process server --------------------------------------------------------------------------

fn kie(sandbox: &Sandbox, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let config = sandbox.config();
    client()
        .request(method, format!("{}/{path}", sandbox.urls().process))
        .basic_auth(&config.kie_user, Some(&config.kie_password))
        .header("accept", "application/json")
}

async fn kie_get(sandbox: &Sandbox, path: &str) -> Value {
    let response = kie(sandbox, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    json_of(response).await
}

async fn kie_put(sandbox: &Sandbox, path: &str, body: Option<Value>) -> StatusCode {
    let mut request = kie(sandbox, reqwest::Method::PUT, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status()
}

/// Task summaries a user may work on.
async fn pot_owner_tasks(sandbox: &Sandbox, user: &str) -> Vec<Value> {
    let body = kie_get(
        sandbox,
        &format!(
            "queries/tasks/instances/pot-owners?user={user}&status=Ready&status=Reserved\
             &status=InProgress&page=0&pageSize=100"
        ),
    )
    .await;
    body["task-summary"].as_array().unwrap().clone()
}

#[tokio::test]
async fn process_runs_a_return_from_start_to_pickup() {
    let sandbox = start_default().await;

    let response = kie(
        &sandbox,
        reqwest::Method::POST,
        "containers/returns/processes/returns.ReturnRequest/instances",
    )
    .json(&json!({"customerId": "cust-0001", "orderId": "ord-010801", "reason": "Too small"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let instance_id = json_of(response)
        .await
        .as_i64()
        .expect("a bare instance id");
    assert_eq!(instance_id, 301);

    // The approval waits for any agent.
    let approval = pot_owner_tasks(&sandbox, "agent-02")
        .await
        .into_iter()
        .find(|task| task["task-proc-inst-id"] == instance_id)
        .expect("the new approval task is in the agents' queue");
    assert_eq!(approval["task-name"], "ApproveReturn");
    assert_eq!(approval["task-status"], "Ready");
    assert_eq!(approval["task-actual-owner"], Value::Null);
    assert_eq!(approval["task-container-id"], "returns");
    let approval_id = approval["task-id"].as_i64().unwrap();
    let task_path = |id: i64, rest: &str| format!("containers/returns/tasks/{id}{rest}");

    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(approval_id, "/states/claimed?user=cust-0001"),
            None
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(approval_id, "/states/claimed?user=agent-02"),
            None
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(approval_id, "/states/started?user=agent-01"),
            None
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(approval_id, "/states/started?user=agent-02"),
            None
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(approval_id, "/states/completed?user=agent-02"),
            Some(json!({"approved": true, "comment": "OK"}))
        )
        .await,
        StatusCode::CREATED
    );

    // Now the customer confirms the pickup; Ada already had one waiting (task 2).
    let pickups: Vec<Value> = pot_owner_tasks(&sandbox, "cust-0001").await;
    let task_ids: Vec<i64> = pickups
        .iter()
        .map(|t| t["task-id"].as_i64().unwrap())
        .collect();
    let pickup = pickups
        .iter()
        .find(|task| task["task-proc-inst-id"] == instance_id)
        .expect("a pickup task for the customer");
    assert_eq!(task_ids[0], 2);
    assert_eq!(pickup["task-name"], "ConfirmPickup");
    let pickup_id = pickup["task-id"].as_i64().unwrap();
    assert!(
        pot_owner_tasks(&sandbox, "cust-0002")
            .await
            .iter()
            .all(|task| task["task-id"] != pickup_id)
    );

    let instance = kie_get(&sandbox, &task_path(pickup_id, "?withInputData=true")).await;
    assert_eq!(
        instance["task-input-data"],
        json!({"customerId": "cust-0001", "orderId": "ord-010801", "reason": "Too small"})
    );
    assert_eq!(instance["task-process-instance-id"], instance_id);

    assert_eq!(
        kie_put(
            &sandbox,
            &task_path(
                pickup_id,
                "/states/completed?user=cust-0001&auto-progress=true"
            ),
            Some(json!({}))
        )
        .await,
        StatusCode::CREATED
    );
    let done = kie_get(
        &sandbox,
        &format!("queries/processes/instances/{instance_id}?withVars=true"),
    )
    .await;
    assert_eq!(done["process-instance-state"], 2);
    assert_eq!(done["process-id"], "returns.ReturnRequest");
    assert_eq!(done["initiator"], "kieserver");
    assert_eq!(
        done["process-instance-desc"],
        "Return request for ord-010801"
    );
    assert_eq!(
        done["process-instance-variables"],
        json!({"customerId": "cust-0001", "orderId": "ord-010801", "reason": "Too small",
               "outcome": "picked-up"})
    );
}

#[tokio::test]
async fn process_lists_ada_returns_and_refuses_bad_operations() {
    let sandbox = start_default().await;

    let active = kie_get(
        &sandbox,
        "queries/processes/instances/variables/customerId?varValue=cust-0001&status=1\
         &page=0&pageSize=100&withVars=true",
    )
    .await;
    let active = active["process-instance"].as_array().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["process-instance-id"], 1);
    assert_eq!(active[0]["process-instance-state"], 1);
    let all = kie_get(
        &sandbox,
        "queries/processes/instances/variables/customerId?varValue=cust-0001&status=1&status=2\
         &status=3&page=0&pageSize=100&withVars=true",
    )
    .await;
    let all = all["process-instance"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["process-instance-variables"]["outcome"], "rejected");

    let ada_tasks = pot_owner_tasks(&sandbox, "cust-0001").await;
    assert_eq!(ada_tasks.len(), 1);
    assert_eq!(ada_tasks[0]["task-id"], 2);
    assert_eq!(ada_tasks[0]["task-name"], "ConfirmPickup");
    assert_eq!(ada_tasks[0]["task-status"], "Ready");
    let agent_queue = pot_owner_tasks(&sandbox, "agent-01").await;
    let ready_approvals = agent_queue
        .iter()
        .filter(|task| task["task-name"] == "ApproveReturn" && task["task-status"] == "Ready")
        .count();
    assert!(ready_approvals >= 5, "{ready_approvals} approvals waiting");

    // Completing without the approval decision, unknown tasks and containers, no auth.
    let approval = agent_queue[0]["task-id"].as_i64().unwrap();
    let response = kie(
        &sandbox,
        reqwest::Method::PUT,
        &format!(
            "containers/returns/tasks/{approval}/states/completed?user=agent-01&auto-progress=true"
        ),
    )
    .json(&json!({"comment": "forgot the decision"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(response).await.is_string());
    let response = kie(
        &sandbox,
        reqwest::Method::PUT,
        "containers/returns/tasks/999999/states/claimed?user=agent-01",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(json_of(response).await.is_string());
    let response = kie(
        &sandbox,
        reqwest::Method::GET,
        "queries/processes/instances/999999",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = kie(
        &sandbox,
        reqwest::Method::POST,
        "containers/other/processes/returns.ReturnRequest/instances",
    )
    .json(&json!({"customerId": "cust-0001", "orderId": "ord-010801"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client()
        .get(format!(
            "{}/queries/processes/instances/1",
            sandbox.urls().process
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// ----- carrier ---------------------------------------------------------------------------------

async fn track(sandbox: &Sandbox, number: &str, key: Option<&str>) -> Response {
    let mut request = client().get(format!("{}/v1/trackings/{number}", sandbox.urls().carrier));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn carrier_tracks_parcels_behind_its_api_key() {
    let sandbox = start_default().await;

    let response = track(&sandbox, "PC100000001", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(response).await, json!({"error": "invalid_api_key"}));

    let response = track(&sandbox, "PC100000001", Some(CARRIER_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let parcel = json_of(response).await;
    assert_eq!(parcel["trackingNumber"], "PC100000001");
    assert_eq!(parcel["carrier"], "PARCELCO");
    assert_eq!(parcel["status"], "IN_TRANSIT");
    let events = parcel["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["status"], "IN_TRANSIT");
    assert_eq!(events[2]["status"], "LABEL_CREATED");
    assert_eq!(events[2]["timestamp"], "2024-05-01T18:00:00Z");
    assert!(events[0]["timestamp"].as_str() > events[1]["timestamp"].as_str());

    let delivered = json_of(track(&sandbox, "PC100010801", Some(CARRIER_KEY)).await).await;
    assert_eq!(delivered["status"], "DELIVERED");
    assert_eq!(delivered["events"].as_array().unwrap().len(), 6);
    assert_eq!(delivered["estimatedDelivery"], Value::Null);

    let response = track(&sandbox, "PC199999999", Some(CARRIER_KEY)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await["error"], "not_found");
}

#[tokio::test]
async fn carrier_rate_limits_with_retry_after() {
    let sandbox = start(SandboxConfig {
        carrier_rate_per_sec: 1,
        ..quiet()
    })
    .await;
    let first = track(&sandbox, "PC100000001", Some(CARRIER_KEY)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = track(&sandbox, "PC100003601", Some(CARRIER_KEY)).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(json_of(second).await, json!({"error": "rate_limited"}));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = track(&sandbox, "PC100003601", Some(CARRIER_KEY)).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(json_of(third).await["status"], "OUT_FOR_DELIVERY");
}

// ----- OIDC ------------------------------------------------------------------------------------

#[tokio::test]
async fn oidc_tokens_verify_against_the_published_jwks() {
    let sandbox = start_default().await;
    let issuer = &sandbox.urls().oidc;

    let discovery: Value = json_of(
        client()
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(discovery["token_endpoint"], format!("{issuer}/token"));

    let users = json_of(
        client()
            .get(format!("{issuer}/users"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(users.as_array().unwrap().len(), 7);
    assert_eq!(
        users[0],
        json!({"id": "cust-0001", "name": "Ada Lovelace", "role": "customer"})
    );
    assert_eq!(
        users[5],
        json!({"id": "agent-01", "name": "Grace Hopper", "role": "agent"})
    );

    let jwks: jsonwebtoken::jwk::JwkSet = client()
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = client()
        .post(format!("{issuer}/token"))
        .json(&json!({"user": "cust-0001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();

    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["switchyard"]);
    validation.set_issuer(&[issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("the token verifies")
        .claims;
    assert_eq!(claims["sub"], "cust-0001");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert_eq!(claims["roles"], json!(["customer"]));
    assert_eq!(claims["customer_id"], "cust-0001");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    let agent = json_of(
        client()
            .post(format!("{issuer}/token"))
            .json(&json!({"user": "agent-02"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let claims =
        jsonwebtoken::decode::<Value>(agent["access_token"].as_str().unwrap(), &key, &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["roles"], json!(["agent"]));
    assert!(claims.get("customer_id").is_none());

    let response = client()
        .post(format!("{issuer}/token"))
        .json(&json!({"user": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

// ----- counting and faults ---------------------------------------------------------------------

#[tokio::test]
async fn requests_are_counted_by_route_template() {
    let sandbox = start_default().await;
    backend_get(&sandbox, "/orders/ord-000001").await;
    backend_get(&sandbox, "/orders/ord-000002").await;
    backend_get(&sandbox, "/products?ids=prod-0001").await;
    backend_get(&sandbox, "/no/such/route").await;
    track(&sandbox, "PC100000001", Some(CARRIER_KEY)).await;
    kie_get(&sandbox, "queries/processes/instances/1").await;

    let expected: Vec<(String, u64)> = vec![
        ("GET (unmatched)".into(), 1),
        ("GET /orders/{id}".into(), 2),
        ("GET /products".into(), 1),
    ];
    assert_eq!(
        sandbox
            .requests(Upstream::Backend)
            .into_iter()
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        sandbox.requests(Upstream::Carrier)["GET /v1/trackings/{tracking_number}"],
        1
    );
    assert_eq!(
        sandbox.requests(Upstream::Process)["GET /kie-server/services/rest/server/queries/processes/instances/{id}"],
        1
    );

    // Over HTTP too; control routes are not counted.
    let counts = json_of(
        client()
            .get(format!("{}/_sandbox/requests", sandbox.urls().backend))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(counts["GET /orders/{id}"], 2);
    assert!(counts.get("GET /_sandbox/requests").is_none());
    let response = client()
        .delete(format!("{}/_sandbox/requests", sandbox.urls().process))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(sandbox.requests(Upstream::Process).is_empty());
    assert_eq!(sandbox.requests(Upstream::Backend).len(), 3);

    sandbox.reset_requests();
    assert!(
        Upstream::ALL
            .iter()
            .all(|&upstream| sandbox.requests(upstream).is_empty())
    );
}

#[tokio::test]
async fn an_upstream_with_error_rate_one_answers_503_in_its_own_shape() {
    let always_failing = UpstreamKnobs {
        error_rate: 1.0,
        ..UpstreamKnobs::default()
    };
    let sandbox = start(SandboxConfig {
        backend: always_failing,
        crm: always_failing,
        ..quiet()
    })
    .await;

    let (status, body) = backend_get(&sandbox, "/customers/cust-0001").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(
        sandbox.requests(Upstream::Backend)["GET /customers/{id}"],
        1
    );

    let response = client()
        .post(format!("{}/services/oauth2/token", sandbox.urls().crm))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_of(response).await[0]["errorCode"],
        "SERVER_UNAVAILABLE"
    );

    // The other upstreams are unaffected.
    let response = track(&sandbox, "PC100000001", Some(CARRIER_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn latency_and_malformed_answers_are_injected() {
    let sandbox = start(SandboxConfig {
        backend: UpstreamKnobs {
            latency_ms: 150,
            ..UpstreamKnobs::default()
        },
        carrier: UpstreamKnobs {
            malformed_rate: 1.0,
            ..UpstreamKnobs::default()
        },
        ..quiet()
    })
    .await;

    let started = Instant::now();
    let (status, _) = backend_get(&sandbox, "/products/prod-0001").await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let response = track(&sandbox, "PC100000001", Some(CARRIER_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("{\"trackingNumber\":\"PC100000001\""),
        "{text}"
    );
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn a_stalled_answer_trips_the_client_timeout_without_holding_up_shutdown() {
    let sandbox = start(SandboxConfig {
        process: UpstreamKnobs {
            timeout_rate: 1.0,
            ..UpstreamKnobs::default()
        },
        ..quiet()
    })
    .await;
    let started = Instant::now();
    let outcome = kie(
        &sandbox,
        reqwest::Method::GET,
        "queries/processes/instances/1",
    )
    .timeout(Duration::from_millis(300))
    .send()
    .await;
    assert!(outcome.is_err_and(|error| error.is_timeout()));
    assert!(started.elapsed() < Duration::from_secs(5));

    // A second stalled request is still in flight when the sandbox shuts down.
    let url = format!("{}/queries/processes/instances/1", sandbox.urls().process);
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .basic_auth("kieserver", Some("kieserver1!"))
            .send()
            .await
            .map(|response| response.status())
    });
    // Shut down once the sandbox has the request (counted, stalling), not before: a request
    // still on its way would meet a closed connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.requests(Upstream::Process).values().sum::<u64>() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    sandbox.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_shutdown_stops_the_servers() {
    let first = start_default().await;
    let second = start_default().await;
    for path in [
        "/customers/cust-0500",
        "/orders/ord-012345",
        "/products/prod-0321",
    ] {
        assert_eq!(
            backend_get(&first, path).await,
            backend_get(&second, path).await
        );
    }

    let backend = first.urls().backend.clone();
    first.shutdown().await;
    assert!(
        client()
            .get(format!("{backend}/products/prod-0001"))
            .send()
            .await
            .is_err()
    );
    second.shutdown().await;
}

#[tokio::test]
async fn config_rejects_impossible_knobs() {
    let error = Sandbox::start(SandboxConfig {
        carrier: UpstreamKnobs {
            error_rate: 1.5,
            ..UpstreamKnobs::default()
        },
        ..quiet()
    })
    .await
    .unwrap_err();
    assert!(error.to_string().contains("carrier.error_rate"), "{error}");

    let parsed: Result<SandboxConfig, _> = serde_json::from_value(json!({"sede": 1}));
    assert!(parsed.is_err(), "unknown keys are rejected");
    let parsed: SandboxConfig = serde_json::from_value(json!({"crm": {"latency_ms": 5}})).unwrap();
    assert_eq!(parsed.crm.latency_ms, 5);
    assert_eq!(parsed.seed, 42);
}
