//! The backend integration microservices: customers, products and orders over REST/JSON.
//!
//! The company's own services, so the simplest contract: a static bearer token, JSON errors
//! `{"error":{"code","message"}}`, bulk reads by `ids` (at most 100, unknown ids left out) for
//! the dataloaders, cursor paging, and order placement and cancellation. A page's `nextCursor`
//! is the id of its last item; `cursor=<id>` continues right after that item, so any listed
//! item's id is a cursor, and an id that is not in the list is 400 `BAD_CURSOR`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::SandboxConfig;
use super::world::{
    CARRIER_NAME, CURRENCY, Customer, Order, OrderStatus, OrderTransitionError, PlaceOrderError,
    Product, SharedWorld,
};

/// Most ids one bulk read takes.
const MAX_IDS: usize = 100;
/// Page size when the request names none.
const DEFAULT_LIMIT: usize = 20;
/// Largest page size.
const MAX_LIMIT: usize = 100;

#[derive(Clone)]
struct BackendState {
    world: SharedWorld,
    /// `Authorization: Bearer <token>` every request must carry.
    token: String,
}

/// The backend's routes, behind its bearer token.
pub(crate) fn router(world: SharedWorld, config: &SandboxConfig) -> Router {
    let state = BackendState {
        world,
        token: config.backend_token.clone(),
    };
    Router::new()
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(get_customer))
        .route("/customers/{id}/orders", get(customer_orders))
        .route("/orders", get(bulk_orders).post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/products", get(bulk_products))
        .route("/products/{id}", get(get_product).patch(update_product))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .fallback(no_route)
        .with_state(state)
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route {method} {}", uri.path()),
    )
}

/// An error answer of the backend: `{"error":{"code","message"}}` with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no {what} {id}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn require_token(
    State(state): State<BackendState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented != Some(state.token.as_str()) {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid bearer token is required",
        );
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

// ----- wire types -----------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Money {
    minor_units: i64,
    currency: &'static str,
}

impl Money {
    fn eur(minor_units: i64) -> Self {
        Self {
            minor_units,
            currency: CURRENCY,
        }
    }
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddressJson<'a> {
    line1: &'a str,
    city: &'a str,
    postal_code: &'a str,
    country: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomerJson<'a> {
    id: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    phone: &'a str,
    loyalty_tier: &'static str,
    created_at: String,
    address: AddressJson<'a>,
}

impl<'a> From<&'a Customer> for CustomerJson<'a> {
    fn from(customer: &'a Customer) -> Self {
        Self {
            id: &customer.id,
            first_name: &customer.first_name,
            last_name: &customer.last_name,
            email: &customer.email,
            phone: &customer.phone,
            loyalty_tier: customer.loyalty_tier.as_str(),
            created_at: timestamp(customer.created_at),
            address: AddressJson {
                line1: &customer.address.line1,
                city: &customer.address.city,
                postal_code: &customer.address.postal_code,
                country: &customer.address.country,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProductJson<'a> {
    id: &'a str,
    sku: &'a str,
    name: &'a str,
    description: &'a str,
    category: &'a str,
    price: Money,
    in_stock: bool,
    image_url: String,
}

impl<'a> From<&'a Product> for ProductJson<'a> {
    fn from(product: &'a Product) -> Self {
        Self {
            id: &product.id,
            sku: &product.sku,
            name: &product.name,
            description: &product.description,
            category: &product.category,
            price: Money::eur(product.price_minor),
            in_stock: product.in_stock,
            image_url: format!("https://img.example.com/{}.jpg", product.id),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderLineJson<'a> {
    line_no: usize,
    product_id: &'a str,
    quantity: u32,
    unit_price: Money,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShipmentJson<'a> {
    carrier: &'static str,
    tracking_number: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderJson<'a> {
    id: &'a str,
    customer_id: &'a str,
    status: &'static str,
    placed_at: String,
    lines: Vec<OrderLineJson<'a>>,
    total: Money,
    shipment: Option<ShipmentJson<'a>>,
}

impl<'a> From<&'a Order> for OrderJson<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            id: &order.id,
            customer_id: &order.customer_id,
            status: order.status.as_str(),
            placed_at: timestamp(order.placed_at),
            lines: order
                .lines
                .iter()
                .enumerate()
                .map(|(index, line)| OrderLineJson {
                    line_no: index + 1,
                    product_id: &line.product_id,
                    quantity: line.quantity,
                    unit_price: Money::eur(line.unit_price_minor),
                })
                .collect(),
            total: Money::eur(order.total_minor()),
            shipment: order
                .tracking_number
                .as_deref()
                .map(|tracking_number| ShipmentJson {
                    carrier: CARRIER_NAME,
                    tracking_number,
                }),
        }
    }
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

// ----- query parameters -----------------------------------------------------------------------

/// The query string as pairs; the first occurrence of a name wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<String>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `limit`, 1..=100, default 20.
    fn limit(&self) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        text.parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_LIMIT",
                    format!("limit must be an integer from 1 to {MAX_LIMIT}, got {text:?}"),
                )
            })
    }

    /// `cursor`: the id of the item the previous page ended with.
    fn cursor(&self) -> Option<&str> {
        self.get("cursor")
    }

    /// `ids=a,b,c`: trimmed, empty entries dropped, duplicates kept once, at most 100.
    fn ids(&self) -> Result<Vec<String>, ApiError> {
        let Some(raw) = self.get("ids") else {
            return Err(ApiError::bad_request(
                "MISSING_IDS",
                "the ids parameter is required: ids=a,b,c",
            ));
        };
        let mut ids: Vec<String> = Vec::new();
        for id in raw.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            if !ids.iter().any(|seen| seen == id) {
                ids.push(id.to_owned());
            }
        }
        if ids.len() > MAX_IDS {
            return Err(ApiError::bad_request(
                "TOO_MANY_IDS",
                format!("at most {MAX_IDS} ids per request, got {}", ids.len()),
            ));
        }
        Ok(ids)
    }
}

