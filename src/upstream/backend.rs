//! The backend integration microservices (our own REST/JSON): customers, orders, products.
//!
//! A static bearer token; bulk reads by `ids` (at most 100 a call, so bigger batches are split
//! and sent concurrently); cursor paging where any item's id is a cursor; errors
//! `{"error":{"code","message"}}`, whose business codes (`OUT_OF_STOCK`, `NOT_CANCELLABLE`, ...)
//! become `Rejected` with the same code and the backend's own message (the backend is ours and
//! writes its messages for people).

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use resolvers::ids::{CustomerId, OrderId, ProductId};
use resolvers::ports::Source;
use resolvers::ports::{Backend, UpstreamResult};
use resolvers::ports::{UpstreamError, UpstreamErrorKind};
use resolvers::records::{
    AddressRecord, CustomerRecord, LoyaltyTier, NewOrderLine, OrderLineRecord, OrderPageQuery,
    OrderRecord, OrderStatus, Page, ProductRecord, ShipmentRef,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::{Answer, UpstreamHttp, check_base_url, endpoint};
use super::wire::{self, MoneyJson};
use crate::config::{BackendConfig, Secret};

/// Most ids the backend takes in one bulk read (400 `TOO_MANY_IDS` beyond).
const MAX_IDS_PER_CALL: usize = 100;
/// Largest page the backend answers.
const MAX_PAGE: usize = 100;

/// Business refusals the backend answers (422, 409, 400), as our codes, with the message shown
/// when the backend gives none.
const REFUSALS: [(&str, &str); 8] = [
    ("UNKNOWN_CUSTOMER", "the customer does not exist"),
    ("UNKNOWN_PRODUCT", "a product of the order does not exist"),
    ("OUT_OF_STOCK", "a product of the order is out of stock"),
    ("INVALID_QUANTITY", "a quantity must be between 1 and 99"),
    ("EMPTY_ORDER", "an order needs at least one line"),
    ("TOO_MANY_LINES", "the order has too many lines"),
    ("NOT_CANCELLABLE", "the order can no longer be cancelled"),
    ("BAD_CURSOR", "the cursor does not belong to this list"),
];

/// The backend's client.
pub(crate) struct BackendClient {
    pub(super) http: UpstreamHttp,
    /// Base URL, e.g. `https://backend.internal/api`; routes are appended to its path.
    base: Url,
    /// Sent as `Authorization: Bearer`.
    token: Secret,
}

impl std::fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl BackendClient {
    /// A client for the backend at `config.url`.
    pub(super) fn new(config: &BackendConfig) -> anyhow::Result<Self> {
        check_base_url("upstreams.backend.url", &config.url)?;
        Ok(Self {
            http: UpstreamHttp::new(Source::Backend, &config.policy)?,
            base: config.url.clone(),
            token: config.token.clone(),
        })
    }

    async fn call(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> UpstreamResult<Answer> {
        let request = request
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        self.http.send(route, request).await
    }

    async fn get(
        &self,
        route: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> UpstreamResult<Answer> {
        let url = endpoint(&self.base, segments);
        self.call(route, self.http.client().get(url).query(query))
            .await
    }

    /// A bulk read of `resource` (`customers`, `orders`, `products`): one call per 100 ids,
    /// all at once; unknown ids are simply absent.
    async fn bulk<W, R>(
        &self,
        route: &'static str,
        resource: &str,
        ids: &[&str],
        convert: fn(W) -> Result<R, String>,
    ) -> UpstreamResult<Vec<R>>
    where
        W: serde::de::DeserializeOwned,
    {
        let ids = distinct(ids);
        let calls = ids.chunks(MAX_IDS_PER_CALL).map(|chunk| async move {
            let joined = chunk.join(",");
            let answer = self.get(route, &[resource], &[("ids", &joined)]).await?;
            if answer.status != reqwest::StatusCode::OK {
                return Err(refusal(&answer));
            }
            let items: Items<W> = answer.json()?;
            items
                .items
                .into_iter()
                .map(|item| convert(item).map_err(|why| answer.malformed(why)))
                .collect::<UpstreamResult<Vec<R>>>()
        });
        Ok(try_join_all(calls).await?.into_iter().flatten().collect())
    }

    /// One page of a list: `items` and `nextCursor`.
    async fn page<W, R>(
        &self,
        route: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
        convert: fn(W) -> Result<R, String>,
    ) -> UpstreamResult<Page<R>>
    where
        W: serde::de::DeserializeOwned,
    {
        let answer = self.get(route, segments, query).await?;
        if answer.status != reqwest::StatusCode::OK {
            return Err(refusal(&answer));
        }
        let page: PageJson<W> = answer.json()?;
        let items = page
            .items
            .into_iter()
            .map(|item| convert(item).map_err(|why| answer.malformed(why)))
            .collect::<UpstreamResult<Vec<R>>>()?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// A write answering an order (`201`/`200`).
    async fn order_write(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> UpstreamResult<OrderRecord> {
        let answer = self.call(route, request).await?;
        if !matches!(
            answer.status,
            reqwest::StatusCode::OK | reqwest::StatusCode::CREATED
        ) {
            return Err(refusal(&answer));
        }
        order_record(answer.json()?).map_err(|why| answer.malformed(why))
    }
}

#[async_trait::async_trait]
impl Backend for BackendClient {
    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "CustomerLoader", keys = ids.len()))]
    async fn customers_by_ids(&self, ids: &[CustomerId]) -> UpstreamResult<Vec<CustomerRecord>> {
        let ids: Vec<&str> = ids.iter().map(CustomerId::as_str).collect();
        self.bulk("/customers", "customers", &ids, customer_record)
            .await
    }

    async fn search_customers(
        &self,
        search: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> UpstreamResult<Page<CustomerRecord>> {
        let limit = limit.clamp(1, MAX_PAGE).to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(search) = search {
            query.push(("search", search));
        }
        if let Some(after) = after {
            query.push(("cursor", after));
        }
        self.page("/customers", &["customers"], &query, customer_record)
            .await
    }

    async fn orders_of_customer(
        &self,
        customer: &CustomerId,
        page: &OrderPageQuery,
    ) -> UpstreamResult<Page<OrderRecord>> {
        let limit = page.limit.clamp(1, MAX_PAGE).to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(after) = &page.after {
            query.push(("cursor", after));
        }
        if let Some(status) = page.status {
            query.push(("status", wire::order_status_name(status)));
        }
        self.page(
            "/customers/{id}/orders",
            &["customers", customer.as_str(), "orders"],
            &query,
            order_record,
        )
        .await
    }

    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "OrderLoader", keys = ids.len()))]
    async fn orders_by_ids(&self, ids: &[OrderId]) -> UpstreamResult<Vec<OrderRecord>> {
        let ids: Vec<&str> = ids.iter().map(OrderId::as_str).collect();
        self.bulk("/orders", "orders", &ids, order_record).await
    }

    #[tracing::instrument(level = "debug", name = "batch", skip_all, fields(loader = "ProductLoader", keys = ids.len()))]
    async fn products_by_ids(&self, ids: &[ProductId]) -> UpstreamResult<Vec<ProductRecord>> {
        let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
        self.bulk("/products", "products", &ids, product_record)
            .await
    }

    async fn place_order(
        &self,
        customer: &CustomerId,
        lines: &[NewOrderLine],
    ) -> UpstreamResult<OrderRecord> {
        let body = NewOrderJson {
            customer_id: customer.as_str(),
            lines: lines
                .iter()
                .map(|line| NewOrderLineJson {
                    product_id: line.product_id.as_str(),
                    quantity: line.quantity,
                })
                .collect(),
        };
        let url = endpoint(&self.base, &["orders"]);
        self.order_write("/orders", self.http.client().post(url).json(&body))
            .await
    }

    async fn cancel_order(&self, id: &OrderId) -> UpstreamResult<OrderRecord> {
        let url = endpoint(&self.base, &["orders", id.as_str(), "cancel"]);
        self.order_write("/orders/{id}/cancel", self.http.client().post(url))
            .await
    }
}

