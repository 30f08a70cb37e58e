//! The replication core's rules, one at a time, on two or three replicas wired by hand
//! (the seeded simulation in `replication_sim` checks them all together under faults).

use meridian_cart_store_core::codec::{self, DeltaRecord};
use meridian_cart_store_core::replication::wire::{Entry, Message};
use meridian_cart_store_core::replication::{Event, ProtocolError};
use meridian_cart_store_core::{
    Cart, Durability, MemStorage, Node, NodeConfig, Replica, ReplicationConfig, WriteRequest,
};
use meridian_clocks::{HlcTimestamp, ManualClock, ReplicaId};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000;

type R = Replica<MemStorage, ManualClock>;

struct Site {
    r: R,
    storage: MemStorage,
    clock: ManualClock,
}

fn site(id: u64, region: &str, peers: &[&str], durability: Durability, now: Instant) -> Site {
    let storage = MemStorage::new();
    let clock = ManualClock::new(T0);
    let node = Node::open(
        storage.clone(),
        clock.clone(),
        NodeConfig::new(ReplicaId(id)),
    )
    .unwrap();
    let config = ReplicationConfig::new(
        region,
        peers.iter().map(|p| (*p).to_owned()).collect(),
        durability,
    );
    Site {
        r: Replica::new(node, config, now),
        storage,
        clock,
    }
}

fn add(cart: &str, sku: &str, n: u64) -> WriteRequest {
    WriteRequest::add(cart, sku, n).unwrap()
}

fn quantity(s: &Site, cart: &str, sku: &str) -> u32 {
    s.r.node()
        .read(cart)
        .unwrap()
        .lines
        .iter()
        .find(|l| l.sku == sku)
        .map_or(0, |l| l.quantity)
}

/// Everything `from` transmits now, as (to, message).
fn drain(from: &mut Site, now: Instant) -> Vec<(String, Message)> {
    from.r.handle_timeout(now);
    let mut out = Vec::new();
    while let Some(t) = from.r.poll_transmit(now) {
        out.push((t.to, t.message));
    }
    out
}

fn deliver(to: &mut Site, from: &str, msgs: Vec<(String, Message)>, now: Instant) {
    for (dest, m) in msgs {
        if dest == to.r.config().region {
            to.r.handle_message(now, from, m).unwrap();
        }
    }
    to.r.commit(now, vec![]);
}

fn connect(a: &mut Site, b: &mut Site, now: Instant) {
    let (ra, rb) = (a.r.config().region.clone(), b.r.config().region.clone());
    a.r.handle_connect(now, &rb);
    b.r.handle_connect(now, &ra);
}

fn deltas(msgs: &[(String, Message)]) -> usize {
    msgs.iter()
        .map(|(_, m)| match m {
            Message::Deltas { entries, .. } => entries.len(),
            _ => 0,
        })
        .sum()
}

fn exchange(a: &mut Site, b: &mut Site, now: Instant) {
    let (ra, rb) = (a.r.config().region.clone(), b.r.config().region.clone());
    let m = drain(a, now);
    deliver(b, &ra, m, now);
    let m = drain(b, now);
    deliver(a, &rb, m, now);
}

#[test]
fn process_mode_ships_and_acknowledges_only_what_is_synced() {
    let t = Instant::now();
    let mut a = site(1, "a", &["b"], Durability::Process, t);
    let mut b = site(2, "b", &["a"], Durability::Process, t);
    connect(&mut a, &mut b, t);
    exchange(&mut a, &mut b, t);
    a.r.commit(t, vec![add("c", "x", 1)]);
    assert!(a.storage.unsynced_writes() > 0);
    // Before the batch window (when the core syncs), nothing ships.
    let early = drain(&mut a, t + Duration::from_millis(1));
    assert_eq!(deltas(&early), 0, "shipped an unsynced write: {early:?}");
    let later = drain(&mut a, t + Duration::from_millis(10));
    assert_eq!(deltas(&later), 1);
    assert_eq!(a.storage.unsynced_writes(), 0, "synced before shipping");
    // b applies it, but acknowledges it only once synced.
    for (_, m) in later {
        b.r.handle_message(t, "a", m).unwrap();
    }
    b.r.commit(t, vec![]);
    assert_eq!(quantity(&b, "c", "x"), 1);
    let acks_now: Vec<_> = drain(&mut b, t + Duration::from_millis(1));
    for (_, m) in &acks_now {
        if let Message::Ack { progress, .. } = m {
            assert!(
                !progress.contains(&(ReplicaId(1), 1)),
                "acked unsynced: {m:?}"
            );
        }
    }
    let acks = drain(&mut b, t + Duration::from_millis(30));
    assert!(
        acks.iter().any(|(_, m)| matches!(m, Message::Ack { progress, .. } if progress.contains(&(ReplicaId(1), 1)))),
        "{acks:?}"
    );
}

