//! Per-request dataloaders: every field that reads an upstream goes through one.
//!
//! A [`Loaders`] is made for each request (and for each event a subscription resolves), never
//! shared between requests: its caches hold what this request has already fetched, so no entity
//! is fetched twice in one request, and loads issued at the same depth of a query go out as one
//! batch. Upstreams with bulk reads get one call per batch; upstreams without (the carrier, the
//! process server's single reads) are fanned out, one call per distinct key, bounded by the
//! adapter's concurrency budget.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::Loader;
use futures::future::join_all;

use crate::batch::{Batcher, Tasks};

use crate::cache::{Cache, Cached, Entry, StaleLog, StaleRead, now_ms};
use crate::events::Key;
use crate::ids::{CaseId, CustomerId, OrderId, ProductId};
use crate::ports::{Backend, Carrier, Crm, Ports, ProcessServer, UpstreamResult};
use crate::ports::{Source, UpstreamError};
use crate::records::*;

/// Most ids in one backend bulk read (the backend's own limit).
pub(crate) const BACKEND_MAX_BATCH: usize = 100;
/// Most ids in one SOQL `IN (...)` list, well inside Salesforce's URL and query length limits.
pub(crate) const CRM_MAX_BATCH: usize = 200;
/// Most support cases read (and shown) per customer: the newest.
pub(crate) const MAX_CASES_PER_CUSTOMER: usize = 50;

/// All loaders of one request.
pub(crate) struct Loaders {
    /// Their batches in flight, aborted with the loaders.
    _tasks: Arc<Tasks>,
    pub(crate) customers: Batcher<CustomerId, CustomerLoader>,
    pub(crate) products: Batcher<ProductId, ProductLoader>,
    pub(crate) orders: Batcher<OrderId, OrderLoader>,
    pub(crate) customer_orders: Batcher<(CustomerId, OrderPageQuery), CustomerOrdersLoader>,
    pub(crate) contacts: Batcher<CustomerId, ContactLoader>,
    /// Every case of a customer (up to [`MAX_CASES_PER_CUSTOMER`]).
    pub(crate) customer_cases: Batcher<CustomerId, CustomerCasesLoader>,
    /// The cases of a customer that are not closed (up to [`MAX_CASES_PER_CUSTOMER`]).
    pub(crate) customer_open_cases: Batcher<CustomerId, CustomerCasesLoader>,
    pub(crate) cases: Batcher<CaseId, CaseLoader>,
    pub(crate) case_comments: Batcher<CaseId, CaseCommentsLoader>,
    pub(crate) user_tasks: Batcher<String, UserTasksLoader>,
    pub(crate) tasks: Batcher<i64, TaskLoader>,
    pub(crate) process_instances: Batcher<i64, ProcessInstanceLoader>,
    pub(crate) customer_returns: Batcher<CustomerId, CustomerReturnsLoader>,
    pub(crate) tracking: Batcher<String, TrackingLoader>,
}