/// The page of `items` after the item `cursor` names (from the start without one), and the
/// cursor of the next page: the id of the page's last item, when more follow.
fn page_after<'a, T: 'a>(
    items: impl Iterator<Item = &'a T>,
    id: impl Fn(&T) -> &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<&'a T>, Option<String>), ApiError> {
    let mut items = items.peekable();
    if let Some(cursor) = cursor
        && items.by_ref().find(|item| id(item) == cursor).is_none()
    {
        return Err(ApiError::bad_request(
            "BAD_CURSOR",
            format!("cursor {cursor:?} is not the id of an item in this list"),
        ));
    }
    let page: Vec<&T> = items.by_ref().take(limit).collect();
    let next_cursor = match (page.last(), items.peek()) {
        (Some(last), Some(_)) => Some(id(last).to_owned()),
        _ => None,
    };
    Ok((page, next_cursor))
}

// ----- handlers -------------------------------------------------------------------------------

async fn get_customer(State(state): State<BackendState>, Path(id): Path<String>) -> ApiResult {
    let world = state.world.read();
    let customer = world
        .customers
        .get(&id)
        .ok_or_else(|| ApiError::not_found("customer", &id))?;
    Ok(Json(CustomerJson::from(customer)).into_response())
}

/// `?ids=` is a bulk read; otherwise `?search=&limit=&cursor=` pages through matches by id.
async fn list_customers(State(state): State<BackendState>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query);
    if params.get("ids").is_some() {
        let ids = params.ids()?;
        let world = state.world.read();
        let items = ids
            .iter()
            .filter_map(|id| world.customers.get(id))
            .map(CustomerJson::from)
            .collect();
        return Ok(Json(Items::<CustomerJson> { items }).into_response());
    }
    let limit = params.limit()?;
    let needle = params.get("search").unwrap_or("").trim().to_lowercase();
    let world = state.world.read();
    let matches = world
        .customers
        .values()
        .filter(|customer| needle.is_empty() || customer_matches(customer, &needle));
    let (items, next_cursor) = page_after(matches, |c| &c.id, params.cursor(), limit)?;
    Ok(Json(Page {
        items: items.into_iter().map(CustomerJson::from).collect(),
        next_cursor,
    })
    .into_response())
}

/// Whether a customer's full name ("First Last") or email contains `needle` (lower-case).
fn customer_matches(customer: &Customer, needle: &str) -> bool {
    let full_name = format!("{} {}", customer.first_name, customer.last_name);
    [&full_name, &customer.email]
        .into_iter()
        .any(|text| text.to_lowercase().contains(needle))
}

/// A customer's orders, newest first, optionally of one status, paged.
async fn customer_orders(
    State(state): State<BackendState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query);
    let limit = params.limit()?;
    let status = params
        .get("status")
        .map(|text| {
            OrderStatus::parse(text).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_STATUS",
                    format!(
                        "status must be one of PENDING, CONFIRMED, SHIPPED, DELIVERED, \
                         CANCELLED, got {text:?}"
                    ),
                )
            })
        })
        .transpose()?;
    let world = state.world.read();
    if !world.customers.contains_key(&id) {
        return Err(ApiError::not_found("customer", &id));
    }
    let orders = world.customer_orders(&id);
    let matches = orders
        .iter()
        .copied()
        .filter(|order| status.is_none_or(|status| order.status == status));
    let (items, next_cursor) = page_after(matches, |order| &order.id, params.cursor(), limit)?;
    Ok(Json(Page {
        items: items.into_iter().map(OrderJson::from).collect(),
        next_cursor,
    })
    .into_response())
}

