//! The graph end to end: real HTTP into Switchyard, real HTTP from it to the sandbox
//! upstreams. Upstream request counts come from the sandbox's own counters.

use std::collections::BTreeSet;

use crate::support::{TestApp, counts, operation};
use sandbox::SandboxConfig;
use serde_json::{Value, json};

const ADA: &str = "cust-0001";
const AGENT: &str = "agent-01";

fn error_codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Distinct tracking numbers among the orders of a customer view.
fn tracking_numbers(customer: &Value) -> BTreeSet<String> {
    customer["orders"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e["node"]["shipment"]["trackingNumber"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn home_screen_comes_in_one_round_trip_with_one_batch_per_source_and_level() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    app.reset_counts();

    let data = app.data(&token, &operation("HomeScreen"), json!({})).await;

    let me = &data["me"];
    assert_eq!(me["id"], ADA);
    assert_eq!(me["name"], "Ada Lovelace");
    let orders = me["orders"]["edges"].as_array().unwrap();
    assert_eq!(orders.len(), 5);
    assert_eq!(me["orders"]["pageInfo"]["hasNextPage"], true);
    for order in orders {
        let lines = order["node"]["lines"].as_array().unwrap();
        assert!(!lines.is_empty());
        for line in lines {
            assert!(
                line["product"]["name"].is_string(),
                "line without product: {line}"
            );
        }
        let shipment = &order["node"]["shipment"];
        if !shipment.is_null() {
            assert!(
                shipment["status"].is_string(),
                "no live tracking: {shipment}"
            );
            assert!(!shipment["events"].as_array().unwrap().is_empty());
        }
    }
    let parcels = tracking_numbers(me);
    assert!(
        !parcels.is_empty(),
        "the demo customer has shipped orders among the latest five"
    );
    let cases = me["supportCases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "Ada has two open cases");
    assert!(cases.iter().all(|c| c["status"] != "CLOSED"));
    assert!(
        cases
            .iter()
            .all(|c| !c["comments"].as_array().unwrap().is_empty())
    );
    let tasks = me["tasks"].as_array().unwrap();
    assert!(
        tasks.iter().any(|t| t["name"] == "ConfirmPickup"),
        "{tasks:?}"
    );

    let parcels = parcels.len() as u64;
    let carrier_route = "GET /v1/trackings/{tracking_number}";
    assert_eq!(
        app.counts(),
        counts(&[
            (
                "backend",
                &[
                    ("GET /customers", 1),
                    ("GET /customers/{id}/orders", 1),
                    ("GET /products", 1),
                ]
            ),
            (
                "crm",
                &[
                    ("POST /services/oauth2/token", 1),
                    ("GET /services/data/{version}/query", 2),
                ]
            ),
            (
                "process",
                &[(
                    "GET /kie-server/services/rest/server/queries/tasks/instances/pot-owners",
                    1
                )]
            ),
            ("carrier", &[(carrier_route, parcels)]),
        ]),
    );

    // A second run reuses the CRM token, and reads the customer, the products and the
    // parcels from the entity cache: only the live lists (orders, cases, comments, tasks) are
    // read again.
    app.reset_counts();
    app.data(&token, &operation("HomeScreen"), json!({})).await;
    assert_eq!(
        app.counts(),
        counts(&[
            ("backend", &[("GET /customers/{id}/orders", 1)]),
            ("crm", &[("GET /services/data/{version}/query", 2)]),
            (
                "process",
                &[(
                    "GET /kie-server/services/rest/server/queries/tasks/instances/pot-owners",
                    1
                )]
            ),
        ]),
    );
    app.stop().await;
}

#[tokio::test]
async fn open_cases_are_filtered_by_the_crm_not_after_reading_them_all() {
    // One record per CRM batch: how many batches it sent is how many records it sent.
    let app = TestApp::spawn_with(
        SandboxConfig {
            crm_batch_size: 1,
            ..SandboxConfig::default()
        },
        |_| {},
    )
    .await;
    let token = app.token(ADA).await;
    app.reset_counts();

    let data = app
        .data(
            &token,
            "{ me { supportCases(openOnly: true) { id status } } }",
            json!({}),
        )
        .await;

    let cases = data["me"]["supportCases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "Ada has two open cases");
    assert!(cases.iter().all(|c| c["status"] != "CLOSED"));
    // Two records, not Ada's three: the CRM filtered.
    assert_eq!(
        app.counts(),
        counts(&[
            ("backend", &[("GET /customers", 1)]),
            (
                "crm",
                &[
                    ("POST /services/oauth2/token", 1),
                    ("GET /services/data/{version}/query", 1),
                    ("GET /services/data/{version}/query/{locator}", 1),
                ]
            ),
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn an_agent_sees_any_customer_with_the_same_batching() {
    let app = TestApp::spawn().await;
    let token = app.token(AGENT).await;
    app.reset_counts();

    let data = app
        .data(
            &token,
            &operation("AgentCustomerView"),
            json!({ "id": ADA }),
        )
        .await;

    let customer = &data["customer"];
    assert_eq!(customer["name"], "Ada Lovelace");
    assert_eq!(
        customer["supportCases"].as_array().unwrap().len(),
        3,
        "agents see closed cases too"
    );
    assert!(!customer["returns"].as_array().unwrap().is_empty());
    let parcels = tracking_numbers(customer).len() as u64;
    assert_eq!(
        app.counts(),
        counts(&[
            (
                "backend",
                &[
                    ("GET /customers", 1),
                    ("GET /customers/{id}/orders", 1),
                    ("GET /products", 1),
                    ("GET /orders", 1),
                ]
            ),
            (
                "crm",
                &[
                    ("POST /services/oauth2/token", 1),
                    ("GET /services/data/{version}/query", 2),
                ]
            ),
            (
                "process",
                &[
                    (
                        "GET /kie-server/services/rest/server/queries/tasks/instances/pot-owners",
                        1
                    ),
                    (
                        "GET /kie-server/services/rest/server/queries/processes/instances/variables/{name}",
                        1
                    ),
                ]
            ),
            (
                "carrier",
                &[("GET /v1/trackings/{tracking_number}", parcels)]
            ),
        ]),
    );

    let search = app
        .data(
            &token,
            &operation("SearchCustomers"),
            json!({ "search": "lovelace" }),
        )
        .await;
    let found = search["customers"]["edges"].as_array().unwrap();
    assert!(found.iter().any(|e| e["node"]["id"] == ADA));
    app.stop().await;
}

#[tokio::test]
async fn customers_see_only_their_own_data() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;

    let (_, body) = app
        .post(
            Some(&ada),
            "{ customer(id: \"cust-0002\") { id name } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["customer"], Value::Null);
    assert_eq!(error_codes(&body), ["FORBIDDEN"]);

    // Someone else's order, found through the agent.
    let agent = app.token(AGENT).await;
    let other = app
        .data(
            &agent,
            "{ customer(id: \"cust-0002\") { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    let other_order = other["customer"]["orders"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = app
        .post(
            Some(&ada),
            "query($id: ID!) { order(id: $id) { id } }",
            json!({ "id": other_order }),
        )
        .await;
    assert_eq!(error_codes(&body), ["FORBIDDEN"]);
    let (_, body) = app
        .post(
            Some(&ada),
            "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
            json!({ "id": other_order }),
        )
        .await;
    assert_eq!(error_codes(&body), ["FORBIDDEN"]);

    let (_, body) = app
        .post(
            Some(&ada),
            "{ customers { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&body), ["FORBIDDEN"]);
    app.stop().await;
}

#[tokio::test]
async fn a_link_to_another_customers_object_is_forbidden_like_the_object_itself() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let agent = app.token(AGENT).await;
    let other = app
        .data(
            &agent,
            "{ customer(id: \"cust-0002\") { email orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    let other_order = other["customer"]["orders"]["edges"][0]["node"]["id"].clone();
    let other_email = other["customer"]["email"].as_str().unwrap().to_owned();
    // The process server holds a return of Ada's that names another customer's order (its
    // API takes whatever it is given).
    let creds = app.sandbox.config();
    let started = app
        .http
        .post(format!(
            "{}/containers/returns/processes/returns.ReturnRequest/instances",
            app.sandbox.urls().process
        ))
        .basic_auth(&creds.kie_user, Some(&creds.kie_password))
        .json(&json!({"customerId": ADA, "orderId": other_order, "reason": "Not mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let instance = started.json::<Value>().await.unwrap().to_string();

    let (status, body) = app
        .post(
            Some(&ada),
            "{ me { returns { id reason order { id customer { email } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let returns = body["data"]["me"]["returns"].as_array().unwrap();
    let index = returns
        .iter()
        .position(|r| r["id"] == instance.as_str())
        .expect("Ada's return is listed");
    assert_eq!(returns[index]["reason"], "Not mine");
    assert_eq!(returns[index]["order"], Value::Null, "{body:#}");
    assert_eq!(error_codes(&body), ["FORBIDDEN"], "{body:#}");
    assert_eq!(
        body["errors"][0]["path"],
        json!(["me", "returns", index, "order"])
    );
    assert!(!body.to_string().contains(&other_email), "{body:#}");
    app.stop().await;
}

#[tokio::test]
async fn no_token_or_a_bad_token_gets_unauthenticated_not_data() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post(None, "{ me { id name } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"], Value::Null);
    assert_eq!(error_codes(&body), ["UNAUTHENTICATED"]);

    let (status, body) = app
        .post(Some("not-a-jwt"), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 401);
    assert!(body.get("data").is_none());
    assert_eq!(error_codes(&body), ["UNAUTHENTICATED"]);

    // A token for Ada with its signature tampered with.
    let token = app.token(ADA).await;
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, body) = app.post(Some(&forged), "{ me { id } }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_codes(&body), ["UNAUTHENTICATED"]);
    app.stop().await;
}

#[tokio::test]
async fn when_the_crm_is_down_the_home_screen_still_has_orders_and_tasks() {
    let mut config = SandboxConfig::default();
    config.crm.error_rate = 1.0;
    let app = TestApp::spawn_with(config, |_| {}).await;
    let token = app.token(ADA).await;

    let (status, body) = app
        .post(Some(&token), &operation("HomeScreen"), json!({}))
        .await;

    assert_eq!(status, 200);
    let me = &body["data"]["me"];
    assert_eq!(me["orders"]["edges"].as_array().unwrap().len(), 5);
    assert!(me["tasks"].as_array().is_some());
    assert_eq!(me["supportCases"], Value::Null);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(errors[0]["extensions"]["source"], "crm");
    assert_eq!(errors[0]["path"], json!(["me", "supportCases"]));
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        !message.contains("503") && !message.contains("http"),
        "internals leaked: {message}"
    );
    app.stop().await;
}

#[tokio::test]
async fn federation_entities_resolve_through_the_loaders_in_one_batch() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;

    let service = app.data(&token, "{ _service { sdl } }", json!({})).await;
    assert!(
        service["_service"]["sdl"]
            .as_str()
            .unwrap()
            .contains("@key(fields: \"id\")")
    );

    app.reset_counts();
    let data = app
        .data(
            &token,
            "query($r: [_Any!]!) { _entities(representations: $r) { ... on Product { id name } ... on Customer { id name } } }",
            json!({ "r": [
                { "__typename": "Product", "id": "prod-0001" },
                { "__typename": "Product", "id": "prod-0002" },
                { "__typename": "Customer", "id": ADA },
                { "__typename": "Product", "id": "prod-0003" },
            ]}),
        )
        .await;
    let entities = data["_entities"].as_array().unwrap();
    assert_eq!(entities.len(), 4);
    assert_eq!(entities[0]["id"], "prod-0001");
    assert_eq!(entities[2]["name"], "Ada Lovelace");
    assert_eq!(
        app.counts(),
        counts(&[("backend", &[("GET /products", 1), ("GET /customers", 1)])])
    );
    app.stop().await;
}

#[tokio::test]
async fn an_entity_the_caller_may_not_see_is_null_alone_with_its_error() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let agent = app.token(AGENT).await;
    let own = app
        .data(
            &ada,
            "{ me { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    let own_order = own["me"]["orders"]["edges"][0]["node"]["id"].clone();
    let other = app
        .data(
            &agent,
            "{ customer(id: \"cust-0002\") { orders(first: 1) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    let other_order = other["customer"]["orders"]["edges"][0]["node"]["id"].clone();

    let (status, body) = app
        .post(
            Some(&ada),
            "query($r: [_Any!]!) { _entities(representations: $r) { \
               ... on Order { id } ... on SupportCase { id subject } } }",
            json!({ "r": [
                { "__typename": "Order", "id": own_order },
                { "__typename": "Order", "id": other_order },
                { "__typename": "SupportCase", "id": "500000000000001AAA" },
                { "__typename": "Order", "id": other_order },
                { "__typename": "Nope", "id": "x" },
                { "id": "no-typename" },
            ]}),
        )
        .await;

    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["_entities"],
        json!([
            { "id": own_order },
            null,
            { "id": "500000000000001AAA", "subject": "Where is my parcel?" },
            null,
            null,
            null,
        ]),
        "{body:#}"
    );
    let mut errors: Vec<(Value, Value)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].clone(), e["extensions"]["code"].clone()))
        .collect();
    errors.sort_by_key(|(path, _)| path.to_string());
    assert_eq!(
        errors,
        [
            (json!(["_entities", 1]), json!("FORBIDDEN")),
            (json!(["_entities", 3]), json!("FORBIDDEN")),
            (json!(["_entities", 4]), json!("BAD_USER_INPUT")),
            (json!(["_entities", 5]), json!("BAD_USER_INPUT")),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn products_by_ids_keep_the_order_asked_and_null_unknown_ids() {
    let app = TestApp::spawn().await;
    let token = app.token(ADA).await;
    app.reset_counts();
    let data = app
        .data(
            &token,
            &operation("Products"),
            json!({ "ids": ["prod-0003", "prod-9999", "prod-0001", "prod-0003"] }),
        )
        .await;
    let ids: Vec<Value> = data["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("prod-0003"),
            Value::Null,
            json!("prod-0001"),
            json!("prod-0003")
        ]
    );
    assert_eq!(
        app.counts(),
        counts(&[("backend", &[("GET /products", 1)])])
    );
    app.stop().await;
}

/// Every example operation of `schema/operations/` (the playground's tabs) is valid against
/// the schema, with its variables.
#[tokio::test]
async fn every_example_operation_is_valid() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/operations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let document = std::fs::read_to_string(&path).unwrap();
        let variables = std::fs::read_to_string(dir.join(format!("{name}.variables.json")))
            .map(|v| serde_json::from_str::<Value>(&v).unwrap())
            .unwrap_or(json!({}));
        let is_subscription = document
            .lines()
            .any(|line| line.trim_start().starts_with("subscription"));
        if is_subscription {
            // Validated in-process: the schema checks the document and its variables, then
            // answers that it runs no subscriptions this way.
            let request = async_graphql::Request::new(document.clone())
                .variables(async_graphql::Variables::from_json(variables));
            let response = resolvers::schema_builder().finish().execute(request).await;
            let messages: Vec<&str> = response.errors.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(
                messages,
                ["Subscriptions are not supported on this transport."],
                "{name}"
            );
        } else {
            let (_, body) = app.post(Some(&ada), &document, variables).await;
            for error in body["errors"].as_array().into_iter().flatten() {
                let code = error["extensions"]["code"].as_str().unwrap_or("");
                assert!(
                    !matches!(
                        code,
                        "GRAPHQL_PARSE_FAILED"
                            | "GRAPHQL_VALIDATION_FAILED"
                            | "BAD_REQUEST"
                            | "OPERATION_RESOLUTION_FAILURE"
                    ),
                    "{name}: {body}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 17, "{checked} operations");
    app.stop().await;
}
