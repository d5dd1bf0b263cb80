//! Which stream of the bus an event goes to, and the Redis key names of each stream.
//!
//! With `partitions = 1` on one Redis node the bus is today's single stream: `<stream_key>`,
//! with seen-markers `<stream_key>:seen:<id>`, so existing deployments keep their keys.
//! Otherwise (several partitions, or a Redis Cluster) partition `i` is the stream
//! `{<stream_key>:p<i>}` with seen-markers `{<stream_key>:p<i>}:seen:<id>`. The braces are a
//! Redis Cluster hash tag: only the part inside them picks the slot, so a partition's stream
//! and its markers share a slot, which the publish script needs (a script's keys must live in
//! one slot). The tag holds the stream key too, so that two buses (say, two deployments on
//! one cluster) do not put their partition `i` into the same slot.
//!
//! An event's partition is a stable hash (64-bit FNV-1a, the same in every process and
//! version) of its customer id, modulo the number of partitions; events without a customer
//! go to partition 0. So all of one customer's events are in one stream, in the order Redis
//! accepted them. Changing `partitions` moves customers to other streams: events published
//! before and after the change are not ordered with each other.

use resolvers::events::DomainEvent;

/// The streams of one bus.
#[derive(Debug, Clone)]
pub(crate) struct Partitions {
    /// `[events] stream_key`.
    stream_key: String,
    /// How many streams (at least 1).
    count: usize,
    /// Whether the keys carry hash tags (several partitions, or a cluster).
    tagged: bool,
}

impl Partitions {
    /// The streams of `count` partitions under `stream_key`; `cluster`: on a Redis Cluster.
    pub(crate) fn new(stream_key: &str, count: usize, cluster: bool) -> Self {
        Self {
            stream_key: stream_key.to_owned(),
            count: count.max(1),
            tagged: count > 1 || cluster,
        }
    }

    /// How many partitions there are.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The stream of partition `index`.
    pub(crate) fn stream(&self, index: usize) -> String {
        if self.tagged {
            format!("{{{}:p{index}}}", self.stream_key)
        } else {
            self.stream_key.clone()
        }
    }

    /// The prefix of partition `index`'s seen-markers (the event id follows it).
    pub(crate) fn seen_prefix(&self, index: usize) -> String {
        format!("{}:seen:", self.stream(index))
    }

    /// The partition `event` belongs to.
    pub(crate) fn of(&self, event: &DomainEvent) -> usize {
        match &event.customer_id {
            Some(customer) => self.of_customer(customer.as_str()),
            None => 0,
        }
    }

    /// The partition of customer `id`'s events.
    pub(crate) fn of_customer(&self, id: &str) -> usize {
        (fnv1a(id.as_bytes()) % self.count as u64) as usize
    }
}

/// 64-bit FNV-1a: tiny, and fixed by its definition (std's hashers may change between
/// releases, and are seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_on_one_node_keeps_todays_key_names() {
        let one = Partitions::new("switchyard:events", 1, false);
        assert_eq!(one.stream(0), "switchyard:events");
        assert_eq!(one.seen_prefix(0), "switchyard:events:seen:");
        assert_eq!(one.of_customer("cust-0001"), 0);
    }

    #[test]
    fn partitioned_keys_share_a_hash_tag_with_their_markers() {
        let many = Partitions::new("switchyard:events", 4, false);
        assert_eq!(many.stream(3), "{switchyard:events:p3}");
        assert_eq!(many.seen_prefix(3), "{switchyard:events:p3}:seen:");
        let cluster = Partitions::new("switchyard:events", 1, true);
        assert_eq!(cluster.stream(0), "{switchyard:events:p0}");
    }

    #[test]
    fn a_customer_always_lands_in_the_same_partition_and_customers_spread() {
        // Known values of FNV-1a 64 (its published test vectors).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let many = Partitions::new("s", 8, false);
        let mut used = [0usize; 8];
        for n in 0..800 {
            let id = format!("cust-{n:04}");
            let partition = many.of_customer(&id);
            assert_eq!(partition, many.of_customer(&id));
            used[partition] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }
}
