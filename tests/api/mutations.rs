//! What apps change, end to end: orders, support cases, returns and their tasks.

use crate::support::issuer::Issuer;
use crate::support::{TestApp, operation};
use sandbox::SandboxConfig;
use serde_json::{Value, json};

const ADA: &str = "cust-0001";
const AGENT: &str = "agent-01";

fn codes(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["extensions"]["code"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_customer_places_and_cancels_an_order() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;

    let placed = app
        .data(
            &ada,
            &operation("PlaceOrder"),
            json!({ "input": { "lines": [
                { "productId": "prod-0001", "quantity": 1 },
                { "productId": "prod-0002", "quantity": 2 },
            ]}}),
        )
        .await["placeOrder"]
        .clone();
    assert_eq!(placed["status"], "CONFIRMED");
    assert_eq!(placed["lines"].as_array().unwrap().len(), 2);
    let id = placed["id"].as_str().unwrap().to_owned();

    // The new order is the newest on the home screen.
    let home = app.data(&ada, &operation("HomeScreen"), json!({})).await;
    assert_eq!(home["me"]["orders"]["edges"][0]["node"]["id"], id);

    let cancelled = app
        .data(&ada, &operation("CancelOrder"), json!({ "id": id }))
        .await;
    assert_eq!(cancelled["cancelOrder"]["status"], "CANCELLED");
    assert_eq!(cancelled["cancelOrder"]["canCancel"], false);

    let (_, again) = app
        .post(Some(&ada), &operation("CancelOrder"), json!({ "id": id }))
        .await;
    assert_eq!(codes(&again), ["NOT_CANCELLABLE"]);
    app.stop().await;
}

#[tokio::test]
async fn bad_order_input_is_refused_with_clear_codes() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let place = |lines: Value| {
        let app = &app;
        let ada = ada.clone();
        async move {
            app.post(
                Some(&ada),
                &operation("PlaceOrder"),
                json!({ "input": { "lines": lines } }),
            )
            .await
            .1
        }
    };
    assert_eq!(codes(&place(json!([])).await), ["BAD_USER_INPUT"]);
    assert_eq!(
        codes(&place(json!([{ "productId": "prod-0001", "quantity": 0 }])).await),
        ["BAD_USER_INPUT"]
    );
    assert_eq!(
        codes(&place(json!([{ "productId": "bad id!", "quantity": 1 }])).await),
        ["BAD_USER_INPUT"]
    );
    assert_eq!(
        codes(&place(json!([{ "productId": "prod-9999", "quantity": 1 }])).await),
        ["UNKNOWN_PRODUCT"]
    );
    // An agent must say for whom.
    let agent = app.token(AGENT).await;
    let (_, body) = app
        .post(
            Some(&agent),
            &operation("PlaceOrder"),
            json!({ "input": { "lines": [{ "productId": "prod-0001", "quantity": 1 }] } }),
        )
        .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
    app.stop().await;
}