/// Ids without repeats, in their first order.
fn distinct<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// What a non-success answer means: not found, a business refusal, or a failure.
fn refusal(answer: &Answer) -> UpstreamError {
    use reqwest::StatusCode as S;
    let kind = match answer.status {
        S::NOT_FOUND => UpstreamErrorKind::NotFound,
        S::TOO_MANY_REQUESTS => UpstreamErrorKind::RateLimited {
            detail: format!("backend answered {}", answer.status),
        },
        S::BAD_REQUEST | S::CONFLICT | S::UNPROCESSABLE_ENTITY => {
            let Some((code, message)) = business_refusal(answer) else {
                return answer.unexpected();
            };
            UpstreamErrorKind::Rejected { code, message }
        }
        // 401/403 (our token refused) and anything else the contract does not foresee.
        _ => return answer.unexpected(),
    };
    UpstreamError {
        source: Source::Backend,
        kind,
    }
}

/// The known business refusal in an error body: our code and a message for people.
fn business_refusal(answer: &Answer) -> Option<(&'static str, String)> {
    let body: ErrorJson = serde_json::from_slice(&answer.body).ok()?;
    let (code, fallback) = REFUSALS.iter().find(|(code, _)| *code == body.error.code)?;
    let message = body
        .error
        .message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| (*fallback).to_owned());
    Some((code, message))
}