impl Loaders {
    /// Fresh loaders (empty caches) over the given ports, noting stale reads in `stale`.
    ///
    /// Each at its stage of its upstream's reads (see `batch`): loads keyed by a customer
    /// or a user (the customer, their order pages, contact, cases, returns, tasks) first,
    /// since none of them leads to another; then loads by an entity's id (an order, a case,
    /// a task); then what those lead to (an order's products, a case's comments, a task's
    /// process).
    pub(crate) fn new(ports: &Ports, stale: &Arc<StaleLog>) -> Self {
        let tasks = Arc::new(Tasks::default());
        let through = Through {
            cache: ports.cache.clone(),
            stale: stale.clone(),
        };
        let backend = &ports.backend;
        let crm = &ports.crm;
        let process = &ports.process;
        let carrier = &ports.carrier;
        Self {
            _tasks: Arc::clone(&tasks),
            customers: Batcher::new(
                CustomerLoader(backend.clone(), through.clone()),
                (Source::Backend, 0),
                BACKEND_MAX_BATCH,
                &tasks,
            ),
            products: Batcher::new(
                ProductLoader(backend.clone(), through.clone()),
                (Source::Backend, 2),
                BACKEND_MAX_BATCH,
                &tasks,
            ),
            orders: Batcher::new(
                OrderLoader(backend.clone(), through.clone()),
                (Source::Backend, 1),
                BACKEND_MAX_BATCH,
                &tasks,
            ),
            customer_orders: Batcher::new(
                CustomerOrdersLoader(backend.clone()),
                (Source::Backend, 0),
                BACKEND_MAX_BATCH,
                &tasks,
            ),
            contacts: Batcher::new(
                ContactLoader(crm.clone()),
                (Source::Crm, 0),
                CRM_MAX_BATCH,
                &tasks,
            ),
            customer_cases: Batcher::new(
                CustomerCasesLoader::new(crm, false),
                (Source::Crm, 0),
                CRM_MAX_BATCH,
                &tasks,
            ),
            customer_open_cases: Batcher::new(
                CustomerCasesLoader::new(crm, true),
                (Source::Crm, 0),
                CRM_MAX_BATCH,
                &tasks,
            ),
            cases: Batcher::new(
                CaseLoader(crm.clone()),
                (Source::Crm, 1),
                CRM_MAX_BATCH,
                &tasks,
            ),
            case_comments: Batcher::new(
                CaseCommentsLoader(crm.clone()),
                (Source::Crm, 2),
                CRM_MAX_BATCH,
                &tasks,
            ),
            user_tasks: Batcher::new(
                UserTasksLoader(process.clone()),
                (Source::Process, 0),
                usize::MAX,
                &tasks,
            ),
            tasks: Batcher::new(
                TaskLoader(process.clone()),
                (Source::Process, 1),
                usize::MAX,
                &tasks,
            ),
            process_instances: Batcher::new(
                ProcessInstanceLoader(process.clone()),
                (Source::Process, 2),
                usize::MAX,
                &tasks,
            ),
            customer_returns: Batcher::new(
                CustomerReturnsLoader(process.clone()),
                (Source::Process, 0),
                usize::MAX,
                &tasks,
            ),
            tracking: Batcher::new(
                TrackingLoader(carrier.clone(), through),
                (Source::Carrier, 0),
                usize::MAX,
                &tasks,
            ),
        }
    }
}

impl Loaders {
    /// The entities these loaders read, as events name them ([`Key`]): what a live query
    /// listens under until its next run.
    pub(crate) fn read(&self) -> HashSet<Key> {
        let customers = self.customers.loaded_keys().into_iter();
        let customers = customers
            .chain(
                self.customer_orders
                    .loaded_keys()
                    .into_iter()
                    .map(|(c, _)| c),
            )
            .chain(self.contacts.loaded_keys())
            .chain(self.customer_cases.loaded_keys())
            .chain(self.customer_open_cases.loaded_keys())
            .chain(self.customer_returns.loaded_keys())
            .map(Key::Customer);
        let orders = self.orders.loaded_keys().into_iter().map(Key::Order);
        let products = self.products.loaded_keys().into_iter().map(Key::Product);
        let cases = self.cases.loaded_keys().into_iter();
        let cases = cases.chain(self.case_comments.loaded_keys()).map(Key::Case);
        let users = self.user_tasks.loaded_keys().into_iter().map(Key::Audience);
        customers
            .chain(orders)
            .chain(products)
            .chain(cases)
            .chain(users)
            .collect()
    }
}

/// Where resolvers find the current [`Loaders`]: one per request. A subscription calls
/// [`LoaderScope::renew`] before resolving each event, so every event is read fresh from the
/// upstreams rather than from what the subscription's first event cached.
pub(crate) struct LoaderScope {
    ports: Ports,
    /// What every loaders of the scope served stale.
    stale: Arc<StaleLog>,
    /// A std mutex: held only to swap or clone the `Arc`, never across an `.await`.
    current: std::sync::Mutex<Arc<Loaders>>,
}

