//! Deterministic demo data: the same seed gives the same world, on every machine and every run.
//!
//! Everything is built from a tiny PRNG (splitmix64) and a fixed epoch, 2026-01-01T00:00:00Z:
//! seeded times are the epoch minus deterministic offsets, never the wall clock. What tests and
//! demos rely on is hand-written and the same for every seed: the customer `cust-0001` (Ada
//! Lovelace) with her orders, parcels, CRM cases and return processes, the first ten products,
//! and the first seven process instances. The rest (1,000 customers, 500 products, 20,000
//! orders, ~8,000 parcels, 1,500 cases, 300 return processes) is drawn from the seed.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::json;

use super::world::{
    AGENTS_GROUP, Address, CASE_ORIGINS, CASE_PRIORITIES, Case, CaseComment, CaseStatus, Contact,
    Customer, LoyaltyTier, Order, OrderLine, OrderStatus, Parcel, ParcelStatus, PotentialOwner,
    ProcessInstance, ProcessState, Product, ScanEvent, Task, TaskName, TaskStatus, World,
    agent_user_id, case_number, integration_user_id, salesforce_id, tracking_number_for,
};

/// Number of seeded customers, `cust-0001`..`cust-1000`.
pub(crate) const CUSTOMER_COUNT: u64 = 1_000;
/// Number of seeded products, `prod-0001`..`prod-0500`.
pub(crate) const PRODUCT_COUNT: u64 = 500;
/// Number of seeded orders, `ord-000001`..`ord-020000`.
pub(crate) const ORDER_COUNT: u64 = 20_000;
/// Number of seeded CRM cases.
pub(crate) const CASE_COUNT: u64 = 1_500;
/// Number of seeded return process instances.
pub(crate) const PROCESS_COUNT: i64 = 300;

/// The fixed epoch every seeded time is computed back from.
pub(crate) fn epoch() -> DateTime<Utc> {
    utc(2026, 1, 1, 0, 0)
}

/// When the first seeded order was placed; the 20,000 orders spread from here to the epoch.
fn orders_start() -> DateTime<Utc> {
    utc(2024, 5, 1, 10, 0)
}

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|date| date.and_hms_opt(hour, minute, 0))
        .map(|time| time.and_utc())
        .unwrap_or_default()
}

/// splitmix64: tiny, fast, and good enough to make demo data look varied.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0), without modulo bias worth worrying about here.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound.max(1))) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below(high.abs_diff(low) + 1) as i64
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST_NAMES: [&str; 40] = [
    "Olivia", "Liam", "Emma", "Noah", "Sofia", "Lucas", "Mia", "Elias", "Hannah", "Jonas", "Lea",
    "Felix", "Clara", "Oscar", "Ines", "Mateo", "Chloe", "Hugo", "Zoe", "Leon", "Nora", "Max",
    "Ella", "Theo", "Ivy", "Finn", "Mila", "Paul", "Lina", "Oliver", "Freya", "Arthur", "Alice",
    "Louis", "Emily", "Jakob", "Marta", "Tomas", "Julia", "Erik",
];

const LAST_NAMES: [&str; 40] = [
    "Schmidt",
    "Dubois",
    "Rossi",
    "Garcia",
    "Jansen",
    "Nowak",
    "Silva",
    "Murphy",
    "Kowalski",
    "Berg",
    "Moreau",
    "Fischer",
    "Weber",
    "Costa",
    "Lindqvist",
    "Horvat",
    "Petrov",
    "Andersen",
    "Keller",
    "Laurent",
    "Bianchi",
    "Ferreira",
    "Visser",
    "Olsen",
    "Brennan",
    "Walsh",
    "Meyer",
    "Wagner",
    "Becker",
    "Lopez",
    "Martin",
    "Bernard",
    "Romano",
    "Santos",
    "Nilsson",
    "Hansen",
    "Dvorak",
    "Kaplan",
    "Byrne",
    "Novak",
];

/// City, country, phone prefix, postal code pattern (`#` becomes a digit).
const CITIES: [(&str, &str, &str, &str); 12] = [
    ("London", "GB", "+44 20 7946 ", "EC# 2AB"),
    ("Manchester", "GB", "+44 161 496 ", "M# 3BD"),
    ("Berlin", "DE", "+49 30 5555 ", "10###"),
    ("Munich", "DE", "+49 89 5555 ", "80###"),
    ("Paris", "FR", "+33 1 99 00 ", "750##"),
    ("Lyon", "FR", "+33 4 99 00 ", "690##"),
    ("Amsterdam", "NL", "+31 20 555 ", "10## KX"),
    ("Madrid", "ES", "+34 91 555 ", "280##"),
    ("Milan", "IT", "+39 02 5555 ", "201##"),
    ("Dublin", "IE", "+353 1 555 ", "D0# F5X"),
    ("Vienna", "AT", "+43 1 555 ", "1##0"),
    ("Stockholm", "SE", "+46 8 555 ", "1## 45"),
];