#[test]
fn a_power_failure_cannot_make_a_peer_see_a_seq_twice() {
    let t = Instant::now();
    let mut a = site(1, "a", &["b"], Durability::Process, t);
    let mut b = site(2, "b", &["a"], Durability::Process, t);
    connect(&mut a, &mut b, t);
    exchange(&mut a, &mut b, t);
    // seq 1 is synced and shipped; seq 2 is acknowledged to its client, then lost.
    a.r.commit(t, vec![add("c", "x", 1)]);
    exchange(&mut a, &mut b, t + Duration::from_millis(10));
    a.r.commit(t, vec![add("c", "lost", 1)]);
    let storage = a.storage.crash();
    let node = Node::open(
        storage.clone(),
        a.clock.clone(),
        NodeConfig::new(ReplicaId(1)),
    )
    .unwrap();
    assert_eq!(node.last_seq(), 1, "the unsynced write is gone");
    a = Site {
        r: Replica::new(node, a.r.config().clone(), t),
        storage,
        clock: a.clock.clone(),
    };
    // The restarted node hands out seq 2 again, for another write: b never saw the first.
    a.r.commit(t, vec![add("c", "y", 1)]);
    connect(&mut a, &mut b, t + Duration::from_millis(20));
    for i in 0..5 {
        exchange(&mut a, &mut b, t + Duration::from_millis(30 + 10 * i));
    }
    assert_eq!(quantity(&b, "c", "y"), 1);
    assert_eq!(quantity(&b, "c", "lost"), 0);
    assert_eq!(
        b.r.node().read("c").unwrap().lines,
        a.r.node().read("c").unwrap().lines
    );
}

fn entry(origin: u64, seq: u64, cart: &str, ahead_ms: u64, sku: &str) -> Entry {
    let mut c = Cart::default();
    let delta = c.add(ReplicaId(origin), sku, 1).unwrap();
    Entry {
        origin: ReplicaId(origin),
        seq,
        record: codec::encode_delta(&DeltaRecord {
            cart: cart.into(),
            hlc: HlcTimestamp::new(T0 + ahead_ms, 0),
            delta,
            request_id: None,
            idempotency: None,
        }),
    }
}

fn hello(region: &str, id: u64) -> Message {
    Message::Hello {
        region: region.into(),
        node_id: ReplicaId(id),
        hlc: HlcTimestamp::new(T0, 0),
        progress: vec![],
        committed: 0,
    }
}

#[test]
fn deltas_stamped_too_far_ahead_are_held_back_until_time_catches_up() {
    let t = Instant::now();
    let mut b = site(2, "b", &["a"], Durability::Fsync, t);
    b.r.handle_connect(t, "a");
    b.r.handle_message(t, "a", hello("a", 1)).unwrap();
    let hour = 3_600_000;
    let msg = Message::Deltas {
        hlc: HlcTimestamp::new(T0 + hour, 0),
        entries: vec![entry(1, 1, "c", hour, "x")],
    };
    b.r.handle_message(t, "a", msg.clone()).unwrap();
    b.r.commit(t, vec![]);
    assert_eq!(quantity(&b, "c", "x"), 0, "held back");
    assert_eq!(
        b.r.node().remote_progress(ReplicaId(1)),
        0,
        "not acknowledged"
    );
    assert!(std::iter::from_fn(|| b.r.poll_event()).any(|e| matches!(e, Event::HeldBack { .. })));
    assert!(
        b.r.node().hlc().last().physical_ms() < T0 + 1000,
        "the HLC did not jump"
    );
    // An hour later (the sender resends), it applies.
    b.clock.set(T0 + hour);
    b.r.handle_message(t, "a", msg).unwrap();
    b.r.commit(t, vec![]);
    assert_eq!(quantity(&b, "c", "x"), 1);
}