impl LoaderScope {
    /// A scope with fresh loaders over `ports`.
    pub(crate) fn new(ports: &Ports) -> Self {
        let stale = Arc::new(StaleLog::default());
        Self {
            ports: ports.clone(),
            current: std::sync::Mutex::new(Arc::new(Loaders::new(ports, &stale))),
            stale,
        }
    }

    /// The entities served stale since the last call.
    pub(crate) fn take_stale(&self) -> Vec<StaleRead> {
        self.stale.take()
    }

    /// The loaders to use now.
    pub(crate) fn current(&self) -> Arc<Loaders> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Starts over with empty caches.
    pub(crate) fn renew(&self) {
        let fresh = Arc::new(Loaders::new(&self.ports, &self.stale));
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
    }
}

/// Turns a fan-out loader's answer for one key into a plain result. (A fan-out loader's value
/// is an [`UpstreamResult`]: each key's call may fail on its own.)
pub(crate) fn settle<T>(
    loaded: UpstreamResult<Option<UpstreamResult<T>>>,
) -> UpstreamResult<Option<T>> {
    loaded?.transpose()
}

/// Calls `fetch` once per key, concurrently, and keeps each key's own outcome.
async fn fan_out<K, T, F, Fut>(keys: &[K], fetch: F) -> HashMap<K, UpstreamResult<T>>
where
    K: Clone + Eq + Hash,
    F: Fn(K) -> Fut,
    Fut: Future<Output = UpstreamResult<Option<T>>>,
{
    let answers = join_all(keys.iter().cloned().map(|k| {
        let fut = fetch(k.clone());
        async move { (k, fut.await) }
    }))
    .await;
    answers
        .into_iter()
        .filter_map(|(k, answer)| match answer {
            Ok(Some(v)) => Some((k, Ok(v))),
            Ok(None) => None,
            Err(e) => Some((k, Err(e))),
        })
        .collect()
}

/// The entity cache as one request reads it: the store, and where the request's stale
/// reads are noted.
#[derive(Clone)]
pub(crate) struct Through {
    cache: Arc<dyn Cache>,
    stale: Arc<StaleLog>,
}

impl Through {
    /// Reads `keys` through the cache: fresh hits are decoded, the misses fetched with one
    /// call to `fetch` and stored. `cacheable` picks what of a fetched value may be stored (a
    /// fan-out loader's failures are not); `wrap` turns a stored value back into a loaded
    /// one; `failed` tells a fetched value that is its upstream's failure (a fan-out
    /// loader's per-key error).
    ///
    /// A key whose copy is past its TTL but within the stale-if-error grace is a miss; when
    /// its fetch fails, the copy is served instead and noted in the request's
    /// [`StaleLog`]. For a bulk fetch that fails as a whole, that is only when every missed
    /// key has a copy (the batch's one error cannot stand for some keys only).
    async fn read<K, V, W, F, Fut>(
        &self,
        kind: Cached,
        keys: &[K],
        fetch: F,
        cacheable: fn(&W) -> Option<&V>,
        wrap: fn(V) -> W,
        failed: fn(&W) -> bool,
    ) -> UpstreamResult<HashMap<K, W>>
    where
        K: Display + Clone + Eq + Hash,
        V: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = UpstreamResult<HashMap<K, W>>>,
    {
        let cache_keys: Vec<String> = keys.iter().map(|k| kind.key(&k.to_string())).collect();
        let stored = self.cache.get_many(&cache_keys).await;
        let now = now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ttl_ms = ms(kind.ttl());
        let keep_ms = ttl_ms.saturating_add(ms(self.cache.stale_if_error()));
        let mut loaded = HashMap::with_capacity(keys.len());
        let mut misses = Vec::new();
        let mut stale = HashMap::new();
        for (key, bytes) in keys.iter().zip(stored) {
            match bytes.and_then(|b| serde_json::from_slice::<Entry<V>>(&b).ok()) {
                Some(entry) if now.saturating_sub(entry.at) < ttl_ms => {
                    loaded.insert(key.clone(), wrap(entry.v));
                }
                Some(entry) if now.saturating_sub(entry.at) < keep_ms => {
                    stale.insert(key.clone(), entry);
                    misses.push(key.clone());
                }
                _ => misses.push(key.clone()),
            }
        }
        metrics::counter!("switchyard_cache_requests_total", "result" => "hit")
            .increment(loaded.len() as u64);
        metrics::counter!("switchyard_cache_requests_total", "result" => "miss")
            .increment(misses.len() as u64);
        if misses.is_empty() {
            return Ok(loaded);
        }
        let mut fetched = match fetch(misses.clone()).await {
            Ok(fetched) => fetched,
            Err(e) if e.is_failure() && misses.iter().all(|k| stale.contains_key(k)) => {
                for (key, entry) in stale {
                    loaded.insert(key.clone(), wrap(self.served_stale(kind, &key, entry, now)));
                }
                return Ok(loaded);
            }
            Err(e) => return Err(e),
        };
        let entries = fetched
            .iter()
            .filter_map(|(k, w)| {
                let entry = Entry {
                    at: now,
                    v: cacheable(w)?,
                };
                Some((kind.key(&k.to_string()), serde_json::to_vec(&entry).ok()?))
            })
            .collect();
        let keep = kind.ttl() + self.cache.stale_if_error();
        self.cache.put_many(entries, keep).await;
        for (key, value) in &mut fetched {
            if failed(value)
                && let Some(entry) = stale.remove(key)
            {
                *value = wrap(self.served_stale(kind, key, entry, now));
            }
        }
        loaded.extend(fetched);
        Ok(loaded)
    }