#[tokio::test]
async fn a_customer_opens_a_case_about_an_order_and_comments_on_it() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let home = app.data(&ada, &operation("HomeScreen"), json!({})).await;
    let order_id = home["me"]["orders"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let case = app
        .data(
            &ada,
            &operation("OpenSupportCase"),
            json!({ "input": { "subject": "Where is my parcel?", "orderId": order_id, "priority": "HIGH" } }),
        )
        .await["openSupportCase"]
        .clone();
    assert_eq!(case["subject"], "Where is my parcel?");
    assert_eq!(case["status"], "NEW");
    assert_eq!(case["priority"], "HIGH");
    assert_eq!(case["order"]["id"], order_id);
    let case_id = case["id"].as_str().unwrap().to_owned();

    let comment = app
        .data(
            &ada,
            &operation("AddCaseComment"),
            json!({ "caseId": case_id, "body": "Any news?" }),
        )
        .await;
    assert_eq!(comment["addCaseComment"]["body"], "Any news?");

    let read = app
        .data(
            &ada,
            "query($id: ID!) { supportCase(id: $id) { caseNumber comments { body isPublic } } }",
            json!({ "id": case_id }),
        )
        .await;
    assert_eq!(
        read["supportCase"]["comments"],
        json!([{ "body": "Any news?", "isPublic": true }])
    );
    let home = app.data(&ada, &operation("HomeScreen"), json!({})).await;
    assert!(
        home["me"]["supportCases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == case_id),
        "the new case is on the home screen"
    );

    let (_, body) = app
        .post(
            Some(&ada),
            &operation("OpenSupportCase"),
            json!({ "input": { "subject": "  " } }),
        )
        .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
    app.stop().await;
}

#[tokio::test]
async fn a_return_goes_from_request_to_agent_approval_to_pickup() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    let agent = app.token(AGENT).await;
    let shipped = app
        .data(
            &ada,
            "{ me { orders(first: 1, status: DELIVERED) { edges { node { id } } } } }",
            json!({}),
        )
        .await;
    let order_id = shipped["me"]["orders"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The customer asks.
    let started = app
        .data(
            &ada,
            &operation("RequestReturn"),
            json!({ "orderId": order_id, "reason": "Too small" }),
        )
        .await["requestReturn"]
        .clone();
    assert_eq!(started["state"], "ACTIVE");
    assert_eq!(started["reason"], "Too small");
    assert_eq!(started["order"]["id"], order_id);
    let process_id = started["id"].as_str().unwrap().to_owned();

    // An agent finds the approval task in the work list, claims and approves it.
    let tasks = app.data(&agent, &operation("AgentTasks"), json!({})).await;
    let approval = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["process"]["id"] == process_id)
        .expect("the approval task is in the agents' work list")
        .clone();
    assert_eq!(approval["name"], "ApproveReturn");
    assert_eq!(approval["status"], "READY");
    let task_id = approval["id"].as_str().unwrap().to_owned();

    // A customer sees the approval step of their own return but cannot decide it: the
    // process server refuses (only the agents' group may claim it).
    let (_, body) = app
        .post(
            Some(&ada),
            &operation("ClaimTask"),
            json!({ "id": task_id }),
        )
        .await;
    assert_eq!(codes(&body), ["TASK_NOT_AVAILABLE"]);

    let claimed = app
        .data(&agent, &operation("ClaimTask"), json!({ "id": task_id }))
        .await;
    assert_eq!(claimed["claimTask"]["status"], "RESERVED");
    assert_eq!(claimed["claimTask"]["owner"], AGENT);
    let (_, body) = app
        .post(
            Some(&agent),
            &operation("CompleteTask"),
            json!({ "id": task_id }),
        )
        .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "approved is required");
    let done = app
        .data(
            &agent,
            &operation("CompleteTask"),
            json!({ "id": task_id, "input": { "approved": true, "comment": "OK" } }),
        )
        .await;
    assert_eq!(done["completeTask"]["status"], "COMPLETED");

    // The customer now has to confirm the pick-up.
    let home = app
        .data(
            &ada,
            "{ me { tasks { id name process { id } } } }",
            json!({}),
        )
        .await;
    let pickup = home["me"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["process"]["id"] == process_id)
        .expect("ConfirmPickup for the customer")
        .clone();
    assert_eq!(pickup["name"], "ConfirmPickup");
    let done = app
        .data(
            &ada,
            &operation("CompleteTask"),
            json!({ "id": pickup["id"] }),
        )
        .await;
    assert_eq!(done["completeTask"]["status"], "COMPLETED");

    let returns = app
        .data(&ada, "{ me { returns { id state outcome } } }", json!({}))
        .await;
    let finished = returns["me"]["returns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == process_id)
        .unwrap()
        .clone();
    assert_eq!(finished["state"], "COMPLETED");
    assert_eq!(finished["outcome"], "picked-up");

    // An order that has not shipped cannot be returned.
    let placed = app
        .data(
            &ada,
            &operation("PlaceOrder"),
            json!({ "input": { "lines": [{ "productId": "prod-0001", "quantity": 1 }] } }),
        )
        .await;
    let (_, body) = app
        .post(
            Some(&ada),
            &operation("RequestReturn"),
            json!({ "orderId": placed["placeOrder"]["id"], "reason": "Changed my mind" }),
        )
        .await;
    assert_eq!(codes(&body), ["NOT_RETURNABLE"]);
    app.stop().await;
}

#[tokio::test]
async fn a_customer_whose_sub_is_not_their_customer_id_works_their_own_tasks() {
    // An identity provider that knows Ada by an id of its own, her customer id in a claim.
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let sub = "5f0c2a7e-idp-user";
    let ada = issuer.sign(json!({
        "sub": sub, "name": "Ada Lovelace", "roles": ["customer"], "customer_id": ADA,
    }));

    // Her work list and her customer profile's tasks are the same list: her pick-up.
    let data = app
        .data(
            &ada,
            "{ viewer { userId customerId } tasks { id name } me { tasks { id name } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"], json!({"userId": sub, "customerId": ADA}));
    assert_eq!(data["tasks"], data["me"]["tasks"]);
    let pickup = data["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ConfirmPickup")
        .expect("Ada's pick-up is in her work list")
        .clone();

    // And she can do it: the process server knows her as the customer she is.
    let done = app
        .data(
            &ada,
            &operation("CompleteTask"),
            json!({ "id": pickup["id"] }),
        )
        .await;
    assert_eq!(done["completeTask"]["status"], "COMPLETED");
    assert_eq!(done["completeTask"]["owner"], ADA);
    app.stop().await;
}

/// Mutations run in order and stop at the first that fails, as the spec executes them: a
/// failed one nulls `data`, so one after it must not change anything the client is not told.
#[tokio::test]
async fn a_failed_mutation_stops_the_ones_after_it() {
    let app = TestApp::spawn().await;
    let ada = app.token(ADA).await;
    app.reset_counts();
    let (status, body) = app
        .post(
            Some(&ada),
            r#"mutation {
                a: cancelOrder(id: "ord-000002") { id }
                b: placeOrder(input: { lines: [{ productId: "prod-0001", quantity: 1 }] }) { id }
            }"#,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(
        codes(&body),
        ["FORBIDDEN"],
        "only the failure that stopped it: {body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["a"]));
    let placed = app
        .counts()
        .get("backend")
        .and_then(|routes| routes.get("POST /orders").copied());
    assert_eq!(placed, None, "placeOrder did not run: {:?}", app.counts());

    // Mutations before the failure ran, and the answer says the request failed.
    let (_, body) = app
        .post(
            Some(&ada),
            r#"mutation {
                b: placeOrder(input: { lines: [{ productId: "prod-0001", quantity: 1 }] }) { id }
                a: cancelOrder(id: "ord-000002") { id }
            }"#,
            json!({}),
        )
        .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(codes(&body), ["FORBIDDEN"]);
    app.stop().await;
}
