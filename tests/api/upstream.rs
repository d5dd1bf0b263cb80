//! The upstream adapters over real HTTP against the sandbox upstreams, through the port traits
//! the graph uses. Request counts come from the sandbox's own counters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use resolvers::Ports;
use resolvers::ids::{CaseId, CustomerId, OrderId, ProductId};
use resolvers::ports::Source;
use resolvers::ports::{UpstreamError, UpstreamErrorKind};
use resolvers::records::{
    CasePriority, CaseQuery, CaseStatus, LoyaltyTier, NewCase, NewOrderLine, OrderPageQuery,
    OrderStatus, ProcessState, ShipmentStatus, TaskStatus,
};
use sandbox::{Sandbox, SandboxConfig, Upstream, UpstreamKnobs};
use serde_json::{Map, json};
use switchyard::config::{
    BackendConfig, CallPolicy, CarrierConfig, CrmConfig, ProcessConfig, Secret,
};
use switchyard::upstream::{ApiUsage, CrmClient};
use url::Url;

const ADA: &str = "cust-0001";
/// Ada's CRM contact: the first contact, `003` + 12 digits + the case-safety suffix.
const ADA_CONTACT: &str = "003000000000001AAA";
/// Ada's cases that are not closed, newest first (her third is closed).
const ADA_OPEN_CASES: [&str; 2] = ["500000000000002AAA", "500000000000001AAA"];
/// Every case of a customer, as the graph reads them.
const ALL_CASES: CaseQuery = CaseQuery {
    open_only: false,
    per_customer: 50,
};

// ----- harness --------------------------------------------------------------------------------

/// A sandbox and the ports over it.
struct Harness {
    sandbox: Sandbox,
    ports: Ports,
}

/// The four upstream configs pointing at `sandbox`, each with `policy`.
struct Configs {
    backend: BackendConfig,
    crm: CrmConfig,
    process: ProcessConfig,
    carrier: CarrierConfig,
}

fn configs(sandbox: &Sandbox, policy: &CallPolicy) -> Configs {
    let urls = sandbox.urls();
    let creds = sandbox.config();
    let url = |u: &str| Url::parse(u).expect("sandbox URLs parse");
    Configs {
        backend: BackendConfig {
            url: url(&urls.backend),
            token: Secret::new(creds.backend_token.clone()),
            policy: policy.clone(),
        },
        crm: CrmConfig {
            login_url: url(&urls.crm),
            client_id: creds.crm_client_id.clone(),
            client_secret: Secret::new(creds.crm_client_secret.clone()),
            api_version: "v60.0".to_owned(),
            policy: policy.clone(),
        },
        process: ProcessConfig {
            url: url(&urls.process),
            user: creds.kie_user.clone(),
            password: Secret::new(creds.kie_password.clone()),
            container: "returns".to_owned(),
            return_process: "returns.ReturnRequest".to_owned(),
            policy: policy.clone(),
        },
        carrier: CarrierConfig {
            url: url(&urls.carrier),
            api_key: Secret::new(creds.carrier_api_key.clone()),
            max_retry_after_secs: 2,
            policy: policy.clone(),
        },
    }
}

/// A short timeout, so a broken test fails fast; one retry, as by default.
fn test_policy() -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_secs(5),
        retries: 1,
        concurrency: 16,
        ..CallPolicy::default()
    }
}

/// The default sandbox without the simulator: only the test changes the world.
fn quiet() -> SandboxConfig {
    SandboxConfig {
        simulator_interval_ms: 0,
        ..SandboxConfig::default()
    }
}

async fn harness(sandbox: SandboxConfig) -> Harness {
    harness_with(sandbox, test_policy(), |_| {}).await
}

async fn harness_with(
    sandbox: SandboxConfig,
    policy: CallPolicy,
    tweak: impl FnOnce(&mut Configs),
) -> Harness {
    let sandbox = Sandbox::start(sandbox).await.expect("the sandbox starts");
    let mut c = configs(&sandbox, &policy);
    tweak(&mut c);
    let ports = switchyard::upstream::ports(
        &c.backend,
        &c.crm,
        &c.process,
        &c.carrier,
        std::sync::Arc::new(resolvers::cache::NoCache),
    )
    .map(|(ports, _)| ports)
    .expect("the ports build");
    Harness { sandbox, ports }
}

impl Harness {
    fn requests(&self, upstream: Upstream) -> BTreeMap<String, u64> {
        self.sandbox.requests(upstream)
    }