    /// [`Through::read`] for a bulk read: what is fetched is stored as it is, and fails as a
    /// whole.
    async fn read_bulk<K, V, F, Fut>(
        &self,
        kind: Cached,
        keys: &[K],
        fetch: F,
    ) -> UpstreamResult<HashMap<K, V>>
    where
        K: Display + Clone + Eq + Hash,
        V: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = UpstreamResult<HashMap<K, V>>>,
    {
        self.read(kind, keys, fetch, |v| Some(v), |v| v, |_| false)
            .await
    }

    /// Notes that `key` is served from its stale copy, and hands the copy out.
    fn served_stale<K: Display, V>(&self, kind: Cached, key: &K, entry: Entry<V>, now: u64) -> V {
        let age = Duration::from_millis(now.saturating_sub(entry.at));
        tracing::info!(
            entity = kind.type_name(),
            id = %key,
            age_s = age.as_secs(),
            "upstream failed: serving a stale copy"
        );
        metrics::counter!("switchyard_cache_stale_served_total", "entity" => kind.type_name())
            .increment(1);
        self.stale.note(StaleRead {
            type_name: kind.type_name(),
            id: key.to_string(),
            age,
        });
        entry.v
    }
}

fn upstream_failed<V>(w: &UpstreamResult<V>) -> bool {
    w.as_ref().is_err_and(UpstreamError::is_failure)
}

fn succeeded<V>(w: &UpstreamResult<V>) -> Option<&V> {
    w.as_ref().ok()
}

/// Groups records under the key each one belongs to; every asked key gets an entry.
fn group_by<K, T>(keys: &[K], records: Vec<T>, key_of: impl Fn(&T) -> K) -> HashMap<K, Vec<T>>
where
    K: Clone + Eq + Hash,
{
    let mut grouped: HashMap<K, Vec<T>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for record in records {
        if let Some(list) = grouped.get_mut(&key_of(&record)) {
            list.push(record);
        }
    }
    grouped
}

/// Indexes records by their id.
fn index_by<K: Eq + Hash, T>(records: Vec<T>, key_of: impl Fn(&T) -> K) -> HashMap<K, T> {
    records.into_iter().map(|r| (key_of(&r), r)).collect()
}