#[test]
fn duplicates_gaps_and_replays_change_nothing_and_bad_entries_are_refused() {
    let t = Instant::now();
    let mut b = site(2, "b", &["a"], Durability::Fsync, t);
    b.r.handle_connect(t, "a");
    b.r.handle_message(t, "a", hello("a", 1)).unwrap();
    let send = |b: &mut Site, entries: Vec<Entry>| {
        b.r.handle_message(
            t,
            "a",
            Message::Deltas {
                hlc: HlcTimestamp::new(T0, 0),
                entries,
            },
        )
        .unwrap();
        b.r.commit(t, vec![]);
    };
    send(&mut b, vec![entry(1, 2, "c", 0, "gap")]);
    assert_eq!(quantity(&b, "c", "gap"), 0, "seq 2 before seq 1 is dropped");
    send(
        &mut b,
        vec![entry(1, 1, "c", 0, "x"), entry(1, 1, "c", 0, "x")],
    );
    send(&mut b, vec![entry(1, 1, "c", 0, "x")]);
    assert_eq!(quantity(&b, "c", "x"), 1, "applied once");
    assert_eq!(b.r.node().remote_progress(ReplicaId(1)), 1);
    // Garbage in a record, a bad cart id: refused, nothing applied from it on.
    let mut bad = entry(1, 2, "c", 0, "y");
    bad.record.truncate(5);
    let err =
        b.r.handle_message(
            t,
            "a",
            Message::Deltas {
                hlc: HlcTimestamp::new(T0, 0),
                entries: vec![bad],
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::BadEntry {
                origin: 1,
                seq: 2,
                ..
            }
        ),
        "{err}"
    );
    let err =
        b.r.handle_message(
            t,
            "a",
            Message::Deltas {
                hlc: HlcTimestamp::new(T0, 0),
                entries: vec![entry(1, 2, "../etc", 0, "y")],
            },
        )
        .unwrap_err();
    assert!(matches!(err, ProtocolError::BadEntry { .. }), "{err}");
    b.r.commit(t, vec![]);
    assert_eq!(b.r.node().remote_progress(ReplicaId(1)), 1);
    // Who a peer says it is must match who it authenticated as.
    let err = b.r.handle_message(t, "a", hello("z", 1)).unwrap_err();
    assert!(matches!(err, ProtocolError::RegionMismatch { .. }), "{err}");
    let err = b.r.handle_message(t, "a", hello("a", 2)).unwrap_err();
    assert!(matches!(err, ProtocolError::SameNodeId { .. }), "{err}");
    let err =
        b.r.handle_message(t, "nobody", hello("nobody", 9))
            .unwrap_err();
    assert!(matches!(err, ProtocolError::UnknownPeer(_)), "{err}");
}

#[test]
fn in_flight_bytes_are_bounded_and_a_silent_peer_gets_a_resend() {
    let t = Instant::now();
    let mut a = site(1, "a", &["b"], Durability::Fsync, t);
    let mut cfg = a.r.config().clone();
    cfg.inflight_bytes_max = 16 * 1024;
    cfg.batch_bytes_max = 2 * 1024;
    let node = a.r.into_node();
    a.r = Replica::new(node, cfg, t);
    a.r.handle_connect(t, "b");
    a.r.handle_message(t, "b", hello("b", 2)).unwrap();
    for i in 0..2000 {
        a.r.commit(t, vec![add(&format!("c{i}"), "x", 1)]);
    }
    let sent = drain(&mut a, t + Duration::from_millis(10));
    let bytes: usize = sent
        .iter()
        .map(|(_, m)| match m {
            Message::Deltas { entries, .. } => entries.iter().map(|e| e.record.len()).sum(),
            _ => 0,
        })
        .sum();
    assert!(bytes <= (16 + 2) * 1024, "{bytes} bytes in flight");
    assert!(deltas(&sent) < 2000, "the window stopped the sender");
    assert!(a.r.peers()[0].inflight_bytes() <= (16 + 2) * 1024);
    // No ack for resend_timeout: go back to the acknowledged point and resend.
    let resend = a.r.config().resend_timeout;
    let again = drain(&mut a, t + Duration::from_millis(10) + resend);
    assert_eq!(deltas(&again), deltas(&sent), "resent the same window");
}

