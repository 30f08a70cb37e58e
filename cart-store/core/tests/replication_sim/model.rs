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
    Add {
        sku: String,
        quantity: u32,
    },
    Set {
        sku: String,
        quantity: u32,
    },
    Remove {
        sku: String,
    },
    Clear,
    Checkout,
    /// A compaction the replication layer wrote: it must change no view.
    Compact,
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
            Op::Compact { .. } => Kind::Compact,
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
            Kind::Add { .. } | Kind::Compact => false,
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
    /// The dot this write created on `sku` (an add, or a set above 0).
    fn dot_on(&self, sku: &str) -> Option<meridian_clocks::Dot> {
        if !self.kind.adds(sku) {
            return None;
        }
        self.record.delta.entries(sku).first().map(|(d, _)| *d)
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

    /// The cart every replica must show: the join of all surviving client writes'
    /// deltas, without any compaction (the reference a compacted replica's view must
    /// equal).
    pub fn expected(&self, cart: &str) -> Cart {
        let mut c = Cart::default();
        for w in self.writes.values() {
            if w.cart == cart && w.kind != Kind::Compact {
                c.merge(&w.record.delta);
            }
        }
        c
    }

    /// Whether write `w` observed `a`'s add (or set) of `sku`: `a`'s dot is in `w`'s delta
    /// context (what it saw of the cart; not its token, since a node repaired by
    /// anti-entropy may hold writes beyond its progress), or a later dot of the same
    /// replica on the same line is. Every replica applies a replica's writes to a cart in
    /// order, so whoever saw the later one had seen `a` too; `w`'s context names only what
    /// was still separate there, and after a compaction that is the one dot standing for
    /// the group.
    pub fn observed(&self, w: &Write, a: &Write, sku: &str) -> bool {
        let Some(d) = a.dot_on(sku) else {
            return false;
        };
        let seen = w.record.delta.context();
        seen.contains(&d)
            || self.writes.values().any(|b| {
                b.cart == a.cart
                    && b.dot_on(sku).is_some_and(|e| {
                        e.replica == d.replica && e.counter > d.counter && seen.contains(&e)
                    })
            })
    }

    /// What every replica must show of `cart`, from the cart table's rule applied to the
    /// surviving client writes alone (no compaction): an add or set is live unless a
    /// remove, set, clear or checkout of its line observed it; a line is its live set
    /// with the highest `(HLC, replica)` plus its live adds.
    pub fn reference_lines(&self, cart: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let writes: Vec<&Write> = self
            .writes
            .values()
            .filter(|w| w.cart == cart && w.kind != Kind::Compact)
            .collect();
        for sku in skus_of(self, cart) {
            let mut base: Option<(meridian_clocks::HlcTimestamp, u64, u64, u32)> = None;
            let mut adds = 0u64;
            for a in writes.iter().filter(|a| a.kind.adds(&sku)) {
                let dropped = writes.iter().any(|o| {
                    !std::ptr::eq(*o, *a) && o.kind.overrides(&sku) && self.observed(o, a, &sku)
                });
                if dropped {
                    continue;
                }
                let Some((d, e)) = a.record.delta.entries(&sku).first() else {
                    continue;
                };
                match *e {
                    meridian_crdt::Entry::Add(n) => adds += u64::from(n),
                    meridian_crdt::Entry::Set { n, ts } => {
                        let key = (ts, d.replica.0, d.counter, n);
                        if base.is_none_or(|b| key > b) {
                            base = Some(key);
                        }
                    }
                }
            }
            let q = base.map_or(0, |b| u64::from(b.3)).saturating_add(adds);
            if q > 0 {
                out.push((sku, u32::try_from(q).unwrap_or(u32::MAX)));
            }
        }
        out
    }

    /// Whether a compaction of `cart` survived.
    pub fn has_compaction(&self, cart: &str) -> bool {
        self.writes
            .values()
            .any(|w| w.cart == cart && w.kind == Kind::Compact)
    }

    /// The dots of the adds (and sets) of `cart`/`sku` that a compaction coalesced.
    fn coalesced(&self, compaction: &Write, sku: &str) -> Vec<&Write> {
        self.writes
            .values()
            .filter(|w| w.cart == compaction.cart)
            .filter(|w| {
                w.dot_on(sku)
                    .is_some_and(|d| compaction.record.delta.context().contains(&d))
            })
            .collect()
    }

    /// Whether write `key`, about to be applied at a node that has applied the writes
    /// `applied` selects, is the case compaction must get right: it drops a line's adds,
    /// it was made before its region had received the last of the adds a compaction
    /// (already applied at that node) coalesced on that line, yet after it had seen an
    /// earlier add of the same region there. A compaction that ran before such a remove
    /// reached the compacting node would make it drop too little.
    pub fn is_dangerous(&self, key: Key, applied: &dyn Fn(Key) -> bool) -> bool {
        let Some(w) = self.writes.get(&key) else {
            return false;
        };
        self.writes.iter().any(|(ck, c)| {
            c.kind == Kind::Compact
                && c.cart == w.cart
                && applied(*ck)
                && w.past.get(&ck.0).is_none_or(|s| *s < ck.1)
                && skus_of(self, &w.cart).iter().any(|sku| {
                    if !w.kind.overrides(sku) {
                        return false;
                    }
                    let group = self.coalesced(c, sku);
                    let Some(newest) = group.iter().max_by_key(|a| a.dot_on(sku)) else {
                        return false;
                    };
                    let r = newest.dot_on(sku).expect("in the group").replica;
                    let saw_earlier = self.writes.values().any(|a| {
                        a.cart == w.cart
                            && a.dot_on(sku).is_some_and(|d| d.replica == r)
                            && self.observed(w, a, sku)
                    });
                    saw_earlier && !self.observed(w, newest, sku)
                })
        })
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
                let unobserved = self.writes.iter().any(|(k, w)| {
                    w.cart == cart && w.kind.adds(&sku) && k != rk && !self.observed(r, w, &sku)
                });
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
                    .any(|w| w.cart == cart && w.kind.overrides(&sku) && self.observed(w, a, &sku));
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