/// Customers by id (backend bulk read, through the cache).
pub(crate) struct CustomerLoader(Arc<dyn Backend>, Through);

impl Loader<CustomerId> for CustomerLoader {
    type Value = CustomerRecord;
    type Error = UpstreamError;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> UpstreamResult<HashMap<CustomerId, CustomerRecord>> {
        let fetch = |ids: Vec<CustomerId>| async move {
            Ok(index_by(self.0.customers_by_ids(&ids).await?, |c| {
                c.id.clone()
            }))
        };
        self.1.read_bulk(Cached::Customer, keys, fetch).await
    }
}

/// Products by id (backend bulk read, through the cache).
pub(crate) struct ProductLoader(Arc<dyn Backend>, Through);

impl Loader<ProductId> for ProductLoader {
    type Value = ProductRecord;
    type Error = UpstreamError;

    async fn load(&self, keys: &[ProductId]) -> UpstreamResult<HashMap<ProductId, ProductRecord>> {
        let fetch = |ids: Vec<ProductId>| async move {
            Ok(index_by(self.0.products_by_ids(&ids).await?, |p| {
                p.id.clone()
            }))
        };
        self.1.read_bulk(Cached::Product, keys, fetch).await
    }
}

/// Orders by id (backend bulk read, through the cache; order events invalidate).
pub(crate) struct OrderLoader(Arc<dyn Backend>, Through);

impl Loader<OrderId> for OrderLoader {
    type Value = OrderRecord;
    type Error = UpstreamError;

    async fn load(&self, keys: &[OrderId]) -> UpstreamResult<HashMap<OrderId, OrderRecord>> {
        let fetch = |ids: Vec<OrderId>| async move {
            Ok(index_by(self.0.orders_by_ids(&ids).await?, |o| {
                o.id.clone()
            }))
        };
        self.1.read_bulk(Cached::Order, keys, fetch).await
    }
}

/// One page of a customer's orders. The backend pages per customer, so each distinct
/// (customer, page) is one call.
pub(crate) struct CustomerOrdersLoader(Arc<dyn Backend>);

impl Loader<(CustomerId, OrderPageQuery)> for CustomerOrdersLoader {
    type Value = UpstreamResult<Page<OrderRecord>>;
    type Error = UpstreamError;

    async fn load(
        &self,
        keys: &[(CustomerId, OrderPageQuery)],
    ) -> UpstreamResult<HashMap<(CustomerId, OrderPageQuery), Self::Value>> {
        Ok(fan_out(keys, |(customer, query)| async move {
            self.0.orders_of_customer(&customer, &query).await.map(Some)
        })
        .await)
    }
}

/// CRM contacts by customer id (one SOQL query).
pub(crate) struct ContactLoader(Arc<dyn Crm>);

impl Loader<CustomerId> for ContactLoader {
    type Value = ContactRecord;
    type Error = UpstreamError;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> UpstreamResult<HashMap<CustomerId, ContactRecord>> {
        Ok(index_by(
            self.0.contacts_by_customer_ids(keys).await?,
            |c| c.customer_id.clone(),
        ))
    }
}

/// The newest support cases of customers, all or only the open ones (one SOQL query for the
/// batch, filtered and bounded by the CRM).
pub(crate) struct CustomerCasesLoader {
    crm: Arc<dyn Crm>,
    query: CaseQuery,
}

impl CustomerCasesLoader {
    fn new(crm: &Arc<dyn Crm>, open_only: bool) -> Self {
        Self {
            crm: crm.clone(),
            query: CaseQuery {
                open_only,
                per_customer: MAX_CASES_PER_CUSTOMER,
            },
        }
    }
}

impl Loader<CustomerId> for CustomerCasesLoader {
    type Value = Vec<CaseRecord>;
    type Error = UpstreamError;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> UpstreamResult<HashMap<CustomerId, Vec<CaseRecord>>> {
        let cases = self.crm.cases_by_customer_ids(keys, &self.query).await?;
        Ok(group_by(keys, cases, |c| c.customer_id.clone()))
    }
}

