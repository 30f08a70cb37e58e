//! The reference model and its checks.
//!
//! Every acknowledged write is recorded with its delta (read from the writer's log when it
//! is acknowledged); what it observed is its delta's causal context. A power failure forgets
//! the writes of that node past its durable progress: those were never acknowledged to a
//! peer, and may legitimately be lost. After the run:
//!
//! - the surviving writes of each origin are exactly seqs `1..=last_seq`, and every replica
//!   has applied all of them (nothing acknowledged lost, nothing invented);
//! - every replica holds the join of the surviving deltas, cart by cart;
//! - a remove (or set 0, clear, checkout) that had observed every add and set of a line
//!   leaves the line absent everywhere (no resurrection);
//! - adds that no remove, set, clear or checkout observed all count (add wins);
//! - each answer shows exactly the join of the writes in its causal past, its token (read
//!   your writes; a checkout orders exactly the observed lines), at a node that anti-entropy
//!   has not repaired: merged cart states may reflect more than the progress they raise the
//!   token to, so such a node's answers are not held to exactly their past (the final
//!   checks still hold it to everything);
//! - anti-entropy runs in half the seeds (a short log retention), and a clock well past the
//!   max offset in some (its deltas are held back, and no node's HLC passes the bound).
//!
//! Throughout the run, the ledger records the bytes of every `(origin, seq)` delivered to
//! anyone: a key never carries two different deltas, and a delivered entry is never one a
//! power failure then took back (a reused seq or dot).

use meridian_cart_store_core::codec::DeltaRecord;
use meridian_cart_store_core::{Answer, Cart, CausalToken, Op, WriteRequest};
use meridian_crdt::Lattice;
use std::collections::BTreeMap;

/// An origin and one of its seqs.
pub type Key = (u64, u64);

/// What a write did, for the semantic checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Add { sku: String, quantity: u32 },
    Set { sku: String, quantity: u32 },
    Remove { sku: String },
    Clear,
    Checkout,
}

impl Kind {
    pub fn of(op: &Op) -> Kind {
        match op {
            Op::Add { sku, quantity } => Kind::Add {
                sku: sku.to_string(),
                quantity: quantity.get(),
            },
            Op::Set { sku, quantity } => Kind::Set {
                sku: sku.to_string(),
                quantity: quantity.get(),
            },
            Op::Remove { sku } => Kind::Remove {
                sku: sku.to_string(),
            },
            Op::Clear => Kind::Clear,
            Op::Checkout => Kind::Checkout,
        }
    }

    /// Creates quantity on `sku`: an add or a set above 0.
    fn adds(&self, sku: &str) -> bool {
        match self {
            Kind::Add { sku: s, .. } => s == sku,
            Kind::Set { sku: s, quantity } => s == sku && *quantity > 0,
            _ => false,
        }
    }

    /// Drops every observed add of `sku`: a remove, set 0, clear or checkout.
    fn removes(&self, sku: &str) -> bool {
        match self {
            Kind::Remove { sku: s } => s == sku,
            Kind::Set { sku: s, quantity } => s == sku && *quantity == 0,
            Kind::Clear | Kind::Checkout => true,
            Kind::Add { .. } => false,
        }
    }

    /// Overrides the observed adds of `sku` (a remove, or any set).
    fn overrides(&self, sku: &str) -> bool {
        self.removes(sku) || matches!(self, Kind::Set { sku: s, .. } if s == sku)
    }
}

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Write {
    pub cart: String,
    pub kind: Kind,
    /// Its origin's committed progress when it was made (its answer's token).
    pub past: BTreeMap<u64, u64>,
    pub record: DeltaRecord,
    pub bytes: Vec<u8>,
}

impl Write {
    /// Whether this write observed `other` (an add or set): every dot `other` created is
    /// in this write's delta context, which is exactly what it saw of the cart. (Not its
    /// token: a node repaired by anti-entropy may hold writes beyond its progress, and its
    /// writes then observe them.)
    fn observes(&self, other: &Write) -> bool {
        let delta = &other.record.delta;
        let dots: Vec<meridian_clocks::Dot> = delta
            .lines()
            .iter()
            .flat_map(|(sku, _)| delta.entries(sku).iter().map(|(d, _)| *d))
            .collect();
        !dots.is_empty() && dots.iter().all(|d| self.record.delta.context().contains(d))
    }
}

/// One answer a client received.
#[derive(Clone, Debug)]
pub struct Answered {
    pub node: usize,
    pub origin: u64,
    pub cart: String,
    pub past: BTreeMap<u64, u64>,
    pub lines: Vec<(String, u32)>,
    /// A checkout's order: its own write is not in what it shows.
    pub order: bool,
}

/// The first answer to an idempotency key at one node.
#[derive(Clone, Debug)]
struct KeyAnswer {
    answer: Answer,
    /// Its own seq, if the request wrote (else its record may be lost in any power failure).
    wrote: Option<u64>,
}