#[test]
fn non_transitive_partition_converges_through_the_third_region() {
    let t = Instant::now();
    let regions = ["v", "f", "t"];
    let mut s: Vec<Site> = (0..3)
        .map(|i| {
            let peers: Vec<&str> = regions
                .iter()
                .copied()
                .filter(|r| *r != regions[i])
                .collect();
            site(i as u64 + 1, regions[i], &peers, Durability::Fsync, t)
        })
        .collect();
    // v–f and f–t are up; v–t is down.
    let up = |a: usize, b: usize| !matches!((a, b), (0, 2) | (2, 0));
    for (i, site) in s.iter_mut().enumerate() {
        for (j, r) in regions.iter().enumerate() {
            if i != j && up(i, j) {
                site.r.handle_connect(t, r);
            }
        }
    }
    s[0].r.commit(t, vec![add("c", "x", 1)]);
    let mut now = t;
    let mut reached = None;
    for step in 0..300 {
        now = t + Duration::from_millis(10 * step);
        for i in 0..3 {
            let out = drain(&mut s[i], now);
            let from = regions[i].to_owned();
            for (to, m) in out {
                let j = regions.iter().position(|r| *r == to).unwrap();
                if up(i, j) {
                    s[j].r.handle_message(now, &from, m).unwrap();
                }
            }
        }
        for site in &mut s {
            site.r.commit(now, vec![]);
        }
        if reached.is_none() && quantity(&s[2], "c", "x") == 1 {
            reached = Some(now - t);
        }
    }
    let took = reached.expect("v's write never reached t");
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
    assert!(s[1].r.status(now).peers.iter().any(|p| p.region == "t"));
    assert_eq!(s[2].r.node().remote_progress(ReplicaId(1)), 1);
    // Once t has it (through f), f's log can be trimmed of it; v's too, as f and t acked.
    assert_eq!(s[1].r.node().log_len(), 0, "f trimmed");
    let _ = now;
}

fn site_with(
    id: u64,
    region: &str,
    peers: &[&str],
    storage: MemStorage,
    clock: ManualClock,
    retention: u64,
    now: Instant,
) -> Site {
    let node = Node::open(
        storage.clone(),
        clock.clone(),
        NodeConfig::new(ReplicaId(id)),
    )
    .unwrap();
    let mut config = ReplicationConfig::new(
        region,
        peers.iter().map(|p| (*p).to_owned()).collect(),
        Durability::Fsync,
    );
    config.log_retention_entries = retention;
    Site {
        r: Replica::new(node, config, now),
        storage,
        clock,
    }
}

/// Runs `a` and `b` until neither has anything to say, advancing time 10 ms a round (a
/// driver commits only when the replica wants it); returns the messages `a` sent, by kind.
fn settle(
    a: &mut Site,
    b: &mut Site,
    now: &mut Instant,
) -> std::collections::BTreeMap<&'static str, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    let mut quiet_rounds = 0;
    for _ in 0..5000 {
        *now += Duration::from_millis(10);
        let mut quiet = true;
        for a_first in [true, false] {
            let (from, to) = if a_first {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let region = from.r.config().region.clone();
            let m = drain(from, *now);
            for (_, msg) in &m {
                if a_first {
                    *kinds.entry(msg.kind()).or_insert(0) += 1;
                }
            }
            quiet &= m.is_empty();
            for (_, msg) in m {
                to.r.handle_message(*now, &region, msg).unwrap();
            }
            if to.r.wants_commit() {
                to.r.commit(*now, vec![]);
            }
        }
        // A rate-limited session may be silent for a while: not quiet until it is over.
        let idle = |s: &Site| {
            s.r.status(*now)
                .peers
                .iter()
                .all(|p| p.anti_entropy.state == "idle")
        };
        let quiet = quiet && idle(a) && idle(b);
        quiet_rounds = if quiet { quiet_rounds + 1 } else { 0 };
        // Quiet for longer than the trim interval.
        if quiet_rounds >= 15 {
            return kinds;
        }
    }
    panic!(
        "no quiescence: a {:?} b {:?}",
        a.r.status(*now),
        b.r.status(*now)
    );
}