const STREETS: [&str; 10] = [
    "High Street",
    "Station Road",
    "Market Square",
    "Church Lane",
    "Park Avenue",
    "Mill Road",
    "Bridge Street",
    "King Street",
    "Garden Row",
    "Harbour Way",
];

/// The first ten products: name, category, price in cents. `prod-0001`..`prod-0010`, always in
/// stock.
const FIXED_PRODUCTS: [(&str, &str, i64); 10] = [
    ("Trail Runner 2", "Shoes", 8999),
    ("City Sneaker", "Shoes", 6999),
    ("Merino Crew Socks (3-pack)", "Apparel", 1999),
    ("Rain Shell Jacket", "Apparel", 12999),
    ("Daypack 22L", "Bags", 5999),
    ("Insulated Bottle 750 ml", "Outdoor", 2499),
    ("Wireless Earbuds", "Electronics", 7999),
    ("Trekking Poles", "Outdoor", 4999),
    ("Headlamp 400", "Electronics", 3499),
    ("Canvas Tote", "Bags", 1499),
];

/// Category, nouns, price range in cents.
const CATEGORIES: [(&str, [&str; 6], i64, i64); 6] = [
    (
        "Shoes",
        ["Runner", "Sneaker", "Hiker", "Loafer", "Sandal", "Boot"],
        4_999,
        15_999,
    ),
    (
        "Apparel",
        ["T-Shirt", "Hoodie", "Jacket", "Shorts", "Fleece", "Chinos"],
        1_499,
        14_999,
    ),
    (
        "Outdoor",
        [
            "Tent",
            "Sleeping Bag",
            "Camp Stove",
            "Water Filter",
            "Hammock",
            "Trekking Poles",
        ],
        1_999,
        29_999,
    ),
    (
        "Electronics",
        [
            "Headphones",
            "Speaker",
            "Power Bank",
            "Smartwatch",
            "Charger",
            "Action Camera",
        ],
        1_999,
        39_999,
    ),
    (
        "Home",
        [
            "Mug",
            "Blanket",
            "Lamp",
            "Cutting Board",
            "Kettle",
            "Planter",
        ],
        999,
        8_999,
    ),
    (
        "Bags",
        [
            "Tote",
            "Duffel",
            "Messenger Bag",
            "Sling",
            "Backpack",
            "Wash Bag",
        ],
        1_499,
        12_999,
    ),
];

const ADJECTIVES: [&str; 10] = [
    "Classic",
    "Urban",
    "Alpine",
    "Coastal",
    "Nordic",
    "Everyday",
    "Summit",
    "Featherlight",
    "Heritage",
    "Studio",
];

pub(crate) const HUBS: [&str; 5] = [
    "Hub, Frankfurt, DE",
    "Hub, Paris, FR",
    "Hub, Rotterdam, NL",
    "Hub, Milan, IT",
    "Hub, Manchester, GB",
];

const WAREHOUSE: &str = "Warehouse, Leipzig, DE";

/// Builds the world for `seed`. Seeded process instances name `initiator` as their starter.
pub(crate) fn seed_world(seed: u64, initiator: &str) -> World {
    let mut rng = SplitMix64::new(seed);
    let mut world = World::default();
    seed_customers(&mut world, &mut rng);
    seed_products(&mut world, &mut rng);
    seed_orders(&mut world, &mut rng);
    seed_contacts(&mut world);
    seed_cases(&mut world, &mut rng);
    seed_processes(&mut world, &mut rng, initiator);
    world
}

