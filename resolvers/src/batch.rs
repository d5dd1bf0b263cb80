//! One request's loads, batched without a clock.
//!
//! async-graphql resolves the fields of one depth of a query (of every item of a list) in
//! one poll of the request's future: each field asks its loader for a key and waits. So the
//! keys of one wave are all asked for when that poll returns, and that is when
//! [`Batched`] (which runs a request's execution, or a subscription's stream) dispatches
//! them: one batch per loader, in a task of its own. async-graphql's own `DataLoader` waits
//! a fixed delay (1 ms) for the wave instead, at every depth of every request, and a
//! timer's wake-up each time.
//!
//! Loads of one upstream leave in the graph's order. Each loader has a stage: how many
//! loads of its upstream come before it in the graph (a customer, then their orders, then
//! the orders' products). A loader's keys wait while a loader of the same upstream at an
//! earlier stage has keys due or in flight in the same [`Batched`], since what that load
//! answers may ask this loader for more keys. So the operations of one HTTP batch, a product
//! list beside a home screen, read their products in one call, not one per depth. A loader
//! waits for at most [`MAX_HELD_ROUNDS`] rounds of earlier stages (so a long chain of reads
//! beside it costs it at most two upstream round trips), and never for another upstream (a
//! slow carrier never holds the products). The parts of a `@defer`red operation run
//! [`Batched::unstaged`]: its first part never waits for the deferred parts' reads.
//!
//! A [`Batcher`] keeps what its request loaded (no entity is fetched twice in one request)
//! and who waits for each key asked for and not answered yet, so a key asked for again
//! while its batch is in flight joins that batch instead of starting another. A load made
//! outside [`Batched`] (a task of its own) is dispatched after [`FALLBACK_DELAY`], as
//! async-graphql's loaders do: slower, never stuck.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_graphql::dataloader::Loader;
use futures::future::BoxFuture;
use futures::{FutureExt as _, Stream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ports::{Source, UpstreamError};

/// How long a load made outside [`Batched`] waits for others to join its batch.
const FALLBACK_DELAY: Duration = Duration::from_millis(1);

tokio::task_local! {
    /// The wave of the request being polled.
    static WAVE: Arc<Wave>;
}

/// Where a loader sits in the graph: its upstream, and how many loads of that upstream
/// come before it (see the module's doc).
pub(crate) type Stage = (Source, u8);

/// Most times a loader's keys wait for an earlier stage of their upstream to land (a
/// customer, then their orders): past that they go, so a long chain of another operation's
/// reads (customer, orders, customer, orders...) delays them by at most this many rounds.
const MAX_HELD_ROUNDS: u8 = 2;

/// The loads of the request (or the HTTP batch) being polled: the loaders with keys
/// waiting to be sent, and how many batches are in flight at each stage.
#[derive(Default)]
struct Wave {
    /// Whether later stages wait for earlier ones (see the module's doc).
    unstaged: bool,
    state: Mutex<WaveState>,
}

#[derive(Default)]
struct WaveState {
    /// Loaders with keys waiting: asked for during the current poll, or held for an
    /// earlier stage (with how many rounds of it they waited for so far).
    due: Vec<(Arc<dyn Flush>, u8)>,
    /// Batches in flight, by stage.
    in_flight: HashMap<Stage, usize>,
    /// Wakes the request when a batch lands while loaders are held (their keys' waiters
    /// may all have been woken already, or dropped).
    waker: Option<Waker>,
}

impl Wave {
    fn lock(&self) -> MutexGuard<'_, WaveState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, loader: Arc<dyn Flush>) {
        self.lock().due.push((loader, 0));
    }

    /// Sends the batches whose earlier stages have nothing due or in flight (or that
    /// waited [`MAX_HELD_ROUNDS`] already); holds the others until those land.
    fn dispatch(self: &Arc<Self>, waker: &Waker) {
        let ready = {
            let mut state = self.lock();
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                state.waker = Some(waker.clone());
            }
            if state.due.is_empty() {
                return;
            }
            // The lowest stage due or in flight, per upstream (by discriminant: `Source::ALL`).
            let mut lowest = [u8::MAX; Source::ALL.len()];
            let busy = state.in_flight.keys().copied();
            for (source, stage) in busy.chain(state.due.iter().map(|(l, _)| l.stage())) {
                let slot = &mut lowest[source as usize];
                *slot = (*slot).min(stage);
            }
            let (mut ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.due)
                .into_iter()
                .partition(|(loader, _)| {
                    let (source, stage) = loader.stage();
                    self.unstaged || stage <= lowest[source as usize]
                });
            // A round: an earlier stage of a held loader's upstream leaves now. One more
            // than it may wait for, and it leaves with it.
            let mut held = Vec::with_capacity(waiting.len());
            for (loader, rounds) in waiting {
                let (source, stage) = loader.stage();
                let round = ready.iter().any(|(l, _)| {
                    let (s, st) = l.stage();
                    s == source && st < stage
                });
                match (round, rounds) {
                    (true, rounds) if rounds >= MAX_HELD_ROUNDS => ready.push((loader, rounds)),
                    (true, rounds) => held.push((loader, rounds + 1)),
                    (false, rounds) => held.push((loader, rounds)),
                }
            }
            state.due = held;
            ready
        };
        for (loader, _) in ready {
            loader.flush(Some(self));
        }
    }
}