    fn count(&self, upstream: Upstream, key: &str) -> u64 {
        self.requests(upstream).get(key).copied().unwrap_or(0)
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn customer(id: &str) -> CustomerId {
    CustomerId::parse(id).expect("valid id")
}

fn order(id: &str) -> OrderId {
    OrderId::parse(id).expect("valid id")
}

fn product(id: &str) -> ProductId {
    ProductId::parse(id).expect("valid id")
}

fn case(id: &str) -> CaseId {
    CaseId::parse(id).expect("valid id")
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a valid time")
        .with_timezone(&Utc)
}

fn product_ids(range: std::ops::RangeInclusive<u32>) -> Vec<ProductId> {
    range.map(|n| product(&format!("prod-{n:04}"))).collect()
}

/// The detail of an `Unavailable` error (panics on any other kind).
fn unavailable_detail(error: &UpstreamError) -> &str {
    match &error.kind {
        UpstreamErrorKind::Unavailable { detail } => detail,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The code and message of a `Rejected` error (panics on any other kind).
fn rejection(error: &UpstreamError) -> (&'static str, &str) {
    match &error.kind {
        UpstreamErrorKind::Rejected { code, message } => (code, message),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn knobs(f: impl FnOnce(&mut UpstreamKnobs)) -> UpstreamKnobs {
    let mut knobs = UpstreamKnobs::default();
    f(&mut knobs);
    knobs
}

// ----- backend --------------------------------------------------------------------------------

#[tokio::test]
async fn bulk_reads_are_one_call_and_translate_every_field() {
    let h = harness(quiet()).await;

    let mut ids = product_ids(1..=3);
    ids.push(product("prod-9999"));
    let products = h.ports.backend.products_by_ids(&ids).await.unwrap();
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /products", 1)])
    );
    assert_eq!(products.len(), 3, "the unknown id is simply absent");
    let trail = products
        .iter()
        .find(|p| p.id.as_str() == "prod-0001")
        .unwrap();
    assert_eq!(trail.sku, "SKU-0001");
    assert_eq!(trail.name, "Trail Runner 2");
    assert_eq!(trail.category, "Shoes");
    assert_eq!(trail.price.minor_units, 8999);
    assert_eq!(trail.price.currency, "EUR");
    assert!(trail.in_stock);
    assert_eq!(
        trail.image_url.as_deref(),
        Some("https://img.example.com/prod-0001.jpg")
    );

    let customers = h
        .ports
        .backend
        .customers_by_ids(&[customer(ADA)])
        .await
        .unwrap();
    assert_eq!(customers.len(), 1);
    let ada = &customers[0];
    assert_eq!(ada.id.as_str(), ADA);
    assert_eq!(
        (ada.first_name.as_str(), ada.last_name.as_str()),
        ("Ada", "Lovelace")
    );
    assert_eq!(ada.email, "ada.lovelace@example.com");
    assert_eq!(ada.phone.as_deref(), Some("+44 20 7946 0001"));
    assert_eq!(ada.loyalty_tier, LoyaltyTier::Gold);
    assert_eq!(ada.created_at, utc("2021-03-04T10:00:00Z"));
    let address = ada.address.as_ref().unwrap();
    assert_eq!(address.line1, "12 St James's Square");
    assert_eq!(address.city, "London");
    assert_eq!(address.postal_code, "SW1Y 4JH");
    assert_eq!(address.country, "GB");

    let orders = h
        .ports
        .backend
        .orders_by_ids(&[order("ord-000001")])
        .await
        .unwrap();
    let first = &orders[0];
    assert_eq!(first.id.as_str(), "ord-000001");
    assert_eq!(first.customer_id.as_str(), ADA);
    assert_eq!(first.status, OrderStatus::Shipped);
    assert_eq!(first.placed_at, utc("2024-05-01T10:00:00Z"));
    assert_eq!(first.lines.len(), 1);
    assert_eq!(first.lines[0].line_no, 1);
    assert_eq!(first.lines[0].product_id.as_str(), "prod-0001");
    assert_eq!(first.lines[0].quantity, 2);
    assert_eq!(first.lines[0].unit_price.minor_units, 8999);
    assert_eq!(first.total.minor_units, 17998);
    assert_eq!(first.total.currency, "EUR");
    let shipment = first.shipment.as_ref().unwrap();
    assert_eq!(shipment.carrier, "PARCELCO");
    assert_eq!(shipment.tracking_number, "PC100000001");

    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[
            ("GET /products", 1),
            ("GET /customers", 1),
            ("GET /orders", 1)
        ])
    );
}

#[tokio::test]
async fn more_than_a_hundred_ids_are_split_into_calls_of_at_most_a_hundred() {
    let h = harness(quiet()).await;

    let products = h
        .ports
        .backend
        .products_by_ids(&product_ids(1..=150))
        .await
        .unwrap();

    assert_eq!(products.len(), 150);
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /products", 2)])
    );

    // Repeated ids are asked once: 100 distinct ids are one call.
    h.sandbox.reset_requests();
    let mut repeated = product_ids(1..=100);
    repeated.extend(product_ids(1..=50));
    let products = h.ports.backend.products_by_ids(&repeated).await.unwrap();
    assert_eq!(products.len(), 100);
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /products", 1)])
    );

    // No ids, no call.
    h.sandbox.reset_requests();
    assert!(
        h.ports
            .backend
            .products_by_ids(&[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.requests(Upstream::Backend).is_empty());
}

#[tokio::test]
async fn a_customers_orders_page_newest_first_with_item_id_cursors() {
    let h = harness(quiet()).await;
    let ada = customer(ADA);
    let ids = |page: &resolvers::records::Page<resolvers::records::OrderRecord>| {
        page.items
            .iter()
            .map(|o| o.id.as_str().to_owned())
            .collect::<Vec<_>>()
    };

    let mut query = OrderPageQuery {
        limit: 5,
        after: None,
        status: None,
    };
    let first = h
        .ports
        .backend
        .orders_of_customer(&ada, &query)
        .await
        .unwrap();
    assert_eq!(
        ids(&first),
        [
            "ord-019801",
            "ord-018001",
            "ord-016201",
            "ord-014401",
            "ord-012601"
        ]
    );
    // The next cursor is the id of the page's last item.
    assert_eq!(first.next_cursor.as_deref(), Some("ord-012601"));

    query.after = first.next_cursor.clone();
    let second = h
        .ports
        .backend
        .orders_of_customer(&ada, &query)
        .await
        .unwrap();
    assert_eq!(
        ids(&second),
        [
            "ord-010801",
            "ord-009001",
            "ord-007201",
            "ord-005401",
            "ord-003601"
        ]
    );
    assert_eq!(second.next_cursor.as_deref(), Some("ord-003601"));
    // Any item's id is a cursor, not only a page's last one.
    query.after = Some("ord-009001".to_owned());
    let middle = h
        .ports
        .backend
        .orders_of_customer(&ada, &query)
        .await
        .unwrap();
    assert_eq!(ids(&middle)[0], "ord-007201");
    query.after = second.next_cursor.clone();
    let last = h
        .ports
        .backend
        .orders_of_customer(&ada, &query)
        .await
        .unwrap();
    assert_eq!(ids(&last), ["ord-001801", "ord-000001"]);
    assert_eq!(last.next_cursor, None);

    let shipped = h
        .ports
        .backend
        .orders_of_customer(
            &ada,
            &OrderPageQuery {
                limit: 10,
                after: None,
                status: Some(OrderStatus::Shipped),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&shipped),
        [
            "ord-016201",
            "ord-012601",
            "ord-007201",
            "ord-003601",
            "ord-000001"
        ]
    );
    assert_eq!(shipped.next_cursor, None);
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /customers/{id}/orders", 5)])
    );

    let error = h
        .ports
        .backend
        .orders_of_customer(
            &ada,
            &OrderPageQuery {
                limit: 5,
                after: Some("ord-999999".to_owned()),
                status: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.source, Source::Backend);
    assert_eq!(rejection(&error).0, "BAD_CURSOR");
}

#[tokio::test]
async fn customer_search_pages_by_id() {
    let h = harness(quiet()).await;

    let found = h
        .ports
        .backend
        .search_customers(Some("LOVELACE"), 20, None)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].id.as_str(), ADA);
    assert_eq!(found.next_cursor, None);

    let first = h
        .ports
        .backend
        .search_customers(None, 2, None)
        .await
        .unwrap();
    let ids: Vec<&str> = first.items.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cust-0001", "cust-0002"]);
    assert_eq!(first.next_cursor.as_deref(), Some("cust-0002"));
    let next = h
        .ports
        .backend
        .search_customers(None, 2, first.next_cursor.as_deref())
        .await
        .unwrap();
    let ids: Vec<&str> = next.items.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cust-0003", "cust-0004"]);
    assert_eq!(h.count(Upstream::Backend, "GET /customers"), 3);
}

#[tokio::test]
async fn an_order_is_placed_cancelled_once_and_never_retried() {
    let h = harness(quiet()).await;
    let lines = [
        NewOrderLine {
            product_id: product("prod-0001"),
            quantity: 2,
        },
        NewOrderLine {
            product_id: product("prod-0003"),
            quantity: 1,
        },
    ];

    let placed = h
        .ports
        .backend
        .place_order(&customer(ADA), &lines)
        .await
        .unwrap();
    assert_eq!(placed.id.as_str(), "ord-020001");
    assert_eq!(placed.customer_id.as_str(), ADA);
    assert_eq!(placed.status, OrderStatus::Confirmed);
    assert_eq!(placed.lines.len(), 2);
    assert_eq!(placed.lines[1].product_id.as_str(), "prod-0003");
    assert_eq!(placed.lines[1].unit_price.minor_units, 1999);
    assert_eq!(placed.total.minor_units, 2 * 8999 + 1999);
    assert!(placed.shipment.is_none());

    let cancelled = h.ports.backend.cancel_order(&placed.id).await.unwrap();
    assert_eq!(cancelled.id, placed.id);
    assert_eq!(cancelled.status, OrderStatus::Cancelled);

    let again = h.ports.backend.cancel_order(&placed.id).await.unwrap_err();
    assert_eq!(again.source, Source::Backend);
    assert_eq!(rejection(&again).0, "NOT_CANCELLABLE");
    assert!(!rejection(&again).1.is_empty());

    let shipped = h
        .ports
        .backend
        .cancel_order(&order("ord-000001"))
        .await
        .unwrap_err();
    assert_eq!(rejection(&shipped).0, "NOT_CANCELLABLE");

    let unknown = h
        .ports
        .backend
        .cancel_order(&order("ord-999999"))
        .await
        .unwrap_err();
    assert!(matches!(unknown.kind, UpstreamErrorKind::NotFound));

    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("POST /orders", 1), ("POST /orders/{id}/cancel", 4)])
    );
}