fn seed_customers(world: &mut World, rng: &mut SplitMix64) {
    world.customers.insert(
        "cust-0001".to_owned(),
        Customer {
            id: "cust-0001".to_owned(),
            first_name: "Ada".to_owned(),
            last_name: "Lovelace".to_owned(),
            email: "ada.lovelace@example.com".to_owned(),
            phone: "+44 20 7946 0001".to_owned(),
            loyalty_tier: LoyaltyTier::Gold,
            created_at: utc(2021, 3, 4, 10, 0),
            address: Address {
                line1: "12 St James's Square".to_owned(),
                city: "London".to_owned(),
                postal_code: "SW1Y 4JH".to_owned(),
                country: "GB".to_owned(),
            },
        },
    );
    for number in 2..=CUSTOMER_COUNT {
        let first = *rng.pick(&FIRST_NAMES);
        let last = *rng.pick(&LAST_NAMES);
        let (city, country, phone_prefix, postal_pattern) = *rng.pick(&CITIES);
        let tier = match rng.below(10) {
            0 => LoyaltyTier::Gold,
            1..=3 => LoyaltyTier::Silver,
            _ => LoyaltyTier::Bronze,
        };
        let postal_code: String = postal_pattern
            .chars()
            .map(|c| match c {
                '#' => char::from(b'0' + rng.below(10) as u8),
                other => other,
            })
            .collect();
        let id = format!("cust-{number:04}");
        world.customers.insert(
            id.clone(),
            Customer {
                id,
                first_name: first.to_owned(),
                last_name: last.to_owned(),
                email: format!(
                    "{}.{}{number}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
                phone: format!("{phone_prefix}{:04}", rng.below(10_000)),
                loyalty_tier: tier,
                created_at: epoch() - Duration::seconds(rng.between(60, 1_800) * 86_400)
                    + Duration::seconds(rng.between(8 * 3600, 20 * 3600)),
                address: Address {
                    line1: format!("{} {}", rng.between(1, 180), rng.pick(&STREETS)),
                    city: city.to_owned(),
                    postal_code,
                    country: country.to_owned(),
                },
            },
        );
    }
}

fn seed_products(world: &mut World, rng: &mut SplitMix64) {
    for number in 1..=PRODUCT_COUNT {
        let (name, category, price_minor, in_stock) = match FIXED_PRODUCTS.get(number as usize - 1)
        {
            Some(&(name, category, price)) => (name.to_owned(), category, price, true),
            None => {
                let (category, nouns, low, high) = *rng.pick(&CATEGORIES);
                let name = format!(
                    "{} {} {}",
                    rng.pick(&ADJECTIVES),
                    rng.pick(&nouns),
                    rng.between(1, 5)
                );
                let price = rng.between(low / 100, high / 100) * 100 + 99;
                (name, category, price, !rng.chance(0.05))
            }
        };
        let id = format!("prod-{number:04}");
        world.products.insert(
            id.clone(),
            Product {
                sku: format!("SKU-{number:04}"),
                description: format!(
                    "{name}: a {} favourite, built to last and easy to care for.",
                    category.to_lowercase()
                ),
                id,
                name,
                category: category.to_owned(),
                price_minor,
                in_stock,
            },
        );
    }
}

/// One of Ada's orders: number, status, lines (product number, quantity), and for shipped ones
/// the statuses the parcel went through.
struct FixedOrder {
    number: u64,
    status: OrderStatus,
    lines: &'static [(u64, u32)],
    journey: &'static [ParcelStatus],
}

/// Ada's 12 orders, `ord-000001` and every 1,800th after it, by number. Shared products (for
/// batching and dedup tests): prod-0001 (ord-000001, ord-010801), prod-0003 (ord-016201,
/// ord-019801), prod-0006 (ord-003601, ord-016201) and more.
const ADA_ORDERS: [FixedOrder; 12] = {
    use OrderStatus as O;
    use ParcelStatus as P;
    [
        FixedOrder {
            number: 1,
            status: O::Shipped,
            lines: &[(1, 2)],
            journey: &[P::LabelCreated, P::InTransit, P::InTransit],
        },
        FixedOrder {
            number: 1801,
            status: O::Cancelled,
            lines: &[(9, 1)],
            journey: &[],
        },
        FixedOrder {
            number: 3601,
            status: O::Shipped,
            lines: &[(4, 1), (6, 2)],
            journey: &[
                P::LabelCreated,
                P::InTransit,
                P::InTransit,
                P::OutForDelivery,
            ],
        },
        FixedOrder {
            number: 5401,
            status: O::Cancelled,
            lines: &[(5, 2)],
            journey: &[],
        },
        FixedOrder {
            number: 7201,
            status: O::Shipped,
            lines: &[(2, 1)],
            journey: &[P::LabelCreated],
        },
        FixedOrder {
            number: 9001,
            status: O::Cancelled,
            lines: &[(10, 1)],
            journey: &[],
        },
        FixedOrder {
            number: 10801,
            status: O::Delivered,
            lines: &[(1, 1), (9, 1)],
            journey: &[
                P::LabelCreated,
                P::InTransit,
                P::InTransit,
                P::InTransit,
                P::OutForDelivery,
                P::Delivered,
            ],
        },
        FixedOrder {
            number: 12601,
            status: O::Shipped,
            lines: &[(8, 3)],
            journey: &[
                P::LabelCreated,
                P::InTransit,
                P::InTransit,
                P::OutForDelivery,
                P::Exception,
            ],
        },
        FixedOrder {
            number: 14401,
            status: O::Pending,
            lines: &[(7, 1)],
            journey: &[],
        },
        FixedOrder {
            number: 16201,
            status: O::Shipped,
            lines: &[(3, 1), (6, 1)],
            journey: &[P::LabelCreated, P::InTransit],
        },
        FixedOrder {
            number: 18001,
            status: O::Confirmed,
            lines: &[(4, 1)],
            journey: &[],
        },
        FixedOrder {
            number: 19801,
            status: O::Confirmed,
            lines: &[(2, 1), (3, 2), (5, 1)],
            journey: &[],
        },
    ]
};

fn seed_orders(world: &mut World, rng: &mut SplitMix64) {
    let span = (epoch() - orders_start()).num_seconds();
    let step = span / ORDER_COUNT as i64;
    let mut fixed = ADA_ORDERS.iter().peekable();
    for number in 1..=ORDER_COUNT {
        let id = format!("ord-{number:06}");
        let base = orders_start() + Duration::seconds((number as i64 - 1) * step);
        if let Some(spec) = fixed.next_if(|spec| spec.number == number) {
            let lines = spec
                .lines
                .iter()
                .map(|&(product, quantity)| line(world, product, quantity))
                .collect();
            let order = Order {
                tracking_number: (!spec.journey.is_empty()).then(|| tracking_number_for(&id)),
                id,
                customer_id: "cust-0001".to_owned(),
                status: spec.status,
                placed_at: base,
                lines,
            };
            if !spec.journey.is_empty() {
                let parcel = fixed_parcel(&order, spec.journey);
                world.parcels.insert(parcel.tracking_number.clone(), parcel);
            }
            world.insert_order(order);
            continue;
        }

        let customer_number = rng.between(2, CUSTOMER_COUNT as i64);
        let placed_at = base + Duration::seconds(rng.below(step as u64) as i64);
        let status = match rng.below(100) {
            0..=24 => OrderStatus::Delivered,
            25..=39 => OrderStatus::Shipped,
            40..=69 => OrderStatus::Confirmed,
            70..=84 => OrderStatus::Pending,
            _ => OrderStatus::Cancelled,
        };
        let line_count = match rng.below(10) {
            0..=3 => 1,
            4..=6 => 2,
            7..=8 => 3,
            _ => 4,
        };
        let mut products: Vec<u64> = Vec::with_capacity(line_count);
        while products.len() < line_count {
            let product = 1 + rng.below(PRODUCT_COUNT);
            if !products.contains(&product) {
                products.push(product);
            }
        }
        let lines = products
            .into_iter()
            .map(|product| {
                let quantity = if rng.chance(0.8) {
                    1
                } else {
                    rng.between(2, 3) as u32
                };
                line(world, product, quantity)
            })
            .collect();
        let shipped = matches!(status, OrderStatus::Shipped | OrderStatus::Delivered);
        let order = Order {
            tracking_number: shipped.then(|| tracking_number_for(&id)),
            id,
            customer_id: format!("cust-{customer_number:04}"),
            status,
            placed_at,
            lines,
        };
        if shipped {
            let parcel = random_parcel(world, &order, rng);
            world.parcels.insert(parcel.tracking_number.clone(), parcel);
        }
        world.insert_order(order);
    }
    world.next_order_no = ORDER_COUNT + 1;
}

fn line(world: &World, product_number: u64, quantity: u32) -> OrderLine {
    let product_id = format!("prod-{product_number:04}");
    let unit_price_minor = world
        .products
        .get(&product_id)
        .map_or(0, |product| product.price_minor);
    OrderLine {
        product_id,
        quantity,
        unit_price_minor,
    }
}

pub(crate) fn scan_description(status: ParcelStatus, rng: Option<&mut SplitMix64>) -> &'static str {
    let flip = rng.is_some_and(|rng| rng.chance(0.5));
    match status {
        ParcelStatus::LabelCreated => "Shipping label created",
        ParcelStatus::InTransit if flip => "Departed sorting hub",
        ParcelStatus::InTransit => "Arrived at sorting hub",
        ParcelStatus::OutForDelivery => "Out for delivery",
        ParcelStatus::Delivered if flip => "Delivered to a neighbour",
        ParcelStatus::Delivered => "Delivered, signed for by the recipient",
        ParcelStatus::Exception => "Delivery attempted: recipient not at home",
    }
}