/// A batch in flight, counted in its [`Wave`] until it lands (or is aborted).
struct InFlight {
    wave: Arc<Wave>,
    stage: Stage,
}

impl InFlight {
    fn new(wave: &Arc<Wave>, stage: Stage) -> Self {
        *wave.lock().in_flight.entry(stage).or_default() += 1;
        Self {
            wave: Arc::clone(wave),
            stage,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.wave.lock();
            if let Entry::Occupied(mut count) = state.in_flight.entry(self.stage) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
            (!state.due.is_empty())
                .then(|| state.waker.clone())
                .flatten()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A loader with keys waiting to be sent.
trait Flush: Send + Sync {
    /// Where it sits in the graph.
    fn stage(&self) -> Stage;

    /// Sends the keys asked for so far, in batches (counted in `wave` while in flight).
    fn flush(self: Arc<Self>, wave: Option<&Arc<Wave>>);
}

/// Runs a request's execution (or, with [`Batched::stream`], a subscription's stream) so
/// that the loads each poll asks for are sent when the poll returns. Inside another
/// `Batched` (the operations of one HTTP batch), it leaves that to the outer one, so the
/// operations' loads batch together.
pub struct Batched<W> {
    work: Pin<Box<W>>,
    wave: Arc<Wave>,
}

impl<W> Batched<W> {
    /// `work`, batched.
    pub fn new(work: W) -> Self {
        Self {
            work: Box::pin(work),
            wave: Arc::default(),
        }
    }

    /// `work`, batched, each loader's keys sent when the poll that asked for them returns
    /// whatever else is in flight: for the parts of one `@defer`red operation, whose first
    /// part must never wait for its deferred parts' reads.
    pub fn unstaged(work: W) -> Self {
        Self {
            work: Box::pin(work),
            wave: Arc::new(Wave {
                unstaged: true,
                state: Mutex::default(),
            }),
        }
    }

    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut W>, &mut Context<'_>) -> T,
    ) -> T {
        if WAVE.try_with(|_| ()).is_ok() {
            return poll(self.work.as_mut(), cx);
        }
        let out = WAVE.sync_scope(Arc::clone(&self.wave), || poll(self.work.as_mut(), cx));
        self.wave.dispatch(cx.waker());
        out
    }
}

impl<W: Future> Future for Batched<W> {
    type Output = W::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<W::Output> {
        self.get_mut().poll_with(cx, |work, cx| work.poll(cx))
    }
}

impl<W: Stream> Stream for Batched<W> {
    type Item = W::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<W::Item>> {
        self.get_mut().poll_with(cx, |work, cx| work.poll_next(cx))
    }
}

/// The loaders' batch tasks: aborted when the loaders go (the request ended, or gave up at
/// its deadline), so that an upstream call nobody waits for any more is not made.
#[derive(Default)]
pub(crate) struct Tasks(std::sync::Mutex<Vec<tokio::task::AbortHandle>>);

impl Tasks {
    /// Runs `batch` in a task of its own, in the current span and with the `deadline` of
    /// the request that asked for it (so that its log lines carry the request id, its
    /// upstream calls are the request's in a trace, and they stop at its deadline).
    pub(crate) fn spawn(&self, batch: BoxFuture<'static, ()>, deadline: Option<Instant>) {
        use tracing::Instrument as _;
        let batch = batch.instrument(tracing::Span::current());
        let handle = match deadline {
            Some(deadline) => tokio::spawn(crate::deadline::within(deadline, batch)),
            None => tokio::spawn(batch),
        };
        let mut handles = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        handles.retain(|h| !h.is_finished());
        handles.push(handle.abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let handles = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for handle in handles.drain(..) {
            handle.abort();
        }
    }
}

/// What one key's waiters are told.
type Answer<V> = Result<Option<V>, UpstreamError>;

/// One loader of one request: its cache, and the keys asked for and not answered yet.
pub(crate) struct Batcher<K, L: Loader<K>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    shared: Arc<Shared<K, L>>,
}

struct Shared<K, L: Loader<K>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    loader: L,
    /// Which upstream it reads (to name in the error of a batch that failed inside), and
    /// where it sits in the graph.
    stage: Stage,
    /// Most keys in one batch.
    max_batch: usize,
    /// The request's batch tasks, aborted when its loaders go: held by the loaders, not
    /// here, since a batch in flight holds this.
    tasks: Weak<Tasks>,
    state: Mutex<State<K, L::Value>>,
}

struct State<K, V> {
    /// What this request loaded, by key (keys that were not found are asked again).
    loaded: HashMap<K, V>,
    /// Keys asked for and not yet sent, in the order asked.
    queued: Vec<K>,
    /// Who waits for each key asked for and not answered yet (queued or in flight).
    waiting: HashMap<K, Vec<oneshot::Sender<Answer<V>>>>,
    /// Whether the queued keys will be sent (this loader is in a wave, or a fallback task
    /// waits to send them).
    due: bool,
    /// The deadline of the request that asked for the queued keys, taken when it asked: a
    /// wave may leave from outside the request's deadline (an HTTP batch's waves leave from
    /// around all of its operations).
    deadline: Option<Instant>,
}

impl<K, L> Batcher<K, L>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    L: Loader<K, Error = UpstreamError>,
{
    /// A loader with an empty cache over `loader`, at `stage` of its upstream's reads,
    /// whose batches run in `tasks` with at most `max_batch` keys each.
    pub(crate) fn new(loader: L, stage: Stage, max_batch: usize, tasks: &Arc<Tasks>) -> Self {
        Self {
            shared: Arc::new(Shared {
                loader,
                stage,
                max_batch: max_batch.max(1),
                tasks: Arc::downgrade(tasks),
                state: Mutex::new(State {
                    loaded: HashMap::new(),
                    queued: Vec::new(),
                    waiting: HashMap::new(),
                    due: false,
                    deadline: None,
                }),
            }),
        }
    }