#[tokio::test]
async fn order_refusals_keep_the_backends_codes() {
    let h = harness(quiet()).await;
    let line = |id: &str, quantity: u32| NewOrderLine {
        product_id: product(id),
        quantity,
    };
    let place = |who: &'static str, lines: Vec<NewOrderLine>| {
        let backend = h.ports.backend.clone();
        async move {
            backend
                .place_order(&customer(who), &lines)
                .await
                .unwrap_err()
        }
    };

    let cases = [
        (
            place(ADA, vec![line("prod-9999", 1)]).await,
            "UNKNOWN_PRODUCT",
        ),
        (
            place(ADA, vec![line("prod-0001", 0)]).await,
            "INVALID_QUANTITY",
        ),
        (
            place(ADA, vec![line("prod-0001", 100)]).await,
            "INVALID_QUANTITY",
        ),
        (
            place("cust-9999", vec![line("prod-0001", 1)]).await,
            "UNKNOWN_CUSTOMER",
        ),
        (place(ADA, vec![]).await, "EMPTY_ORDER"),
    ];
    for (error, code) in &cases {
        assert_eq!(error.source, Source::Backend);
        let (actual, message) = rejection(error);
        assert_eq!(actual, *code);
        assert!(!message.is_empty());
    }

    // Some seeded product is out of stock; find one with a 500-id read (5 calls).
    h.sandbox.reset_requests();
    let all = h
        .ports
        .backend
        .products_by_ids(&product_ids(1..=500))
        .await
        .unwrap();
    assert_eq!(all.len(), 500);
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /products", 5)])
    );
    let sold_out = all
        .iter()
        .find(|p| !p.in_stock)
        .expect("a product is out of stock");
    let error = place(ADA, vec![line(sold_out.id.as_str(), 1)]).await;
    assert_eq!(rejection(&error).0, "OUT_OF_STOCK");
}

// ----- CRM ------------------------------------------------------------------------------------

#[tokio::test]
async fn one_crm_token_serves_many_concurrent_calls() {
    let h = harness(quiet()).await;

    let calls = (1..=20).map(|n| {
        let crm = h.ports.crm.clone();
        async move {
            crm.contacts_by_customer_ids(&[customer(&format!("cust-{n:04}"))])
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;

    for (n, answer) in answers.into_iter().enumerate() {
        let contacts = answer.unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(
            contacts[0].customer_id.as_str(),
            format!("cust-{:04}", n + 1)
        );
    }
    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 1),
            ("GET /services/data/{version}/query", 20),
        ])
    );

    let ada = h
        .ports
        .crm
        .contacts_by_customer_ids(&[customer(ADA), customer("cust-9999")])
        .await
        .unwrap();
    assert_eq!(ada.len(), 1);
    assert_eq!(ada[0].id, ADA_CONTACT);
    assert_eq!(ada[0].customer_id.as_str(), ADA);
}

#[tokio::test]
async fn an_expired_crm_token_is_renewed_and_the_call_sent_once_more() {
    let h = harness(SandboxConfig {
        crm_token_ttl_secs: 1,
        ..quiet()
    })
    .await;
    let ada = [customer(ADA)];

    assert_eq!(
        h.ports
            .crm
            .contacts_by_customer_ids(&ada)
            .await
            .unwrap()
            .len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        h.ports
            .crm
            .contacts_by_customer_ids(&ada)
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 2),
            // The first call, the one refused with 401, and its repeat.
            ("GET /services/data/{version}/query", 3),
        ])
    );
}