/// Ada's parcels: first scan 8 hours after the order, then one every 10 hours, London at the end.
fn fixed_parcel(order: &Order, journey: &[ParcelStatus]) -> Parcel {
    let events: Vec<ScanEvent> = journey
        .iter()
        .enumerate()
        .map(|(index, &status)| ScanEvent {
            timestamp: order.placed_at + Duration::hours(8 + 10 * index as i64),
            location: match status {
                ParcelStatus::LabelCreated => WAREHOUSE.to_owned(),
                ParcelStatus::InTransit => HUBS[index % HUBS.len()].to_owned(),
                _ => "London, GB".to_owned(),
            },
            status,
            description: scan_description(status, None).to_owned(),
        })
        .collect();
    finish_parcel(order, events)
}

fn random_parcel(world: &World, order: &Order, rng: &mut SplitMix64) -> Parcel {
    let final_status = if order.status == OrderStatus::Delivered {
        ParcelStatus::Delivered
    } else {
        match rng.below(20) {
            0..=2 => ParcelStatus::LabelCreated,
            3..=13 => ParcelStatus::InTransit,
            14..=18 => ParcelStatus::OutForDelivery,
            _ => ParcelStatus::Exception,
        }
    };
    let count = match final_status {
        ParcelStatus::LabelCreated => 1,
        ParcelStatus::OutForDelivery | ParcelStatus::Exception => rng.between(3, 6) as usize,
        _ => rng.between(2, 6) as usize,
    };
    let destination = world.customers.get(&order.customer_id).map_or_else(
        || "London, GB".to_owned(),
        |customer| format!("{}, {}", customer.address.city, customer.address.country),
    );
    let mut timestamp = order.placed_at + Duration::hours(rng.between(6, 30));
    let mut events = Vec::with_capacity(count);
    for index in 0..count {
        let status = if index == 0 {
            ParcelStatus::LabelCreated
        } else if index == count - 1 {
            final_status
        } else if index == count - 2 && final_status != ParcelStatus::InTransit {
            ParcelStatus::OutForDelivery
        } else {
            ParcelStatus::InTransit
        };
        // Out for delivery, then delivered or failed at the door: it must not go out twice.
        let status = if status == ParcelStatus::OutForDelivery
            && final_status == ParcelStatus::OutForDelivery
            && index != count - 1
        {
            ParcelStatus::InTransit
        } else {
            status
        };
        let location = match status {
            ParcelStatus::LabelCreated => WAREHOUSE.to_owned(),
            ParcelStatus::InTransit => (*rng.pick(&HUBS)).to_owned(),
            _ => destination.clone(),
        };
        events.push(ScanEvent {
            timestamp,
            location,
            status,
            description: scan_description(status, Some(rng)).to_owned(),
        });
        timestamp += Duration::hours(rng.between(4, 20));
    }
    finish_parcel(order, events)
}