    /// The value of `key` (`None`: not found): from what this request loaded, or with the
    /// batch of the current wave.
    pub(crate) async fn load_one(&self, key: K) -> Answer<L::Value> {
        let (answer, schedule) = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if let Some(value) = state.loaded.get(&key) {
                return Ok(Some(value.clone()));
            }
            let (tx, rx) = oneshot::channel();
            match state.waiting.entry(key) {
                Entry::Occupied(mut waiters) => waiters.get_mut().push(tx),
                Entry::Vacant(slot) => {
                    state.queued.push(slot.key().clone());
                    slot.insert(vec![tx]);
                }
            }
            let schedule = !state.due && !state.queued.is_empty();
            if schedule {
                state.due = true;
                state.deadline = crate::deadline::current();
            }
            (rx, schedule)
        };
        if schedule {
            self.schedule();
        }
        answer.await.unwrap_or_else(|_| {
            Err(UpstreamError::unavailable(
                self.shared.stage.0,
                "the batch was stopped",
            ))
        })
    }

    /// The values of `keys` that exist, with one batch for those not loaded yet.
    pub(crate) async fn load_many(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<K, L::Value>, UpstreamError> {
        let loads = keys.into_iter().map(|key| async move {
            let value = self.load_one(key.clone()).await?;
            Ok::<_, UpstreamError>(value.map(|value| (key, value)))
        });
        let mut found = HashMap::new();
        for loaded in futures::future::join_all(loads).await {
            found.extend(loaded?);
        }
        Ok(found)
    }

    /// Keeps values loaded another way (a page that listed them) as if this loader had
    /// loaded them.
    pub(crate) fn feed_many(&self, values: impl IntoIterator<Item = (K, L::Value)>) {
        self.shared.lock().loaded.extend(values);
    }

    /// The keys this request loaded.
    pub(crate) fn loaded_keys(&self) -> Vec<K> {
        self.shared.lock().loaded.keys().cloned().collect()
    }

    /// Forgets what this request loaded (after a change, to read it again).
    pub(crate) fn clear(&self) {
        self.shared.lock().loaded.clear();
    }

    /// Has the queued keys sent: when the current poll of the request returns, or, outside
    /// [`Batched`], after [`FALLBACK_DELAY`].
    fn schedule(&self) {
        let loader: Arc<dyn Flush> = self.shared.clone();
        if WAVE.try_with(|wave| wave.add(Arc::clone(&loader))).is_err() {
            let wait = async move {
                tokio::time::sleep(FALLBACK_DELAY).await;
                loader.flush(None);
            };
            self.shared.spawn(wait, crate::deadline::current());
        }
    }
}

impl<K, L: Loader<K>> Shared<K, L>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    fn lock(&self) -> MutexGuard<'_, State<K, L::Value>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` among the request's batch tasks; nothing once its loaders are gone
    /// (nobody waits for what it would load).
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static, deadline: Option<Instant>) {
        if let Some(tasks) = self.tasks.upgrade() {
            tasks.spawn(Box::pin(work), deadline);
        }
    }
}