/// Support cases by id (one SOQL query).
pub(crate) struct CaseLoader(Arc<dyn Crm>);

impl Loader<CaseId> for CaseLoader {
    type Value = CaseRecord;
    type Error = UpstreamError;

    async fn load(&self, keys: &[CaseId]) -> UpstreamResult<HashMap<CaseId, CaseRecord>> {
        Ok(index_by(self.0.cases_by_ids(keys).await?, |c| c.id.clone()))
    }
}

/// Comments of cases (one SOQL query for the batch).
pub(crate) struct CaseCommentsLoader(Arc<dyn Crm>);

impl Loader<CaseId> for CaseCommentsLoader {
    type Value = Vec<CaseCommentRecord>;
    type Error = UpstreamError;

    async fn load(
        &self,
        keys: &[CaseId],
    ) -> UpstreamResult<HashMap<CaseId, Vec<CaseCommentRecord>>> {
        let comments = self.0.comments_by_case_ids(keys).await?;
        Ok(group_by(keys, comments, |c| c.case_id.clone()))
    }
}

/// Open tasks of a user (one call per user: KIE has no multi-user query).
pub(crate) struct UserTasksLoader(Arc<dyn ProcessServer>);

impl Loader<String> for UserTasksLoader {
    type Value = UpstreamResult<Vec<TaskRecord>>;
    type Error = UpstreamError;

    async fn load(&self, keys: &[String]) -> UpstreamResult<HashMap<String, Self::Value>> {
        Ok(fan_out(keys, |user| async move {
            self.0.tasks_for_user(&user).await.map(Some)
        })
        .await)
    }
}

/// Tasks by id with their input data (one call per task).
pub(crate) struct TaskLoader(Arc<dyn ProcessServer>);

impl Loader<i64> for TaskLoader {
    type Value = UpstreamResult<TaskRecord>;
    type Error = UpstreamError;

    async fn load(&self, keys: &[i64]) -> UpstreamResult<HashMap<i64, Self::Value>> {
        Ok(fan_out(keys, |id| self.0.task(id)).await)
    }
}

/// Process instances by id (one call per instance).
pub(crate) struct ProcessInstanceLoader(Arc<dyn ProcessServer>);

impl Loader<i64> for ProcessInstanceLoader {
    type Value = UpstreamResult<ProcessInstanceRecord>;
    type Error = UpstreamError;

    async fn load(&self, keys: &[i64]) -> UpstreamResult<HashMap<i64, Self::Value>> {
        Ok(fan_out(keys, |id| self.0.process_instance(id)).await)
    }
}

/// Return requests of a customer (one call per customer).
pub(crate) struct CustomerReturnsLoader(Arc<dyn ProcessServer>);

impl Loader<CustomerId> for CustomerReturnsLoader {
    type Value = UpstreamResult<Vec<ProcessInstanceRecord>>;
    type Error = UpstreamError;

    async fn load(&self, keys: &[CustomerId]) -> UpstreamResult<HashMap<CustomerId, Self::Value>> {
        Ok(fan_out(keys, |c| async move {
            self.0.returns_of_customer(&c).await.map(Some)
        })
        .await)
    }
}

/// Parcel tracking (the carrier has no bulk read: one call per distinct tracking number not
/// in the cache; scan events invalidate).
pub(crate) struct TrackingLoader(Arc<dyn Carrier>, Through);

impl Loader<String> for TrackingLoader {
    type Value = UpstreamResult<TrackingRecord>;
    type Error = UpstreamError;

    async fn load(&self, keys: &[String]) -> UpstreamResult<HashMap<String, Self::Value>> {
        let fetch = |numbers: Vec<String>| async move {
            Ok(fan_out(&numbers, |n| async move { self.0.track(&n).await }).await)
        };
        self.1
            .read(
                Cached::Tracking,
                keys,
                fetch,
                succeeded,
                Ok,
                upstream_failed,
            )
            .await
    }
}