fn finish_parcel(order: &Order, events: Vec<ScanEvent>) -> Parcel {
    let last = events.last();
    let status = last.map_or(ParcelStatus::LabelCreated, |event| event.status);
    let evening = |time: DateTime<Utc>, days: i64| {
        (time + Duration::days(days))
            .date_naive()
            .and_hms_opt(18, 0, 0)
            .map(|time| time.and_utc())
    };
    let estimated_delivery = match (status, last) {
        (ParcelStatus::LabelCreated, _) => evening(order.placed_at, 3),
        (ParcelStatus::InTransit, Some(event)) => evening(event.timestamp, 1),
        (ParcelStatus::OutForDelivery, Some(event)) => evening(event.timestamp, 0),
        _ => None,
    };
    Parcel {
        tracking_number: order
            .tracking_number
            .clone()
            .unwrap_or_else(|| tracking_number_for(&order.id)),
        order_id: order.id.clone(),
        status,
        estimated_delivery,
        events,
    }
}

fn seed_contacts(world: &mut World) {
    for (index, customer) in world.customers.values().enumerate() {
        let id = salesforce_id("003", index as u64 + 1);
        world
            .contact_by_customer
            .insert(customer.id.clone(), id.clone());
        world.contacts.insert(
            id.clone(),
            Contact {
                id,
                first_name: customer.first_name.clone(),
                last_name: customer.last_name.clone(),
                email: customer.email.clone(),
                customer_id: Some(customer.id.clone()),
            },
        );
    }
}

const ORDER_SUBJECTS: [&str; 5] = [
    "Where is my parcel?",
    "Item arrived damaged",
    "Wrong item delivered",
    "Refund not received",
    "Please cancel my order",
];

const GENERAL_SUBJECTS: [&str; 5] = [
    "Update my delivery address",
    "Question about loyalty points",
    "Change my email address",
    "Invoice request",
    "Cannot sign in to the app",
];

const CUSTOMER_COMMENTS: [&str; 4] = [
    "Any news on this?",
    "I have attached a photo in the app.",
    "Thanks, that works for me.",
    "Could you call me back tomorrow morning?",
];

pub(crate) const AGENT_COMMENTS: [&str; 4] = [
    "Thank you for reaching out, we are looking into it.",
    "We have contacted the carrier and will update you within 24 hours.",
    "A refund has been issued; it takes 3-5 business days.",
    "Internal: checked with the warehouse, stock was mislabelled.",
];

