use async_graphql::{ID, Object};

use super::Money;
use crate::records::ProductRecord;

/// A product of the catalogue.
pub(crate) struct Product(pub(crate) ProductRecord);

/// A product of the catalogue.
#[Object]
impl Product {
    /// The product's id.
    async fn id(&self) -> ID {
        (&self.0.id).into()
    }

    /// Stock keeping unit, as printed on labels.
    async fn sku(&self) -> &str {
        &self.0.sku
    }

    /// Name to show in lists.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Longer description for the product page.
    async fn description(&self) -> &str {
        &self.0.description
    }

    /// Catalogue category, e.g. `Shoes`.
    async fn category(&self) -> &str {
        &self.0.category
    }

    /// Current list price.
    async fn price(&self) -> Money {
        Money(self.0.price.clone())
    }

    /// Whether it can be ordered now.
    async fn in_stock(&self) -> bool {
        self.0.in_stock
    }

    /// Product image, when there is one.
    async fn image_url(&self) -> Option<&str> {
        self.0.image_url.as_deref()
    }
}