pub fn token_progress(token: &str) -> Result<BTreeMap<u64, u64>, String> {
    let t: CausalToken = token
        .parse()
        .map_err(|e| format!("answer token {token:?} does not parse: {e}"))?;
    Ok(t.entries().iter().map(|(o, s)| (o.0, *s)).collect())
}

fn answer_lines(a: &Answer) -> Vec<(String, u32)> {
    let lines = match a {
        Answer::Cart(c) => &c.lines,
        Answer::Order(o) => &o.lines,
    };
    lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect()
}

#[derive(Debug, Default)]
pub struct Model {
    pub writes: BTreeMap<Key, Write>,
    /// The bytes first delivered under each key, to anyone.
    delivered: BTreeMap<Key, Vec<u8>>,
    answers: Vec<Answered>,
    keys: BTreeMap<(usize, String), KeyAnswer>,
    pub entry_bytes_max: usize,
    /// Nodes that have merged cart states by anti-entropy (see the module docs).
    repaired: std::collections::BTreeSet<usize>,
}

impl Model {
    /// Node `node` has merged cart states by anti-entropy: its answers may show more than
    /// their token.
    pub fn repaired(&mut self, node: usize) {
        self.repaired.insert(node);
    }

    /// Records a new write acknowledged at `origin` under `seq`.
    pub fn record_write(
        &mut self,
        origin: u64,
        seq: u64,
        req: &WriteRequest,
        past: BTreeMap<u64, u64>,
        record: DeltaRecord,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        if let Some(seen) = self.delivered.get(&(origin, seq)) {
            if *seen != bytes {
                return Err(format!(
                    "seq reuse: ({origin}, {seq}) was delivered to a peer with another delta before this write was acknowledged under it"
                ));
            }
        }
        self.entry_bytes_max = self.entry_bytes_max.max(bytes.len());
        let write = Write {
            cart: req.cart.to_string(),
            kind: Kind::of(&req.op),
            past,
            record,
            bytes,
        };
        self.writes.insert((origin, seq), write);
        Ok(())
    }

    /// Records one answer, and checks a retry against the first answer to its key.
    pub fn record_answer(
        &mut self,
        node: usize,
        origin: u64,
        req: &WriteRequest,
        answer: &Answer,
        replayed: bool,
        wrote: Option<u64>,
    ) -> Result<(), String> {
        let exact = !self.repaired.contains(&node);
        let past = token_progress(answer.token())?;
        if let Some(idem) = &req.idempotency {
            let k = (node, idem.key.as_str().to_owned());
            if replayed && !self.keys.contains_key(&k) {
                // A record that replicated from another region (or this node's own first
                // answer, forgotten by the model at a power failure that the record
                // survived). The answer was checked against its past when first given; it
                // is not this node's, so its token does not describe this node's past.
                return Ok(());
            }
            match self.keys.get(&k) {
                Some(first) if replayed && first.answer != *answer => {
                    return Err(format!("key {:?} at node {node} replayed {answer:?}, but its first answer was {:?}", k.1, first.answer));
                }
                Some(first) if !replayed && first.wrote.is_some() => {
                    return Err(format!(
                        "key {:?} at node {node}: a retry was applied again, though its first write (seq {:?}) survived",
                        k.1, first.wrote
                    ));
                }
                Some(_) => {}
                None => {
                    if !replayed {
                        self.keys.insert(
                            k,
                            KeyAnswer {
                                answer: answer.clone(),
                                wrote,
                            },
                        );
                    }
                }
            }
        }
        if !exact {
            return Ok(());
        }
        self.answers.push(Answered {
            node,
            origin,
            cart: req.cart.to_string(),
            past,
            lines: answer_lines(answer),
            order: matches!(answer, Answer::Order(_)),
        });
        Ok(())
    }

    /// Causal stability at a node never runs ahead of a write still arriving there: the
    /// write `(origin, seq)`, about to be applied, observed everything `stable` names.
    pub fn check_stable(
        &self,
        node: usize,
        stable: &BTreeMap<u64, u64>,
        origin: u64,
        seq: u64,
    ) -> Result<(), String> {
        let Some(w) = self.writes.get(&(origin, seq)) else {
            return Ok(());
        };
        for (r, s) in stable {
            let saw = w.past.get(r).copied().unwrap_or(0);
            if saw < *s {
                return Err(format!(
                    "r{node} held origin {r} stable through {s}, but ({origin}, {seq}) arriving now had seen only {saw} of it"
                ));
            }
        }
        Ok(())
    }

    /// Records entries delivered to a peer: a key never carries two deltas.
    pub fn record_delivered(&mut self, origin: u64, seq: u64, bytes: &[u8]) -> Result<(), String> {
        match self.delivered.get(&(origin, seq)) {
            Some(seen) if seen != bytes => Err(format!(
                "seq reuse: ({origin}, {seq}) delivered with two different deltas"
            )),
            Some(_) => Ok(()),
            None => {
                if let Some(w) = self.writes.get(&(origin, seq)) {
                    if w.bytes != bytes {
                        return Err(format!(
                            "({origin}, {seq}) delivered with a delta other than the acknowledged write's"
                        ));
                    }
                }
                self.delivered.insert((origin, seq), bytes.to_vec());
                Ok(())
            }
        }
    }