/// Ada's cases and their comments, the same for every seed.
fn seed_ada_cases(world: &mut World) {
    let contact_id = world.contact_by_customer.get("cust-0001").cloned();
    let integration = integration_user_id();
    let cases = [
        (
            "Where is my parcel?",
            "Tracking for ord-012601 shows a delivery exception.",
            CaseStatus::Working,
            "High",
            "App",
            Some("ord-012601"),
            utc(2025, 12, 20, 9, 15),
            None,
        ),
        (
            "Update my delivery address",
            "From January please deliver to my office.",
            CaseStatus::New,
            "Low",
            "Web",
            None,
            utc(2025, 12, 28, 16, 5),
            None,
        ),
        (
            "Refund for cancelled order",
            "I cancelled an order but have not seen the refund.",
            CaseStatus::Closed,
            "Medium",
            "Email",
            None,
            utc(2025, 9, 2, 10, 0),
            Some(utc(2025, 9, 4, 15, 30)),
        ),
    ];
    for (subject, description, status, priority, origin, order_id, created, closed) in cases {
        let number = world.next_case_no;
        world.next_case_no += 1;
        let case = Case {
            id: salesforce_id("500", number),
            case_number: case_number(number),
            subject: subject.to_owned(),
            description: Some(description.to_owned()),
            status,
            priority,
            origin,
            contact_id: contact_id.clone(),
            order_id: order_id.map(str::to_owned),
            created_date: created,
            closed_date: closed,
        };
        world.cases.insert(case.id.clone(), case);
    }
    let comments = [
        (
            1,
            "The tracking page says delivery exception. Can you help?",
            true,
            integration.clone(),
            utc(2025, 12, 20, 9, 16),
        ),
        (
            1,
            "We have asked ParcelCo to attempt delivery again tomorrow.",
            true,
            agent_user_id(1),
            utc(2025, 12, 20, 11, 40),
        ),
        (
            2,
            "Please deliver to 1 Poultry, London EC2R 8EJ from January on.",
            true,
            integration.clone(),
            utc(2025, 12, 28, 16, 6),
        ),
        (
            3,
            "I cancelled my order but have not seen the refund yet.",
            true,
            integration,
            utc(2025, 9, 2, 10, 1),
        ),
        (
            3,
            "The refund was issued today; it takes 3-5 business days.",
            true,
            agent_user_id(2),
            utc(2025, 9, 4, 15, 20),
        ),
        (
            3,
            "Refund reference RF-20250904-118.",
            false,
            agent_user_id(2),
            utc(2025, 9, 4, 15, 25),
        ),
    ];
    for (case_no, body, is_published, created_by_id, created) in comments {
        push_comment(
            world,
            salesforce_id("500", case_no),
            body,
            is_published,
            created_by_id,
            created,
        );
    }
}

fn push_comment(
    world: &mut World,
    parent_id: String,
    body: &str,
    is_published: bool,
    created_by_id: String,
    created_date: DateTime<Utc>,
) {
    let comment = CaseComment {
        id: salesforce_id("00a", world.next_comment_no),
        parent_id,
        body: body.to_owned(),
        is_published,
        created_date,
        created_by_id,
    };
    world.next_comment_no += 1;
    world.comments.insert(comment.id.clone(), comment);
}

fn seed_cases(world: &mut World, rng: &mut SplitMix64) {
    seed_ada_cases(world);
    let integration = integration_user_id();
    while world.next_case_no <= CASE_COUNT {
        let customer_id = format!("cust-{:04}", rng.between(2, CUSTOMER_COUNT as i64));
        let order_id = world
            .orders_by_customer
            .get(&customer_id)
            .filter(|orders| !orders.is_empty() && rng.chance(0.6))
            .map(|orders| rng.pick(orders).clone());
        let subject = match &order_id {
            Some(_) => *rng.pick(&ORDER_SUBJECTS),
            None => *rng.pick(&GENERAL_SUBJECTS),
        };
        let status = match rng.below(20) {
            0..=10 => CaseStatus::Closed,
            11..=13 => CaseStatus::New,
            14..=17 => CaseStatus::Working,
            _ => CaseStatus::Escalated,
        };
        let created_date = epoch() - Duration::seconds(rng.between(3_600, 400 * 86_400));
        let closed_date = (status == CaseStatus::Closed)
            .then(|| created_date + Duration::seconds(rng.between(3_600, 240 * 3_600)));
        let priority = match rng.below(20) {
            0..=9 => CASE_PRIORITIES[0],
            10..=16 => CASE_PRIORITIES[1],
            _ => CASE_PRIORITIES[2],
        };
        let origin = *rng.pick(&CASE_ORIGINS);
        let number = world.next_case_no;
        world.next_case_no += 1;
        let case = Case {
            id: salesforce_id("500", number),
            case_number: case_number(number),
            subject: subject.to_owned(),
            description: Some(match &order_id {
                Some(order_id) => format!("{subject} (order {order_id})"),
                None => subject.to_owned(),
            }),
            status,
            priority,
            origin,
            contact_id: world.contact_by_customer.get(&customer_id).cloned(),
            order_id,
            created_date,
            closed_date,
        };
        let comment_count = rng.between(1, 3);
        let mut at = created_date;
        for index in 0..comment_count {
            at += Duration::seconds(rng.between(60, 36 * 3_600));
            let from_agent = index % 2 == 1;
            let (body, published, author) = if from_agent {
                let body = *rng.pick(&AGENT_COMMENTS);
                let author = agent_user_id(rng.between(1, 2) as u64);
                (body, !body.starts_with("Internal"), author)
            } else {
                (*rng.pick(&CUSTOMER_COMMENTS), true, integration.clone())
            };
            push_comment(world, case.id.clone(), body, published, author, at);
        }
        world.cases.insert(case.id.clone(), case);
    }
}