fn events(s: &mut Site) -> Vec<Event> {
    std::iter::from_fn(|| s.r.poll_event()).collect()
}

/// A peer behind the trimmed log (here: away while `a` wrote past its retention of 5
/// entries) is repaired by digest comparison: it gets the carts it lacks and `a`'s
/// progress, and then the delta stream resumes. Only the ranges that differ are shipped.
#[test]
fn anti_entropy_repairs_a_peer_behind_the_trimmed_log() {
    let mut now = Instant::now();
    let clock = ManualClock::new(T0);
    let mut a = site_with(1, "a", &["b"], MemStorage::new(), clock.clone(), 5, now);
    let mut b = site_with(2, "b", &["a"], MemStorage::new(), clock.clone(), 5, now);
    connect(&mut a, &mut b, now);
    for i in 0..150 {
        a.r.commit(now, vec![add(&format!("cart-{i}"), "x", 1 + i % 3)]);
    }
    b.r.commit(now, vec![add("cart-b", "y", 1)]);
    settle(&mut a, &mut b, &mut now);
    assert_eq!(quantity(&b, "cart-149", "x"), 3);

    // b goes away; a writes 150 more carts, far past its retention.
    a.r.handle_disconnect(now, "b");
    b.r.handle_disconnect(now, "a");
    for i in 150..300 {
        a.r.commit(now, vec![add(&format!("cart-{i}"), "x", 1 + i % 3)]);
    }
    now += Duration::from_millis(200);
    a.r.handle_timeout(now);
    assert!(
        a.r.node().log_len() <= 5,
        "retention trims: {}",
        a.r.node().log_len()
    );

    connect(&mut a, &mut b, now);
    let kinds = settle(&mut a, &mut b, &mut now);
    assert!(
        kinds.get("ae_carts").copied().unwrap_or(0) >= 1,
        "{kinds:?}"
    );
    assert_eq!(a.r.node().digests().root(), b.r.node().digests().root());
    for i in 0..300 {
        let c = format!("cart-{i}");
        assert_eq!(quantity(&b, &c, "x") as u64, 1 + i % 3, "{c}");
    }
    let st = b.r.status(now);
    assert_eq!(
        st.applied.get("1"),
        Some(&300),
        "b's progress of a was raised: {st:?}"
    );
    let ev = events(&mut a);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::AntiEntropyCompleted { .. })),
        "{ev:?}"
    );
    let ae = &a.r.status(now).peers[0];
    assert!(ae.behind.is_empty(), "{ae:?}");
    let ae = &ae.anti_entropy;
    assert_eq!(ae.sessions_completed, 1);
    // The 150 new carts fall in about 150 of the 4096 ranges; those ranges hold only a few
    // of the 151 carts b had.
    assert!(
        (150..200).contains(&ae.carts_sent),
        "shipped {} carts for 150 missing: {ae:?}",
        ae.carts_sent
    );

    // The delta stream resumes where the repair left off.
    a.r.commit(now, vec![add("cart-0", "y", 4)]);
    settle(&mut a, &mut b, &mut now);
    assert_eq!(quantity(&b, "cart-0", "y"), 4);
    assert_eq!(b.r.status(now).applied.get("1"), Some(&301));
}