    /// A power failure at `node` (origin `origin`): its writes past `durable` are gone, and
    /// so are its answers that showed them and the idempotency records that may be lost.
    pub fn power_failure(&mut self, node: usize, origin: u64, durable: u64) -> Result<(), String> {
        let lost: Vec<Key> = self
            .writes
            .range((origin, durable + 1)..=(origin, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in lost {
            if self.delivered.contains_key(&k) {
                return Err(format!(
                    "{k:?} was delivered to a peer but was not durable at its origin's power failure (durable {durable})"
                ));
            }
            self.writes.remove(&k);
        }
        self.answers
            .retain(|a| a.node != node || a.past.get(&origin).copied().unwrap_or(0) <= durable);
        self.keys
            .retain(|(n, _), k| *n != node || k.wrote.is_some_and(|s| s <= durable));
        Ok(())
    }

    /// The join of the surviving deltas of `cart` that `keep` selects.
    fn join(&self, cart: &str, keep: impl Fn(Key) -> bool) -> Cart {
        let mut c = Cart::default();
        for (k, w) in &self.writes {
            if w.cart == cart && keep(*k) {
                c.merge(&w.record.delta);
            }
        }
        c
    }

    /// The cart every replica must hold: the join of all surviving deltas.
    pub fn expected(&self, cart: &str) -> Cart {
        self.join(cart, |_| true)
    }

    /// The last surviving seq of each origin; they must be contiguous from 1.
    pub fn last_seqs(&self) -> Result<BTreeMap<u64, u64>, String> {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (o, s) in self.writes.keys() {
            let l = last.entry(*o).or_insert(0);
            if *s != *l + 1 {
                return Err(format!(
                    "origin {o}: acknowledged writes jump from seq {l} to {s}"
                ));
            }
            *l = *s;
        }
        Ok(last)
    }

    /// No resurrection: a remover that observed every add of a line leaves it absent.
    pub fn check_removes(
        &self,
        cart: &str,
        final_lines: &BTreeMap<String, u32>,
    ) -> Result<(), String> {
        for (rk, r) in self.writes.iter().filter(|(_, w)| w.cart == cart) {
            for sku in skus_of(self, cart) {
                if !r.kind.removes(&sku) || final_lines.get(&sku).is_none() {
                    continue;
                }
                let unobserved = self
                    .writes
                    .iter()
                    .any(|(k, w)| w.cart == cart && w.kind.adds(&sku) && k != rk && !r.observes(w));
                if !unobserved {
                    return Err(format!(
                        "resurrection: {cart}/{sku} is {:?} at the end, but {rk:?} ({:?}) observed every add and set of it",
                        final_lines.get(&sku), r.kind
                    ));
                }
            }
        }
        Ok(())
    }

    /// Add wins: the adds no remove, set, clear or checkout observed all count.
    pub fn check_adds(
        &self,
        cart: &str,
        final_lines: &BTreeMap<String, u32>,
    ) -> Result<(), String> {
        for sku in skus_of(self, cart) {
            let mut unobserved_sum = 0u32;
            for a in self.writes.values().filter(|w| w.cart == cart) {
                let Kind::Add { quantity, .. } = a.kind else {
                    continue;
                };
                if !a.kind.adds(&sku) {
                    continue;
                }
                let overridden = self
                    .writes
                    .values()
                    .any(|w| w.cart == cart && w.kind.overrides(&sku) && w.observes(a));
                if !overridden {
                    unobserved_sum += quantity;
                }
            }
            let have = final_lines.get(&sku).copied().unwrap_or(0);
            if have < unobserved_sum {
                return Err(format!(
                    "add lost: {cart}/{sku} is {have} at the end, but adds nothing overrode sum to {unobserved_sum}"
                ));
            }
        }
        Ok(())
    }

    /// Each of (at most `max`) answers shows exactly the join of the writes in its past.
    pub fn check_answers(&self, max: usize) -> Result<(), String> {
        let step = (self.answers.len() / max.max(1)).max(1);
        for a in self.answers.iter().step_by(step) {
            let own = a.past.get(&a.origin).copied().unwrap_or(0);
            let past = |k: Key| {
                a.past.get(&k.0).is_some_and(|s| *s >= k.1) && !(a.order && k == (a.origin, own))
            };
            let want = self.join(&a.cart, past).lines();
            if want != a.lines {
                return Err(format!(
                    "answer at node {} on {} with past {:?} showed {:?}, but the writes in its past join to {want:?}",
                    a.node, a.cart, a.past, a.lines
                ));
            }
        }
        Ok(())
    }
}

fn skus_of(m: &Model, cart: &str) -> Vec<String> {
    let mut skus: Vec<String> = m
        .writes
        .values()
        .filter(|w| w.cart == cart)
        .filter_map(|w| match &w.kind {
            Kind::Add { sku, .. } | Kind::Set { sku, .. } | Kind::Remove { sku } => {
                Some(sku.clone())
            }
            _ => None,
        })
        .collect();
    skus.sort();
    skus.dedup();
    skus
}