/// How far a seeded return process got.
#[derive(Clone, Copy)]
enum ReturnStage {
    AwaitingApproval(TaskStatus),
    AwaitingPickup,
    PickedUp,
    Rejected,
    Aborted,
}

fn seed_processes(world: &mut World, rng: &mut SplitMix64, initiator: &str) {
    let delivered: Vec<(String, String)> = {
        let mut delivered: Vec<(String, String)> = world
            .orders
            .values()
            .filter(|order| {
                order.status == OrderStatus::Delivered && order.customer_id != "cust-0001"
            })
            .map(|order| (order.id.clone(), order.customer_id.clone()))
            .collect();
        // HashMap order is random per process; sort so the pick is deterministic.
        delivered.sort();
        delivered
    };

    // Ada: one return waiting for her to confirm the pickup, one rejected earlier.
    add_return(
        world,
        ("cust-0001", "ord-010801", "Item arrived damaged"),
        initiator,
        utc(2025, 12, 29, 14, 0),
        (ReturnStage::AwaitingPickup, "agent-01"),
        json!({"approved": true, "comment": "Approved, pickup arranged."}),
        Duration::hours(19) + Duration::minutes(30),
    );
    add_return(
        world,
        ("cust-0001", "ord-010801", "Changed my mind"),
        initiator,
        utc(2025, 11, 10, 8, 0),
        (ReturnStage::Rejected, "agent-02"),
        json!({"approved": false, "comment": "The return window for this item has passed."}),
        Duration::hours(3),
    );

    const REASONS: [&str; 5] = [
        "Item arrived damaged",
        "Wrong size",
        "Not as described",
        "Changed my mind",
        "Arrived too late",
    ];
    while world.next_process_id <= PROCESS_COUNT {
        let (order_id, customer_id) = rng.pick(&delivered).clone();
        // Instances 3..=7 always wait for an agent, so the agents' queue is never empty.
        let stage = if world.next_process_id <= 7 {
            ReturnStage::AwaitingApproval(TaskStatus::Ready)
        } else {
            match rng.below(100) {
                0..=9 => ReturnStage::AwaitingApproval(TaskStatus::Ready),
                10..=14 => ReturnStage::AwaitingApproval(TaskStatus::Reserved),
                15..=17 => ReturnStage::AwaitingApproval(TaskStatus::InProgress),
                18..=29 => ReturnStage::AwaitingPickup,
                30..=69 => ReturnStage::PickedUp,
                70..=84 => ReturnStage::Rejected,
                _ => ReturnStage::Aborted,
            }
        };
        let agent = if rng.chance(0.5) {
            "agent-01"
        } else {
            "agent-02"
        };
        let output = json!({"approved": !matches!(stage, ReturnStage::Rejected)});
        let started = epoch() - Duration::seconds(rng.between(86_400, 120 * 86_400));
        let decision_after = Duration::seconds(rng.between(600, 48 * 3_600));
        let reason = *rng.pick(&REASONS);
        add_return(
            world,
            (&customer_id, &order_id, reason),
            initiator,
            started,
            (stage, agent),
            output,
            decision_after,
        );
    }
}