#[tokio::test]
async fn a_token_that_never_works_is_unavailable_after_one_renewal() {
    let h = harness(SandboxConfig {
        crm_token_ttl_secs: 0,
        ..quiet()
    })
    .await;

    let error = h
        .ports
        .crm
        .contacts_by_customer_ids(&[customer(ADA)])
        .await
        .unwrap_err();

    assert_eq!(error.source, Source::Crm);
    let detail = unavailable_detail(&error);
    assert!(detail.contains("401"), "{detail}");
    assert!(!detail.contains("sandbox-crm-secret"), "{detail}");
    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 2),
            ("GET /services/data/{version}/query", 2),
        ])
    );
}

#[tokio::test]
async fn soql_answers_are_followed_through_next_records_url() {
    let h = harness(SandboxConfig {
        crm_batch_size: 2,
        ..quiet()
    })
    .await;

    let cases = h
        .ports
        .crm
        .cases_by_customer_ids(&[customer(ADA)], &ALL_CASES)
        .await
        .unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    // Newest first.
    assert_eq!(
        ids,
        [
            "500000000000002AAA",
            "500000000000001AAA",
            "500000000000003AAA"
        ]
    );
    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 1),
            ("GET /services/data/{version}/query", 1),
            ("GET /services/data/{version}/query/{locator}", 1),
        ])
    );

    h.sandbox.reset_requests();
    let case_ids: Vec<CaseId> = cases.iter().map(|c| c.id.clone()).collect();
    let comments = h.ports.crm.comments_by_case_ids(&case_ids).await.unwrap();
    let bodies: Vec<(&str, &str)> = comments
        .iter()
        .map(|c| (c.case_id.as_str(), c.body.as_str()))
        .collect();
    assert_eq!(
        bodies,
        [
            (
                "500000000000003AAA",
                "I cancelled my order but have not seen the refund yet."
            ),
            (
                "500000000000003AAA",
                "The refund was issued today; it takes 3-5 business days."
            ),
            ("500000000000003AAA", "Refund reference RF-20250904-118."),
            (
                "500000000000001AAA",
                "The tracking page says delivery exception. Can you help?"
            ),
            (
                "500000000000001AAA",
                "We have asked ParcelCo to attempt delivery again tomorrow."
            ),
            (
                "500000000000002AAA",
                "Please deliver to 1 Poultry, London EC2R 8EJ from January on."
            ),
        ]
    );
    assert!(!comments[2].is_published, "the agent's internal note");
    assert!(comments[0].is_published);
    assert_eq!(comments[0].created_at, utc("2025-09-02T10:01:00Z"));
    // Six comments, two an answer: the query and two more batches.
    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("GET /services/data/{version}/query", 1),
            ("GET /services/data/{version}/query/{locator}", 2),
        ])
    );
}

#[tokio::test]
async fn open_cases_are_filtered_by_the_crm() {
    // One record per batch: how many batches the CRM sent is how many records it sent.
    let h = harness(SandboxConfig {
        crm_batch_size: 1,
        ..quiet()
    })
    .await;

    let open = h
        .ports
        .crm
        .cases_by_customer_ids(
            &[customer(ADA)],
            &CaseQuery {
                open_only: true,
                per_customer: 50,
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = open.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ADA_OPEN_CASES);
    // Two records, not Ada's three.
    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 1),
            ("GET /services/data/{version}/query", 1),
            ("GET /services/data/{version}/query/{locator}", 1),
        ])
    );
}

#[tokio::test]
async fn each_customer_gets_their_newest_cases_up_to_the_bound_in_one_query_mostly() {
    let h = harness(quiet()).await;
    let other = customer("cust-0002");
    let contact = h
        .ports
        .crm
        .contacts_by_customer_ids(std::slice::from_ref(&other))
        .await
        .unwrap()
        .remove(0)
        .id;
    let mut created = Vec::new();
    for i in 0..7 {
        let id = h
            .ports
            .crm
            .create_case(&NewCase {
                contact_id: contact.clone(),
                subject: format!("Question {i}"),
                description: None,
                priority: CasePriority::Low,
                order_id: None,
            })
            .await
            .unwrap();
        created.push(id.as_str().to_owned());
    }
    let newest_three: Vec<&str> = created.iter().rev().take(3).map(String::as_str).collect();
    let open_three = CaseQuery {
        open_only: true,
        per_customer: 3,
    };

    // That customer alone: one query, bounded.
    h.sandbox.reset_requests();
    let cases = h
        .ports
        .crm
        .cases_by_customer_ids(std::slice::from_ref(&other), &open_three)
        .await
        .unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, newest_three);
    assert_eq!(
        h.count(Upstream::Crm, "GET /services/data/{version}/query"),
        1
    );

    // With Ada in the batch: the bounded query is all the other customer's new cases, and
    // Ada's are read on their own; each customer gets their newest, at most three.
    h.sandbox.reset_requests();
    let cases = h
        .ports
        .crm
        .cases_by_customer_ids(&[other, customer(ADA)], &open_three)
        .await
        .unwrap();
    let of = |who: &str| -> Vec<&str> {
        cases
            .iter()
            .filter(|c| c.customer_id.as_str() == who)
            .map(|c| c.id.as_str())
            .collect()
    };
    assert_eq!(of("cust-0002"), newest_three);
    assert_eq!(of(ADA), ADA_OPEN_CASES);
    assert_eq!(
        h.count(Upstream::Crm, "GET /services/data/{version}/query"),
        2
    );
}

