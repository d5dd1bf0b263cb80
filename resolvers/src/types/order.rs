use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{Customer, Money, Product, loaders};
use crate::loaders::settle;
use crate::query::load_customer;
use crate::records::{
    OrderLineRecord, OrderRecord, OrderStatus, ShipmentRef, ShipmentStatus, TrackingEventRecord,
    TrackingRecord,
};
use crate::viewer::viewer;

/// An order a customer placed.
pub(crate) struct Order(pub(crate) OrderRecord);

/// An order a customer placed.
#[Object]
impl Order {
    /// The order's id.
    async fn id(&self) -> ID {
        (&self.0.id).into()
    }

    /// Where the order is in its life.
    async fn status(&self) -> OrderStatus {
        self.0.status
    }

    /// When it was placed.
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }

    /// What was ordered.
    async fn lines(&self) -> Vec<OrderLine> {
        self.0.lines.iter().map(|l| OrderLine(l.clone())).collect()
    }

    /// Number of items (the sum of the lines' quantities).
    async fn item_count(&self) -> u32 {
        self.0.lines.iter().map(|l| l.quantity).sum()
    }

    /// Total to pay.
    async fn total(&self) -> Money {
        Money(self.0.total.clone())
    }

    /// Whether `cancelOrder` can still cancel it (not shipped yet).
    async fn can_cancel(&self) -> bool {
        matches!(self.0.status, OrderStatus::Pending | OrderStatus::Confirmed)
    }

    /// The parcel, once the order has shipped; null before.
    async fn shipment(&self) -> Option<Shipment> {
        self.0.shipment.clone().map(Shipment)
    }

    /// Who placed it.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        load_customer(ctx, viewer(ctx)?, self.0.customer_id.clone()).await
    }
}

/// One line of an order.
pub(crate) struct OrderLine(pub(crate) OrderLineRecord);

/// One line of an order.
#[Object]
impl OrderLine {
    /// Position in the order, from 1.
    async fn line_no(&self) -> u32 {
        self.0.line_no
    }

    /// How many.
    async fn quantity(&self) -> u32 {
        self.0.quantity
    }

    /// Price of one item when the order was placed.
    async fn unit_price(&self) -> Money {
        Money(self.0.unit_price.clone())
    }

    /// `unitPrice` times `quantity`.
    async fn subtotal(&self) -> Money {
        Money(crate::records::MoneyRecord {
            minor_units: self.0.unit_price.minor_units * i64::from(self.0.quantity),
            currency: self.0.unit_price.currency.clone(),
        })
    }

    /// The product ordered (null if it has left the catalogue).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Product>> {
        let product = loaders(ctx)?
            .products
            .load_one(self.0.product_id.clone())
            .await?;
        Ok(product.map(Product))
    }
}

/// A parcel on its way, with live tracking from the carrier.
pub(crate) struct Shipment(pub(crate) ShipmentRef);

impl Shipment {
    async fn tracking(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<TrackingRecord>> {
        let loaded = loaders(ctx)?
            .tracking
            .load_one(self.0.tracking_number.clone())
            .await;
        Ok(settle(loaded)?)
    }
}

/// A parcel on its way, with live tracking from the carrier.
#[Object]
impl Shipment {
    /// The carrier's name, e.g. `PARCELCO`.
    async fn carrier(&self) -> &str {
        &self.0.carrier
    }

    /// The parcel's tracking number at the carrier.
    async fn tracking_number(&self) -> &str {
        &self.0.tracking_number
    }

    /// Latest status from the carrier (live).
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ShipmentStatus>> {
        Ok(self.tracking(ctx).await?.map(|t| t.status))
    }

    /// The carrier's current delivery estimate (live).
    async fn estimated_delivery(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<DateTime<Utc>>> {
        Ok(self.tracking(ctx).await?.and_then(|t| t.estimated_delivery))
    }

    /// The carrier's scans, newest first (live).
    async fn events(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<TrackingEvent>>> {
        Ok(self
            .tracking(ctx)
            .await?
            .map(|t| t.events.into_iter().map(TrackingEvent).collect()))
    }
}

/// One scan of a parcel by the carrier.
pub(crate) struct TrackingEvent(pub(crate) TrackingEventRecord);

/// One scan of a parcel by the carrier.
#[Object]
impl TrackingEvent {
    /// When the parcel was scanned.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.timestamp
    }

    /// Where, e.g. `Leipzig hub`.
    async fn location(&self) -> &str {
        &self.0.location
    }

    /// The parcel's status after this scan.
    async fn status(&self) -> ShipmentStatus {
        self.0.status
    }

    /// What happened, in the carrier's words.
    async fn description(&self) -> &str {
        &self.0.description
    }
}