async fn get_order(State(state): State<BackendState>, Path(id): Path<String>) -> ApiResult {
    let world = state.world.read();
    let order = world
        .orders
        .get(&id)
        .ok_or_else(|| ApiError::not_found("order", &id))?;
    Ok(Json(OrderJson::from(order)).into_response())
}

async fn bulk_orders(State(state): State<BackendState>, RawQuery(query): RawQuery) -> ApiResult {
    let ids = Params::parse(query).ids()?;
    let world = state.world.read();
    let items = ids
        .iter()
        .filter_map(|id| world.orders.get(id))
        .map(OrderJson::from)
        .collect();
    Ok(Json(Items::<OrderJson> { items }).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    customer_id: String,
    lines: Vec<NewOrderLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderLine {
    product_id: String,
    /// Signed and wide, so 0, -1 and 1000 reach the 422 `INVALID_QUANTITY` check.
    quantity: i64,
}

/// Places an order: 201 with the `CONFIRMED` order, or 422 with why not.
async fn place_order(
    State(state): State<BackendState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the order as Content-Type: application/json",
        ));
    }
    let new: NewOrder = serde_json::from_slice(&body).map_err(|cause| {
        ApiError::bad_request("INVALID_JSON", format!("the body is not an order: {cause}"))
    })?;
    let lines: Vec<(String, i64)> = new
        .lines
        .into_iter()
        .map(|line| (line.product_id, line.quantity))
        .collect();
    let placed = state
        .world
        .write()
        .place_order(&new.customer_id, &lines, Utc::now());
    let order = placed.map_err(|cause| {
        let code = match cause {
            PlaceOrderError::EmptyOrder => "EMPTY_ORDER",
            PlaceOrderError::TooManyLines { .. } => "TOO_MANY_LINES",
            PlaceOrderError::UnknownCustomer(_) => "UNKNOWN_CUSTOMER",
            PlaceOrderError::UnknownProduct { .. } => "UNKNOWN_PRODUCT",
            PlaceOrderError::InvalidQuantity { .. } => "INVALID_QUANTITY",
            PlaceOrderError::OutOfStock { .. } => "OUT_OF_STOCK",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, cause.to_string())
    })?;
    let mut response = (StatusCode::CREATED, Json(OrderJson::from(&order))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn cancel_order(State(state): State<BackendState>, Path(id): Path<String>) -> ApiResult {
    let cancelled = state.world.write().cancel_order(&id);
    match cancelled {
        Ok(order) => Ok(Json(OrderJson::from(&order)).into_response()),
        Err(OrderTransitionError::NotFound(_)) => Err(ApiError::not_found("order", &id)),
        Err(cause @ OrderTransitionError::WrongStatus { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "NOT_CANCELLABLE",
            cause.to_string(),
        )),
    }
}

async fn get_product(State(state): State<BackendState>, Path(id): Path<String>) -> ApiResult {
    let world = state.world.read();
    let product = world
        .products
        .get(&id)
        .ok_or_else(|| ApiError::not_found("product", &id))?;
    Ok(Json(ProductJson::from(product)).into_response())
}

/// What `PATCH /products/{id}` may change (the catalogue team's tool): the price in cents and
/// the stock; a change is announced as a `product.updated` webhook.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProductUpdate {
    price_minor: Option<i64>,
    in_stock: Option<bool>,
}

async fn update_product(
    State(state): State<BackendState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let update: ProductUpdate = serde_json::from_slice(&body).map_err(|cause| {
        ApiError::bad_request(
            "INVALID_JSON",
            format!("the body is not a product update ({{priceMinor, inStock}}): {cause}"),
        )
    })?;
    if update.price_minor.is_some_and(|price| price <= 0) {
        return Err(ApiError::bad_request(
            "INVALID_PRICE",
            "priceMinor must be a positive number of cents",
        ));
    }
    let updated = state
        .world
        .write()
        .update_product(&id, update.price_minor, update.in_stock);
    let product = updated.ok_or_else(|| ApiError::not_found("product", &id))?;
    Ok(Json(ProductJson::from(&product)).into_response())
}

async fn bulk_products(State(state): State<BackendState>, RawQuery(query): RawQuery) -> ApiResult {
    let ids = Params::parse(query).ids()?;
    let world = state.world.read();
    let items = ids
        .iter()
        .filter_map(|id| world.products.get(id))
        .map(ProductJson::from)
        .collect();
    Ok(Json(Items::<ProductJson> { items }).into_response())
}