#[tokio::test]
async fn cases_carry_the_customer_of_their_contact() {
    let h = harness(quiet()).await;

    let cases = h
        .ports
        .crm
        .cases_by_customer_ids(
            &[customer(ADA), customer("cust-0002"), customer("cust-0003")],
            &ALL_CASES,
        )
        .await
        .unwrap();
    let ada: Vec<_> = cases
        .iter()
        .filter(|c| c.customer_id.as_str() == ADA)
        .collect();
    assert_eq!(ada.len(), 3);
    assert!(
        cases
            .iter()
            .all(|c| ["cust-0001", "cust-0002", "cust-0003"].contains(&c.customer_id.as_str()))
    );
    assert_eq!(
        h.count(Upstream::Crm, "GET /services/data/{version}/query"),
        1
    );

    let by_id = h
        .ports
        .crm
        .cases_by_ids(&[case("500000000000001AAA"), case("500000000000003AAA")])
        .await
        .unwrap();
    assert_eq!(by_id.len(), 2);
    let parcel = by_id
        .iter()
        .find(|c| c.id.as_str() == "500000000000001AAA")
        .unwrap();
    assert_eq!(parcel.case_number, "00001001");
    assert_eq!(parcel.subject, "Where is my parcel?");
    assert_eq!(
        parcel.description.as_deref(),
        Some("Tracking for ord-012601 shows a delivery exception.")
    );
    assert_eq!(parcel.status, CaseStatus::Working);
    assert_eq!(parcel.priority, CasePriority::High);
    assert_eq!(parcel.origin.as_deref(), Some("App"));
    assert_eq!(parcel.customer_id.as_str(), ADA);
    assert_eq!(
        parcel.order_id.as_ref().map(OrderId::as_str),
        Some("ord-012601")
    );
    assert_eq!(parcel.created_at, utc("2025-12-20T09:15:00Z"));
    assert_eq!(parcel.closed_at, None);
    let refund = by_id
        .iter()
        .find(|c| c.id.as_str() == "500000000000003AAA")
        .unwrap();
    assert_eq!(refund.status, CaseStatus::Closed);
    assert_eq!(refund.priority, CasePriority::Medium);
    assert_eq!(refund.closed_at, Some(utc("2025-09-04T15:30:00Z")));
    assert_eq!(refund.order_id, None);
}

#[tokio::test]
async fn a_case_and_its_comment_are_created_and_read_back() {
    let h = harness(quiet()).await;

    let id = h
        .ports
        .crm
        .create_case(&NewCase {
            contact_id: ADA_CONTACT.to_owned(),
            subject: "Zip broke on day one".to_owned(),
            description: Some("The zip of my daypack broke. It's \"new\" \\ 'unused'.".to_owned()),
            priority: CasePriority::High,
            order_id: Some(order("ord-019801")),
        })
        .await
        .unwrap();
    assert_eq!(id.as_str(), "500000000001501AAA");

    let read = h
        .ports
        .crm
        .cases_by_ids(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let created = &read[0];
    assert_eq!(created.case_number, "00002501");
    assert_eq!(created.subject, "Zip broke on day one");
    assert_eq!(
        created.description.as_deref(),
        Some("The zip of my daypack broke. It's \"new\" \\ 'unused'.")
    );
    assert_eq!(created.status, CaseStatus::New);
    assert_eq!(created.priority, CasePriority::High);
    assert_eq!(created.origin.as_deref(), Some("App"));
    assert_eq!(created.customer_id.as_str(), ADA);
    assert_eq!(
        created.order_id.as_ref().map(OrderId::as_str),
        Some("ord-019801")
    );
    assert_eq!(created.closed_at, None);
    assert!((Utc::now() - created.created_at).num_seconds().abs() < 60);

    let comment_id = h
        .ports
        .crm
        .add_comment(&id, "Photos attached in the app.")
        .await
        .unwrap();
    assert!(
        comment_id.starts_with("00a") && comment_id.len() == 18,
        "{comment_id}"
    );
    let comments = h
        .ports
        .crm
        .comments_by_case_ids(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].id, comment_id);
    assert_eq!(comments[0].case_id, id);
    assert_eq!(comments[0].body, "Photos attached in the app.");
    assert!(comments[0].is_published);

    let gone = h
        .ports
        .crm
        .add_comment(&case("500999999999999AAA"), "Hello?")
        .await
        .unwrap_err();
    assert_eq!(gone.source, Source::Crm);
    assert!(matches!(gone.kind, UpstreamErrorKind::NotFound), "{gone:?}");

    assert_eq!(
        h.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 1),
            ("POST /services/data/{version}/sobjects/{sobject}", 3),
            ("GET /services/data/{version}/query", 2),
        ])
    );
}

#[tokio::test]
async fn a_spent_crm_quota_is_rate_limited_and_usage_is_readable() {
    let sandbox = Sandbox::start(SandboxConfig {
        crm_daily_api_limit: 3,
        ..quiet()
    })
    .await
    .unwrap();
    let crm = CrmClient::new(&configs(&sandbox, &test_policy()).crm).unwrap();
    let port: &dyn resolvers::ports::Crm = &crm;
    let ada = [customer(ADA)];

    assert_eq!(crm.api_usage(), None);
    port.contacts_by_customer_ids(&ada).await.unwrap();
    assert_eq!(crm.api_usage(), Some(ApiUsage { used: 1, max: 3 }));
    port.contacts_by_customer_ids(&ada).await.unwrap();
    port.contacts_by_customer_ids(&ada).await.unwrap();
    assert_eq!(crm.api_usage(), Some(ApiUsage { used: 3, max: 3 }));
    assert_eq!(crm.api_usage().unwrap().percent(), 100);

    let error = port.contacts_by_customer_ids(&ada).await.unwrap_err();
    assert_eq!(error.source, Source::Crm);
    assert!(
        matches!(error.kind, UpstreamErrorKind::RateLimited { .. }),
        "{error:?}"
    );
    assert_eq!(
        sandbox.requests(Upstream::Crm),
        counts(&[
            ("POST /services/oauth2/token", 1),
            ("GET /services/data/{version}/query", 4),
        ])
    );
}

// ----- process server -------------------------------------------------------------------------