// ----- wire types (the backend's JSON) --------------------------------------------------------

#[derive(Deserialize)]
struct ErrorJson {
    error: ErrorDetailJson,
}

#[derive(Deserialize)]
struct ErrorDetailJson {
    code: String,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageJson<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerJson {
    id: String,
    first_name: String,
    last_name: String,
    email: String,
    phone: Option<String>,
    loyalty_tier: LoyaltyTier,
    created_at: DateTime<Utc>,
    address: Option<AddressJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressJson {
    line1: String,
    city: String,
    postal_code: String,
    country: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductJson {
    id: String,
    sku: String,
    name: String,
    description: Option<String>,
    category: String,
    price: MoneyJson,
    in_stock: bool,
    image_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderJson {
    id: String,
    customer_id: String,
    status: OrderStatus,
    placed_at: DateTime<Utc>,
    lines: Vec<OrderLineJson>,
    total: MoneyJson,
    shipment: Option<ShipmentJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderLineJson {
    line_no: u32,
    product_id: String,
    quantity: u32,
    unit_price: MoneyJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShipmentJson {
    carrier: String,
    tracking_number: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderJson<'a> {
    customer_id: &'a str,
    lines: Vec<NewOrderLineJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderLineJson<'a> {
    product_id: &'a str,
    quantity: u32,
}

fn customer_record(c: CustomerJson) -> Result<CustomerRecord, String> {
    wire::non_empty("customer id", &c.id)?;
    Ok(CustomerRecord {
        id: CustomerId::from_upstream(c.id),
        first_name: c.first_name,
        last_name: c.last_name,
        email: c.email,
        phone: c.phone.filter(|p| !p.is_empty()),
        loyalty_tier: c.loyalty_tier,
        created_at: c.created_at,
        address: c.address.map(|a| AddressRecord {
            line1: a.line1,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        }),
    })
}

fn product_record(p: ProductJson) -> Result<ProductRecord, String> {
    wire::non_empty("product id", &p.id)?;
    Ok(ProductRecord {
        price: p
            .price
            .into_record()
            .map_err(|e| format!("product {}: {e}", p.id))?,
        id: ProductId::from_upstream(p.id),
        sku: p.sku,
        name: p.name,
        description: p.description.unwrap_or_default(),
        category: p.category,
        in_stock: p.in_stock,
        image_url: p.image_url.filter(|u| !u.is_empty()),
    })
}

fn order_record(o: OrderJson) -> Result<OrderRecord, String> {
    wire::non_empty("order id", &o.id)?;
    let lines = o
        .lines
        .into_iter()
        .map(|line| {
            Ok(OrderLineRecord {
                line_no: line.line_no,
                product_id: ProductId::from_upstream(line.product_id),
                quantity: line.quantity,
                unit_price: line.unit_price.into_record()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| format!("order {}: {e}", o.id))?;
    Ok(OrderRecord {
        total: o
            .total
            .into_record()
            .map_err(|e| format!("order {}: {e}", o.id))?,
        id: OrderId::from_upstream(o.id),
        customer_id: CustomerId::from_upstream(o.customer_id),
        status: o.status,
        placed_at: o.placed_at,
        lines,
        shipment: o.shipment.map(|s| ShipmentRef {
            carrier: s.carrier,
            tracking_number: s.tracking_number,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_strictly() {
        let order = serde_json::json!({
            "id": "ord-000001", "customerId": "cust-0001", "status": "SHIPPED",
            "placedAt": "2024-05-01T10:00:00Z",
            "lines": [{"lineNo": 1, "productId": "prod-0001", "quantity": 2,
                       "unitPrice": {"minorUnits": 8999, "currency": "EUR"}}],
            "total": {"minorUnits": 17998, "currency": "EUR"},
            "shipment": {"carrier": "PARCELCO", "trackingNumber": "PC100000001"}
        });
        let record = order_record(serde_json::from_value(order.clone()).unwrap()).unwrap();
        assert_eq!(record.status, OrderStatus::Shipped);
        assert_eq!(record.total.minor_units, 17998);
        assert_eq!(record.lines[0].quantity, 2);

        let mut unknown_status = order.clone();
        unknown_status["status"] = "LOST".into();
        assert!(serde_json::from_value::<OrderJson>(unknown_status).is_err());

        let mut bad_currency = order;
        bad_currency["total"]["currency"] = "euro".into();
        let parsed: OrderJson = serde_json::from_value(bad_currency).unwrap();
        assert!(order_record(parsed).is_err());
    }

    #[test]
    fn repeated_ids_are_asked_once() {
        assert_eq!(distinct(&["a", "b", "a", "c", "b"]), vec!["a", "b", "c"]);
    }
}