/// A replaced node (same region, empty store, new node id) converges: the old id's writes
/// arrive as ordinary state, and only the ranges that differ are shipped.
#[test]
fn anti_entropy_converges_a_replaced_node_shipping_only_what_differs() {
    let mut now = Instant::now();
    let clock = ManualClock::new(T0);
    let mut a = site_with(
        1,
        "a",
        &["b"],
        MemStorage::new(),
        clock.clone(),
        1_000_000,
        now,
    );
    let mut b = site_with(
        2,
        "b",
        &["a"],
        MemStorage::new(),
        clock.clone(),
        1_000_000,
        now,
    );
    connect(&mut a, &mut b, now);
    for i in 0..200 {
        a.r.commit(now, vec![add(&format!("a-{i}"), "x", 1)]);
        b.r.commit(now, vec![add(&format!("b-{i}"), "y", 2)]);
    }
    settle(&mut a, &mut b, &mut now);
    assert_eq!(a.r.node().digests().root(), b.r.node().digests().root());
    assert_eq!(a.r.node().log_len(), 0, "every entry acknowledged: trimmed");

    // b's disk is replaced: a new node id, nothing stored.
    a.r.handle_disconnect(now, "b");
    let mut b = site_with(
        3,
        "b",
        &["a"],
        MemStorage::new(),
        clock.clone(),
        1_000_000,
        now,
    );
    connect(&mut a, &mut b, now);
    let before = a.r.status(now).peers[0].anti_entropy.clone();
    let kinds = settle(&mut a, &mut b, &mut now);
    let after = a.r.status(now).peers[0].anti_entropy.clone();
    assert_eq!(
        a.r.node().digests().root(),
        b.r.node().digests().root(),
        "{kinds:?}"
    );
    assert_eq!(
        quantity(&b, "b-7", "y"),
        2,
        "the old id's writes arrive as state"
    );
    assert_eq!(after.carts_sent - before.carts_sent, 400);
    let st = b.r.status(now);
    assert_eq!(st.applied.get("1"), Some(&200));
    assert_eq!(
        st.applied.get("2"),
        Some(&200),
        "the old node id's progress too"
    );
}