#[tokio::test]
async fn a_return_goes_from_agent_approval_to_customer_pickup() {
    let h = harness(quiet()).await;
    let process = &h.ports.process;

    let id = process
        .start_return(&customer(ADA), &order("ord-000001"), "Too small")
        .await
        .unwrap();
    assert_eq!(id, 301);
    let started = process.process_instance(id).await.unwrap().unwrap();
    assert_eq!(started.id, 301);
    assert_eq!(started.process_id, "returns.ReturnRequest");
    assert_eq!(started.process_name, "Return request");
    assert_eq!(started.state, ProcessState::Active);
    assert_eq!(
        started.customer_id.as_ref().map(CustomerId::as_str),
        Some(ADA)
    );
    assert_eq!(
        started.order_id.as_ref().map(OrderId::as_str),
        Some("ord-000001")
    );
    assert_eq!(started.reason.as_deref(), Some("Too small"));
    assert_eq!(started.outcome, None);
    let started_at = started.started_at.unwrap();
    assert!((Utc::now() - started_at).num_seconds().abs() < 60);

    // The agent sees the approval task.
    let agent_tasks = process.tasks_for_user("agent-01").await.unwrap();
    let approve = agent_tasks
        .iter()
        .find(|t| t.process_instance_id == id)
        .expect("the agent sees the new approval task");
    assert_eq!(approve.name, "ApproveReturn");
    assert_eq!(approve.status, TaskStatus::Ready);
    assert_eq!(approve.actual_owner, None);
    assert_eq!(approve.container_id, "returns");
    assert_eq!(approve.customer_id, None, "list reads carry no input data");
    assert!(agent_tasks.iter().all(|t| matches!(
        t.status,
        TaskStatus::Ready | TaskStatus::Reserved | TaskStatus::InProgress
    )));

    let mut approved = Map::new();
    approved.insert("approved".into(), json!(true));
    approved.insert("comment".into(), json!("Approved, pickup arranged."));
    process
        .complete_task(approve.id, "agent-01", &approved)
        .await
        .unwrap();
    let done = process.task(approve.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.actual_owner.as_deref(), Some("agent-01"));

    // Now the customer confirms the pickup.
    let customer_tasks = process.tasks_for_user(ADA).await.unwrap();
    let pickup = customer_tasks
        .iter()
        .find(|t| t.process_instance_id == id)
        .expect("the customer sees the pickup task");
    assert_eq!(pickup.name, "ConfirmPickup");
    assert_eq!(pickup.status, TaskStatus::Ready);
    let pickup = process.task(pickup.id).await.unwrap().unwrap();
    assert_eq!(
        pickup.customer_id.as_ref().map(CustomerId::as_str),
        Some(ADA)
    );
    assert_eq!(
        pickup.description.as_deref(),
        Some("Hand the parcel of ord-000001 to the courier")
    );
    assert_eq!(pickup.process_instance_id, id);

    process
        .complete_task(pickup.id, ADA, &Map::new())
        .await
        .unwrap();
    let finished = process.process_instance(id).await.unwrap().unwrap();
    assert_eq!(finished.state, ProcessState::Completed);
    assert_eq!(finished.outcome.as_deref(), Some("picked-up"));
    assert_eq!(finished.started_at, Some(started_at));

    let returns = process.returns_of_customer(&customer(ADA)).await.unwrap();
    let ids: Vec<i64> = returns.iter().map(|r| r.id).collect();
    assert_eq!(ids, [301, 1, 2], "newest first");

    assert_eq!(
        h.requests(Upstream::Process),
        counts(&[
            (
                "POST /kie-server/services/rest/server/containers/{container}/processes/{process}/instances",
                1
            ),
            (
                "GET /kie-server/services/rest/server/queries/processes/instances/{id}",
                2
            ),
            (
                "GET /kie-server/services/rest/server/queries/tasks/instances/pot-owners",
                2
            ),
            (
                "GET /kie-server/services/rest/server/containers/{container}/tasks/{task}",
                2
            ),
            (
                "PUT /kie-server/services/rest/server/containers/{container}/tasks/{task}/states/completed",
                2
            ),
            (
                "GET /kie-server/services/rest/server/queries/processes/instances/variables/{name}",
                1
            ),
        ])
    );
}

#[tokio::test]
async fn a_customers_returns_come_newest_first_with_their_outcome() {
    let h = harness(quiet()).await;

    let returns = h
        .ports
        .process
        .returns_of_customer(&customer(ADA))
        .await
        .unwrap();

    assert_eq!(returns.len(), 2);
    assert_eq!(returns[0].id, 1);
    assert_eq!(returns[0].state, ProcessState::Active);
    assert_eq!(returns[0].reason.as_deref(), Some("Item arrived damaged"));
    assert_eq!(
        returns[0].order_id.as_ref().map(OrderId::as_str),
        Some("ord-010801")
    );
    assert_eq!(returns[0].started_at, Some(utc("2025-12-29T14:00:00Z")));
    assert_eq!(returns[0].outcome, None);
    assert_eq!(returns[1].id, 2);
    assert_eq!(returns[1].state, ProcessState::Completed);
    assert_eq!(returns[1].outcome.as_deref(), Some("rejected"));
    assert_eq!(returns[1].reason.as_deref(), Some("Changed my mind"));
}

#[tokio::test]
async fn only_a_potential_owner_may_claim_a_task() {
    let h = harness(quiet()).await;
    let process = &h.ports.process;
    // Ada's first return waits for her to confirm the pickup.
    let pickup = process
        .tasks_for_user(ADA)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.process_instance_id == 1)
        .expect("Ada's pickup task");
    assert_eq!(pickup.name, "ConfirmPickup");

    for stranger in ["cust-0002", "agent-01"] {
        let error = process.claim_task(pickup.id, stranger).await.unwrap_err();
        assert_eq!(error.source, Source::Process);
        let (code, message) = rejection(&error);
        assert_eq!(code, "TASK_NOT_AVAILABLE");
        assert_eq!(
            message,
            "this task cannot be claimed or completed by you in its current state"
        );
    }
    let error = process
        .complete_task(pickup.id, "cust-0002", &Map::new())
        .await
        .unwrap_err();
    assert_eq!(rejection(&error).0, "TASK_NOT_AVAILABLE");

    process.claim_task(pickup.id, ADA).await.unwrap();
    let claimed = process.task(pickup.id).await.unwrap().unwrap();
    assert_eq!(claimed.status, TaskStatus::Reserved);
    assert_eq!(claimed.actual_owner.as_deref(), Some(ADA));
    // Claimed is not claimable again, not even by its owner.
    let error = process.claim_task(pickup.id, ADA).await.unwrap_err();
    assert_eq!(rejection(&error).0, "TASK_NOT_AVAILABLE");

    let unknown = process.claim_task(999_999, ADA).await.unwrap_err();
    assert!(
        matches!(unknown.kind, UpstreamErrorKind::NotFound),
        "{unknown:?}"
    );
    assert!(process.task(999_999).await.unwrap().is_none());
    assert!(process.process_instance(999_999).await.unwrap().is_none());
}