/// Adds a return process instance at `stage`, with its tasks. `agent` owns the approval task
/// unless it is still `Ready`; a decided approval was completed with `approval_output`, and the
/// pickup task was created `decision_after` the start.
fn add_return(
    world: &mut World,
    (customer_id, order_id, reason): (&str, &str, &str),
    initiator: &str,
    started: DateTime<Utc>,
    (stage, agent): (ReturnStage, &str),
    approval_output: serde_json::Value,
    decision_after: Duration,
) {
    let id = world.next_process_id;
    world.next_process_id += 1;
    let (state, outcome) = match stage {
        ReturnStage::AwaitingApproval(_) | ReturnStage::AwaitingPickup => {
            (ProcessState::Active, None)
        }
        ReturnStage::PickedUp => (ProcessState::Completed, Some("picked-up")),
        ReturnStage::Rejected => (ProcessState::Completed, Some("rejected")),
        ReturnStage::Aborted => (ProcessState::Aborted, None),
    };
    world.processes.insert(
        id,
        ProcessInstance {
            id,
            state,
            started_at: started,
            initiator: initiator.to_owned(),
            customer_id: customer_id.to_owned(),
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
            outcome: outcome.map(str::to_owned),
        },
    );

    let push_task = |world: &mut World,
                     name: TaskName,
                     status: TaskStatus,
                     owner: Option<&str>,
                     created_on: DateTime<Utc>,
                     output: serde_json::Value| {
        let task = Task {
            id: world.next_task_id,
            name,
            status,
            actual_owner: owner.map(str::to_owned),
            potential_owner: match name {
                TaskName::ApproveReturn => PotentialOwner::Group(AGENTS_GROUP),
                TaskName::ConfirmPickup => PotentialOwner::User(customer_id.to_owned()),
            },
            created_on,
            process_instance_id: id,
            customer_id: customer_id.to_owned(),
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
            output: match output {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        };
        world.next_task_id += 1;
        world.tasks.insert(task.id, task);
    };

    let approval = TaskName::ApproveReturn;
    match stage {
        ReturnStage::AwaitingApproval(status) => {
            let owner = (status != TaskStatus::Ready).then_some(agent);
            push_task(world, approval, status, owner, started, json!({}));
        }
        ReturnStage::Aborted => {
            push_task(
                world,
                approval,
                TaskStatus::Exited,
                None,
                started,
                json!({}),
            );
        }
        ReturnStage::AwaitingPickup | ReturnStage::PickedUp | ReturnStage::Rejected => {
            let completed = TaskStatus::Completed;
            push_task(
                world,
                approval,
                completed,
                Some(agent),
                started,
                approval_output,
            );
            let pickup_created = started + decision_after;
            let pickup = TaskName::ConfirmPickup;
            match stage {
                ReturnStage::AwaitingPickup => {
                    let ready = TaskStatus::Ready;
                    push_task(world, pickup, ready, None, pickup_created, json!({}));
                }
                ReturnStage::PickedUp => {
                    let owner = Some(customer_id);
                    push_task(world, pickup, completed, owner, pickup_created, json!({}));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let a = seed_world(7, "kieserver");
        let b = seed_world(7, "kieserver");
        let c = seed_world(8, "kieserver");
        let customers = |world: &World| {
            world
                .customers
                .values()
                .map(|customer| customer.email.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(customers(&a), customers(&b));
        assert_ne!(customers(&a), customers(&c));
        assert_eq!(
            a.orders["ord-004242"].placed_at,
            b.orders["ord-004242"].placed_at
        );
    }

    #[test]
    fn the_world_has_the_promised_size_and_shape() {
        let world = seed_world(42, "kieserver");
        assert_eq!(world.customers.len(), 1_000);
        assert_eq!(world.products.len(), 500);
        assert_eq!(world.orders.len(), 20_000);
        assert_eq!(world.contacts.len(), 1_000);
        assert_eq!(world.cases.len(), 1_500);
        assert_eq!(world.processes.len(), 300);
        assert!((1..=10).all(|n| world.products[&format!("prod-{n:04}")].in_stock));
        let out_of_stock = world.products.values().filter(|p| !p.in_stock).count();
        assert!(
            (10..=45).contains(&out_of_stock),
            "{out_of_stock} out of stock"
        );
        let shipped = world
            .orders
            .values()
            .filter(|order| order.tracking_number.is_some())
            .count();
        assert!((7_000..=9_000).contains(&shipped), "{shipped} shipped");
        assert_eq!(world.parcels.len(), shipped);
        assert!(
            world
                .parcels
                .values()
                .all(|p| (1..=6).contains(&p.events.len()))
        );
        let ada = world.customer_orders("cust-0001");
        assert_eq!(ada.len(), 12);
        assert_eq!(ada[0].id, "ord-019801");
        let agent_queue = world
            .tasks
            .values()
            .filter(|task| task.name == TaskName::ApproveReturn && task.status == TaskStatus::Ready)
            .count();
        assert!(agent_queue >= 5);
    }

    #[test]
    fn seeding_is_fast() {
        let started = std::time::Instant::now();
        let _world = seed_world(42, "kieserver");
        let elapsed = started.elapsed();
        eprintln!("seeding took {elapsed:?}");
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
    }
}