impl<K, L> Flush for Shared<K, L>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    L: Loader<K, Error = UpstreamError>,
{
    fn stage(&self) -> Stage {
        self.stage
    }

    fn flush(self: Arc<Self>, wave: Option<&Arc<Wave>>) {
        let (queued, deadline) = {
            let mut state = self.lock();
            state.due = false;
            (std::mem::take(&mut state.queued), state.deadline.take())
        };
        let mut keys = queued.into_iter().peekable();
        while keys.peek().is_some() {
            let batch: Vec<K> = keys.by_ref().take(self.max_batch).collect();
            let shared = Arc::clone(&self);
            let in_flight = wave.map(|wave| InFlight::new(wave, self.stage));
            let load = async move {
                let _in_flight = in_flight;
                // A loader that panics fails its batch, rather than leaving it unanswered.
                let loaded = AssertUnwindSafe(shared.loader.load(&batch))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(UpstreamError::unavailable(
                            shared.stage.0,
                            "reading a batch failed inside Switchyard",
                        ))
                    });
                shared.answer(batch, loaded);
            };
            self.spawn(load, deadline);
        }
    }
}

impl<K, L> Shared<K, L>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    L: Loader<K, Error = UpstreamError>,
{
    /// Keeps what a batch loaded and answers its keys' waiters.
    fn answer(&self, batch: Vec<K>, loaded: Result<HashMap<K, L::Value>, UpstreamError>) {
        let mut told = Vec::with_capacity(batch.len());
        {
            let mut state = self.lock();
            for key in batch {
                let answer = match &loaded {
                    Ok(values) => Ok(values.get(&key).cloned()),
                    Err(e) => Err(e.clone()),
                };
                let waiters = state.waiting.remove(&key).unwrap_or_default();
                if let Ok(Some(value)) = &answer {
                    state.loaded.insert(key, value.clone());
                }
                told.push((waiters, answer));
            }
        }
        for (waiters, answer) in told {
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::join_all;

    use super::*;

    /// Doubles its keys, counting its batches; panics on key 13.
    #[derive(Default)]
    struct Doubler(Arc<AtomicUsize>);

    impl Loader<u32> for Doubler {
        type Value = u32;
        type Error = UpstreamError;

        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, UpstreamError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            assert!(!keys.contains(&13), "unlucky");
            Ok(keys
                .iter()
                .filter(|k| **k != 0)
                .map(|k| (*k, k * 2))
                .collect())
        }
    }

    fn batcher(max_batch: usize) -> (Batcher<u32, Doubler>, Arc<AtomicUsize>, Arc<Tasks>) {
        let tasks = Arc::new(Tasks::default());
        let loader = Doubler::default();
        let batches = Arc::clone(&loader.0);
        let loader = Batcher::new(loader, (Source::Backend, 0), max_batch, &tasks);
        (loader, batches, tasks)
    }

    fn at(stage: Stage, tasks: &Arc<Tasks>) -> (Batcher<u32, Doubler>, Arc<AtomicUsize>) {
        let loader = Doubler::default();
        let batches = Arc::clone(&loader.0);
        (Batcher::new(loader, stage, 100, tasks), batches)
    }

    #[tokio::test]
    async fn a_later_stage_waits_for_the_earlier_stages_of_its_upstream_only() {
        let tasks = Arc::new(Tasks::default());
        let (customers, _) = at((Source::Backend, 0), &tasks);
        let (products, product_batches) = at((Source::Backend, 2), &tasks);
        let (comments, comment_batches) = at((Source::Crm, 2), &tasks);
        // A product and a comment asked for at once, and more of each once a customer
        // (the same upstream as the products) has loaded.
        let first = join_all([products.load_one(1), comments.load_one(1)]);
        let later = async {
            let customer = customers.load_one(5).await.unwrap().unwrap();
            join_all([products.load_one(customer), comments.load_one(customer)]).await
        };
        let (first, later) = Batched::new(futures::future::join(first, later)).await;
        assert_eq!(first[0].as_ref().unwrap(), &Some(2));
        assert_eq!(later[0].as_ref().unwrap(), &Some(20));
        assert_eq!(
            product_batches.load(Ordering::SeqCst),
            1,
            "held for the customer"
        );
        assert_eq!(
            comment_batches.load(Ordering::SeqCst),
            2,
            "another upstream"
        );
    }

    #[tokio::test]
    async fn a_long_chain_of_earlier_stages_holds_a_later_one_for_two_rounds_at_most() {
        let tasks = Arc::new(Tasks::default());
        let (customers, customer_batches) = at((Source::Backend, 0), &tasks);
        let (orders, _) = at((Source::Backend, 1), &tasks);
        let (products, _) = at((Source::Backend, 2), &tasks);
        let product = async {
            products.load_one(1).await.unwrap();
            customer_batches.load(Ordering::SeqCst)
        };
        let chain = async {
            for i in 1..=5 {
                customers.load_one(i).await.unwrap();
                orders.load_one(i).await.unwrap();
            }
        };
        let (customers_before_the_product, ()) =
            Batched::new(futures::future::join(product, chain)).await;
        assert!(
            customers_before_the_product <= 2,
            "{customers_before_the_product}"
        );

        // Unstaged, the product goes with the first customer.
        let tasks = Arc::new(Tasks::default());
        let (customers, customer_batches) = at((Source::Backend, 0), &tasks);
        let (orders, _) = at((Source::Backend, 1), &tasks);
        let (products, _) = at((Source::Backend, 2), &tasks);
        let product = async {
            products.load_one(1).await.unwrap();
            customer_batches.load(Ordering::SeqCst)
        };
        let chain = async {
            for i in 1..=5 {
                customers.load_one(i).await.unwrap();
                orders.load_one(i).await.unwrap();
            }
        };
        let (before, ()) = Batched::unstaged(futures::future::join(product, chain)).await;
        assert!(before <= 1, "{before}");
    }

    #[tokio::test]
    async fn a_held_stage_goes_when_the_earlier_one_lands_even_if_nobody_waits_for_it() {
        let tasks = Arc::new(Tasks::default());
        let (customers, customer_batches) = at((Source::Backend, 0), &tasks);
        let (products, _) = at((Source::Backend, 2), &tasks);
        let abandoned = async {
            let mut load = Box::pin(customers.load_one(5));
            assert!(futures::poll!(load.as_mut()).is_pending());
        };
        let work = futures::future::join(products.load_one(1), abandoned);
        let (product, ()) = tokio::time::timeout(Duration::from_secs(5), Batched::new(work))
            .await
            .expect("the held products were sent once the customers landed");
        assert_eq!(product.unwrap(), Some(2));
        assert_eq!(customer_batches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_loads_of_one_poll_are_one_batch_and_loaded_keys_are_not_asked_again() {
        let (loader, batches, _tasks) = batcher(100);
        let loads = join_all((0..10).map(|k| loader.load_one(k)));
        let values = Batched::new(loads).await;
        assert_eq!(batches.load(Ordering::SeqCst), 1);
        assert_eq!(values[0].as_ref().unwrap(), &None, "0 is not found");
        assert_eq!(values[3].as_ref().unwrap(), &Some(6));
        let again = Batched::new(loader.load_many([3, 4])).await.unwrap();
        assert_eq!(again, HashMap::from([(3, 6), (4, 8)]));
        assert_eq!(batches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn batches_are_cut_at_their_size_and_a_key_asked_twice_is_sent_once() {
        let (loader, batches, _tasks) = batcher(4);
        let loads = join_all((1..=10).chain(1..=10).map(|k| loader.load_one(k)));
        let values = Batched::new(loads).await;
        assert_eq!(batches.load(Ordering::SeqCst), 3);
        assert!(values.iter().all(|v| v.as_ref().unwrap().is_some()));
    }

    #[tokio::test]
    async fn outside_batched_loads_still_batch_after_a_moment() {
        let (loader, batches, _tasks) = batcher(100);
        let values = join_all((1..=5).map(|k| loader.load_one(k))).await;
        assert_eq!(batches.load(Ordering::SeqCst), 1);
        assert_eq!(values[4].as_ref().unwrap(), &Some(10));
    }

    #[tokio::test]
    async fn a_loader_that_panics_fails_its_batch_instead_of_hanging() {
        let (loader, _, _tasks) = batcher(100);
        let values = Batched::new(join_all([12, 13].map(|k| loader.load_one(k)))).await;
        for value in values {
            let error = value.unwrap_err();
            assert_eq!(error.source, Source::Backend);
            assert!(error.is_failure());
        }
    }
}