// ----- carrier --------------------------------------------------------------------------------

#[tokio::test]
async fn a_parcel_is_tracked_and_an_unknown_one_is_none() {
    let h = harness(quiet()).await;

    let tracking = h.ports.carrier.track("PC100000001").await.unwrap().unwrap();
    assert_eq!(tracking.tracking_number, "PC100000001");
    assert_eq!(tracking.carrier, "PARCELCO");
    assert_eq!(tracking.status, ShipmentStatus::InTransit);
    assert_eq!(
        tracking.estimated_delivery,
        Some(utc("2024-05-03T18:00:00Z"))
    );
    let events: Vec<(DateTime<Utc>, ShipmentStatus)> = tracking
        .events
        .iter()
        .map(|e| (e.timestamp, e.status))
        .collect();
    assert_eq!(
        events,
        [
            (utc("2024-05-02T14:00:00Z"), ShipmentStatus::InTransit),
            (utc("2024-05-02T04:00:00Z"), ShipmentStatus::InTransit),
            (utc("2024-05-01T18:00:00Z"), ShipmentStatus::LabelCreated),
        ],
        "newest first"
    );
    assert_eq!(tracking.events[2].location, "Warehouse, Leipzig, DE");
    assert_eq!(tracking.events[2].description, "Shipping label created");

    assert!(
        h.ports
            .carrier
            .track("PC199999999")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 2)])
    );
}

#[tokio::test]
async fn a_rate_limited_carrier_is_waited_out_once() {
    let h = harness(SandboxConfig {
        carrier_rate_per_sec: 1,
        ..quiet()
    })
    .await;

    let started = Instant::now();
    let first = h.ports.carrier.track("PC100000001").await.unwrap();
    let second = h.ports.carrier.track("PC100003601").await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(first.unwrap().tracking_number, "PC100000001");
    assert_eq!(second.unwrap().status, ShipmentStatus::OutForDelivery);
    // The second call got 429 `Retry-After: 1`, waited a second and was sent again.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 3)])
    );
}

#[tokio::test]
async fn a_carrier_wait_longer_than_allowed_is_rate_limited() {
    let h = harness_with(
        SandboxConfig {
            carrier_rate_per_sec: 1,
            ..quiet()
        },
        test_policy(),
        |c| c.carrier.max_retry_after_secs = 0,
    )
    .await;

    assert!(
        h.ports
            .carrier
            .track("PC100000001")
            .await
            .unwrap()
            .is_some()
    );
    let started = Instant::now();
    let error = h.ports.carrier.track("PC100003601").await.unwrap_err();

    assert_eq!(error.source, Source::Carrier);
    assert!(
        matches!(error.kind, UpstreamErrorKind::RateLimited { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 2)])
    );
}

// ----- failures -------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_upstream_is_unavailable_after_its_retries_and_writes_are_sent_once() {
    let policy = CallPolicy {
        retries: 2,
        ..test_policy()
    };
    let h = harness_with(
        SandboxConfig {
            backend: knobs(|k| k.error_rate = 1.0),
            ..quiet()
        },
        policy,
        |_| {},
    )
    .await;

    let error = h
        .ports
        .backend
        .products_by_ids(&[product("prod-0001")])
        .await
        .unwrap_err();
    assert_eq!(error.source, Source::Backend);
    let detail = unavailable_detail(&error);
    assert!(detail.starts_with("GET /products: 503"), "{detail}");
    assert!(detail.contains("after 3 tries"), "{detail}");
    assert!(
        !detail.contains("prod-0001"),
        "no query string in details: {detail}"
    );
    assert!(!detail.contains("sandbox-backend-token"), "{detail}");
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /products", 3)])
    );

    let error = h
        .ports
        .backend
        .place_order(
            &customer(ADA),
            &[NewOrderLine {
                product_id: product("prod-0001"),
                quantity: 1,
            }],
        )
        .await
        .unwrap_err();
    assert!(unavailable_detail(&error).starts_with("POST /orders: 503"));
    assert_eq!(h.count(Upstream::Backend, "POST /orders"), 1);
}

#[tokio::test]
async fn a_stalled_upstream_times_out_quickly() {
    let policy = CallPolicy {
        timeout: Duration::from_millis(200),
        retries: 1,
        concurrency: 4,
        ..CallPolicy::default()
    };
    let h = harness_with(
        SandboxConfig {
            carrier: knobs(|k| k.timeout_rate = 1.0),
            ..quiet()
        },
        policy,
        |_| {},
    )
    .await;

    let started = Instant::now();
    let error = h.ports.carrier.track("PC100000001").await.unwrap_err();
    let elapsed = started.elapsed();

    assert_eq!(error.source, Source::Carrier);
    let detail = unavailable_detail(&error);
    assert!(detail.contains("timed out"), "{detail}");
    // Two tries of 200 ms and a 50 ms backoff.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 2)])
    );
}

#[tokio::test]
async fn a_malformed_answer_is_unavailable_and_not_retried() {
    let h = harness(SandboxConfig {
        backend: knobs(|k| k.malformed_rate = 1.0),
        process: knobs(|k| k.malformed_rate = 1.0),
        ..quiet()
    })
    .await;

    let error = h
        .ports
        .backend
        .customers_by_ids(&[customer(ADA)])
        .await
        .unwrap_err();
    let detail = unavailable_detail(&error);
    assert!(
        detail.starts_with("GET /customers: 200 OK: malformed answer"),
        "{detail}"
    );
    assert_eq!(
        h.requests(Upstream::Backend),
        counts(&[("GET /customers", 1)])
    );

    let error = h.ports.process.process_instance(1).await.unwrap_err();
    assert_eq!(error.source, Source::Process);
    unavailable_detail(&error);
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    // A port nobody listens on: bind one, learn its number, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let h = harness_with(quiet(), test_policy(), |c| {
        c.carrier.url = Url::parse(&closed).unwrap();
    })
    .await;

    let error = h.ports.carrier.track("PC100000001").await.unwrap_err();

    assert_eq!(error.source, Source::Carrier);
    let detail = unavailable_detail(&error);
    assert!(detail.contains("could not connect"), "{detail}");
    assert!(detail.contains("after 2 tries"), "{detail}");
}