/// Runs `a` → `b` (and back) for `rounds` rounds of 10 ms, committing at `b` when it wants.
fn run(a: &mut Site, b: &mut Site, now: &mut Instant, rounds: usize) {
    for _ in 0..rounds {
        *now += Duration::from_millis(10);
        for a_first in [true, false] {
            let (from, to) = if a_first {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let region = from.r.config().region.clone();
            for (_, msg) in drain(from, *now) {
                to.r.handle_message(*now, &region, msg).unwrap();
            }
            if to.r.wants_commit() {
                to.r.commit(*now, vec![]);
            }
        }
    }
}

/// Anti-entropy is rate-limited (`anti_entropy_bytes_per_sec`, here 128 KiB/s) and
/// resumable: after a disconnect in the middle, the next session ships only what the first
/// did not, give or take the chunks in flight.
#[test]
fn anti_entropy_is_rate_limited_and_resumes_after_a_disconnect() {
    let mut now = Instant::now();
    let clock = ManualClock::new(T0);
    let mut a = {
        let storage = MemStorage::new();
        let node = Node::open(
            storage.clone(),
            clock.clone(),
            NodeConfig::new(ReplicaId(1)),
        );
        let mut config = ReplicationConfig::new("a", vec!["b".into()], Durability::Fsync);
        config.log_retention_entries = 5;
        config.anti_entropy_bytes_per_sec = 128 * 1024;
        Site {
            r: Replica::new(node.unwrap(), config, now),
            storage,
            clock: clock.clone(),
        }
    };
    const CARTS: u64 = 10_000;
    for i in 0..CARTS {
        a.r.commit(now, vec![add(&format!("cart-{i:05}"), "x", 1)]);
    }
    // Retention trims the log (4096 entries per 100 ms round).
    for _ in 0..4 {
        now += Duration::from_millis(100);
        a.r.handle_timeout(now);
    }
    assert!(a.r.node().log_len() <= 5);
    let mut b = site_with(2, "b", &["a"], MemStorage::new(), clock.clone(), 5, now);
    connect(&mut a, &mut b, now);
    let start = now;
    run(&mut a, &mut b, &mut now, 100); // 1 s
    let sent = |s: &Site| s.r.status(now).peers[0].anti_entropy.bytes_sent;
    let first = sent(&a);
    let elapsed = now.duration_since(start).as_secs_f64();
    // The limit, plus one chunk of burst.
    let allowed = (128.0 * 1024.0 * elapsed) as u64 + 128 * 1024 + 1024;
    assert!(
        first > 0 && first <= allowed,
        "{first} bytes in {elapsed} s (allowed {allowed}): {:?}",
        a.r.status(now).peers[0]
    );
    let received = b.r.node().carts_stored();
    assert!(
        received > 0 && received < CARTS,
        "mid-session: {received} carts"
    );

    // The link drops and comes back: a new session compares again.
    a.r.handle_disconnect(now, "b");
    b.r.handle_disconnect(now, "a");
    connect(&mut a, &mut b, now);
    settle(&mut a, &mut b, &mut now);
    assert_eq!(
        a.r.node().digests().root(),
        b.r.node().digests().root(),
        "a {:?}\nb {:?}",
        a.r.status(now),
        b.r.status(now)
    );
    assert_eq!(b.r.node().carts_stored(), CARTS);
    let st = a.r.status(now).peers[0].anti_entropy.clone();
    assert_eq!(st.sessions_started, 2, "{st:?}");
    assert_eq!(st.sessions_completed, 1, "{st:?}");
    // Repaired ranges compared equal the second time: carts shipped once, plus at most the
    // chunks that were in flight at the disconnect (4 of at most 1024 carts).
    assert!(
        st.carts_sent <= CARTS + 4 * 1024,
        "{} carts shipped for {CARTS}: {st:?}",
        st.carts_sent
    );
    assert_eq!(b.r.status(now).applied.get("1"), Some(&CARTS));
}

/// Idempotency records travel with their writes: a retry in the other region replays the
/// first answer; a region that answered the key itself keeps its own answer.
#[test]
fn idempotency_records_replicate_and_a_local_answer_is_kept() {
    use meridian_cart_store_core::{IdempotencyKey, Op};
    let mut now = Instant::now();
    let clock = ManualClock::new(T0);
    let mut a = site_with(1, "a", &["b"], MemStorage::new(), clock.clone(), 1000, now);
    let mut b = site_with(2, "b", &["a"], MemStorage::new(), clock.clone(), 1000, now);
    connect(&mut a, &mut b, now);
    let key = |k: &str| IdempotencyKey::parse(k).unwrap();
    a.r.commit(now, vec![add("c", "tea", 2)]);
    let checkout = || WriteRequest::on("c", Op::Checkout).unwrap();
    let first =
        a.r.commit(now, vec![checkout().with_idempotency(key("k1"), 7)]);
    let first = first.into_iter().next().unwrap().unwrap();
    // b answers "k2" itself before a's use of "k2" arrives.
    b.r.commit(now, vec![add("d", "pen", 1).with_idempotency(key("k2"), 9)]);
    a.r.commit(now, vec![add("e", "cup", 1).with_idempotency(key("k2"), 9)]);
    settle(&mut a, &mut b, &mut now);

    let retry =
        b.r.commit(now, vec![checkout().with_idempotency(key("k1"), 7)]);
    let retry = retry.into_iter().next().unwrap().unwrap();
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(retry.answer, first.answer, "the same order");
    let mismatch =
        b.r.commit(now, vec![checkout().with_idempotency(key("k1"), 8)]);
    assert!(mismatch[0].is_err(), "{mismatch:?}");
    // b keeps its own answer to "k2" (the pen), a its own (the cup).
    let k2 = |s: &mut Site| {
        let r =
            s.r.commit(now, vec![add("x", "y", 1).with_idempotency(key("k2"), 9)]);
        serde_json::to_string(&r[0].as_ref().unwrap().answer).unwrap()
    };
    assert!(k2(&mut b).contains("pen"));
    assert!(k2(&mut a).contains("cup"));
}