#[tokio::test]
async fn wrong_credentials_are_unavailable_without_leaking_them() {
    let h = harness_with(quiet(), test_policy(), |c| {
        c.backend.token = Secret::new("wrong-backend-token");
        c.crm.client_secret = Secret::new("wrong-crm-secret");
        c.process.password = Secret::new("wrong-kie-password");
        c.carrier.api_key = Secret::new("wrong-carrier-key");
    })
    .await;
    let ada = customer(ADA);

    let errors = [
        h.ports
            .backend
            .customers_by_ids(std::slice::from_ref(&ada))
            .await
            .unwrap_err(),
        h.ports
            .crm
            .contacts_by_customer_ids(std::slice::from_ref(&ada))
            .await
            .unwrap_err(),
        h.ports.process.process_instance(1).await.unwrap_err(),
        h.ports.carrier.track("PC100000001").await.unwrap_err(),
    ];

    for error in &errors {
        let detail = unavailable_detail(error);
        assert!(detail.contains("40"), "a 4xx status is named: {detail}");
        assert!(!detail.contains("wrong-"), "a credential leaked: {detail}");
    }
    assert_eq!(
        errors.iter().map(|e| e.source).collect::<Vec<_>>(),
        [
            Source::Backend,
            Source::Crm,
            Source::Process,
            Source::Carrier
        ]
    );
}

#[tokio::test]
async fn the_concurrency_budget_bounds_calls_in_flight() {
    let policy = CallPolicy {
        concurrency: 2,
        ..test_policy()
    };
    let h = harness_with(
        SandboxConfig {
            carrier: knobs(|k| k.latency_ms = 200),
            ..quiet()
        },
        policy,
        |_| {},
    )
    .await;

    // Six different parcels (unknown ones: the carrier answers 404 after its latency too).
    let numbers: Vec<String> = (0..6).map(|i| format!("PC19999999{i}")).collect();
    let started = Instant::now();
    let calls = numbers.iter().map(|n| h.ports.carrier.track(n));
    let answers = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();

    assert!(answers.iter().all(|a| matches!(a, Ok(None))));
    // Six calls of 200 ms, two at a time: three rounds.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_200), "{elapsed:?}");
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 6)])
    );
}

#[tokio::test]
async fn identical_reads_in_flight_at_once_are_sent_once() {
    let h = harness(SandboxConfig {
        carrier: knobs(|k| k.latency_ms = 200),
        ..quiet()
    })
    .await;

    let calls = (0..6).map(|_| h.ports.carrier.track("PC100000001"));
    let answers = futures::future::join_all(calls).await;
    for answer in &answers {
        let tracking = answer.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(tracking.tracking_number, "PC100000001");
    }
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 1)])
    );

    // Once it has landed, the next read is a call of its own; a different parcel too.
    h.ports.carrier.track("PC100000001").await.unwrap();
    let (same, other) = futures::join!(
        h.ports.carrier.track("PC100000001"),
        h.ports.carrier.track("PC100003601")
    );
    assert!(same.unwrap().is_some() && other.unwrap().is_some());
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 4)])
    );
}

#[tokio::test]
async fn a_call_waits_for_the_concurrency_budget_only_up_to_its_queue_timeout() {
    let policy = CallPolicy {
        concurrency: 1,
        queue_timeout: Duration::from_millis(100),
        ..test_policy()
    };
    let h = harness_with(
        SandboxConfig {
            carrier: knobs(|k| k.latency_ms = 500),
            ..quiet()
        },
        policy,
        |_| {},
    )
    .await;

    let started = Instant::now();
    let (first, second) = futures::join!(
        h.ports.carrier.track("PC100000001"),
        h.ports.carrier.track("PC100003601")
    );
    assert!(first.unwrap().is_some());
    let refused = second.unwrap_err();
    assert_eq!(refused.source, Source::Carrier);
    assert!(
        format!("{:?}", refused.kind).contains("queue_timeout_ms"),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1_000));
    // Only the first was sent.
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 1)])
    );
}

#[tokio::test]
async fn calls_made_for_a_request_stop_at_its_deadline() {
    let h = harness(SandboxConfig {
        carrier: knobs(|k| k.latency_ms = 3_000),
        ..quiet()
    })
    .await;

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    let answer = resolvers::deadline::within(deadline, h.ports.carrier.track("PC100000001")).await;
    let elapsed = started.elapsed();
    // Cut to what the request had left (less the time kept to answer), not the 5 s timeout,
    // and not retried: no time for another try.
    assert_eq!(answer.unwrap_err().source, Source::Carrier);
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_000), "{elapsed:?}");
    assert_eq!(
        h.requests(Upstream::Carrier),
        counts(&[("GET /v1/trackings/{tracking_number}", 1)])
    );
}

#[tokio::test]
async fn configs_no_client_can_use_are_refused_at_start() {
    let sandbox = Sandbox::start(quiet()).await.unwrap();
    let good = configs(&sandbox, &test_policy());

    let mut mailto = configs(&sandbox, &test_policy());
    mailto.backend.url = Url::parse("mailto:ops@example.com").unwrap();
    let mut bad_version = configs(&sandbox, &test_policy());
    bad_version.crm.api_version = "60".to_owned();
    let mut no_timeout = configs(&sandbox, &test_policy());
    no_timeout.carrier.policy.timeout = Duration::ZERO;

    let build = |c: &Configs| {
        switchyard::upstream::ports(
            &c.backend,
            &c.crm,
            &c.process,
            &c.carrier,
            std::sync::Arc::new(resolvers::cache::NoCache),
        )
        .err()
        .map(|e| e.to_string())
    };
    assert_eq!(build(&good), None);
    assert_eq!(
        build(&mailto).as_deref(),
        Some(
            "upstreams.backend.url must be an http(s) URL with a host, got mailto:ops@example.com"
        )
    );
    assert_eq!(
        build(&bad_version).as_deref(),
        Some("upstreams.crm.api_version must look like v60.0, got \"60\"")
    );
    assert_eq!(
        build(&no_timeout).as_deref(),
        Some("upstreams.carrier.policy.timeout_ms must be more than 0")
    );
}
