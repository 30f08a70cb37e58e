//! A tiny scenario language for carts in several regions, in the manner of rust-analyzer's
//! `check(input, expect)`: a table of lines, each a script and the outcome it must give.
//!
//! ```text
//! # comment
//! virginia: add tea 1 | tokyo: remove tea | sync  =>  tea=1
//! ```
//!
//! A script is steps separated by `|`:
//! - `REGION: OP, OP, …` runs the ops at REGION, in order. Ops: `add SKU N`,
//!   `set SKU N [@MS]`, `remove SKU`, `clear`, `checkout`.
//! - `A -> B` delivers A's whole state to B, one way.
//! - `sync` merges every region into every other. It checks that every merge order gives
//!   the same valid cart, and that this cart is the join of every delta issued so far.
//!
//! Every region a script names exists from its start, with replica ids 1, 2, 3, … in order
//! of first mention (a `set` tie goes to the higher id), and an empty cart. A `set` without `@MS` is stamped with its step's
//! number, so a later step sets later.
//!
//! The outcome is rendered as `coffee=3 tea=1` (sorted by sku; `empty` for no line) if every
//! region holds the same lines, else per region: `virginia: empty; tokyo: tea=2`. Then each
//! checkout, in order: `; virginia ordered coffee=3 tea=2`.
//!
//! Parsing and running are separate ([`parse`], [`World::step`]) so that a replication
//! simulator can drive real nodes from the same scripts later.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use meridian_clocks::{HlcTimestamp, ReplicaId};
use meridian_crdt::{Cart, Lattice, Validate};

/// One operation at a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Add {
        sku: String,
        n: u32,
    },
    Set {
        sku: String,
        n: u32,
        at_ms: Option<u64>,
    },
    Remove {
        sku: String,
    },
    Clear,
    Checkout,
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    At { region: String, ops: Vec<Op> },
    Deliver { from: String, to: String },
    Sync,
}

/// Parses a script (the part of a table line before `=>`).
pub fn parse(script: &str) -> Result<Vec<Step>, String> {
    script.split('|').map(|s| parse_step(s.trim())).collect()
}

fn parse_step(s: &str) -> Result<Step, String> {
    if s == "sync" {
        return Ok(Step::Sync);
    }
    if let Some((from, to)) = s.split_once("->") {
        return Ok(Step::Deliver {
            from: name(from)?,
            to: name(to)?,
        });
    }
    let (region, ops) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected `REGION: OP`, `A -> B` or `sync`"))?;
    let ops = ops
        .split(',')
        .map(|o| parse_op(o.trim()))
        .collect::<Result<_, _>>()?;
    Ok(Step::At {
        region: name(region)?,
        ops,
    })
}

fn name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("`{s}` is not a region name"));
    }
    Ok(s.to_string())
}

fn parse_op(s: &str) -> Result<Op, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let num = |w: &str| {
        w.parse::<u32>()
            .map_err(|_| format!("`{s}`: `{w}` is not a quantity"))
    };
    Ok(match words[..] {
        ["add", sku, n] => Op::Add {
            sku: sku.to_string(),
            n: num(n)?,
        },
        ["set", sku, n] => Op::Set {
            sku: sku.to_string(),
            n: num(n)?,
            at_ms: None,
        },
        ["set", sku, n, at] => Op::Set {
            sku: sku.to_string(),
            n: num(n)?,
            at_ms: Some(
                at.strip_prefix('@')
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| format!("`{s}`: `{at}` is not a time like @20"))?,
            ),
        },
        ["remove", sku] => Op::Remove {
            sku: sku.to_string(),
        },
        ["clear"] => Op::Clear,
        ["checkout"] => Op::Checkout,
        _ => {
            return Err(format!(
                "`{s}` is not an op (add, set, remove, clear, checkout)"
            ))
        }
    })
}

/// Regions with their carts, and what has happened so far.
#[derive(Default)]
pub struct World {
    /// Name, replica id and cart of each region, in order of first mention.
    regions: Vec<(String, ReplicaId, Cart)>,
    /// Each checkout: the region and the lines it ordered.
    orders: Vec<(String, Vec<(String, u32)>)>,
    /// The join of every delta issued.
    deltas: Cart,
    steps: u64,
}

fn hlc(ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, 0)
}

impl World {
    /// Creates the region `name` (with the next replica id) unless it exists.
    pub fn declare(&mut self, name: &str) {
        self.region(name);
    }

    fn region(&mut self, name: &str) -> usize {
        match self.regions.iter().position(|(n, _, _)| n == name) {
            Some(i) => i,
            None => {
                let id = ReplicaId(self.regions.len() as u64 + 1);
                self.regions.push((name.to_string(), id, Cart::default()));
                self.regions.len() - 1
            }
        }
    }

    /// Runs one step.
    pub fn step(&mut self, step: &Step) -> Result<(), String> {
        self.steps += 1;
        match step {
            Step::At { region, ops } => {
                let i = self.region(region);
                for op in ops {
                    let (_, id, cart) = &mut self.regions[i];
                    let delta = match op {
                        Op::Add { sku, n } => cart.add(*id, sku, *n),
                        Op::Set { sku, n, at_ms } => {
                            cart.set(*id, hlc(at_ms.unwrap_or(self.steps)), sku, *n)
                        }
                        Op::Remove { sku } => Ok(cart.remove(sku)),
                        Op::Clear => Ok(cart.clear()),
                        Op::Checkout => {
                            let snapshot = cart.snapshot();
                            self.orders
                                .push((region.clone(), snapshot.lines().to_vec()));
                            Ok(cart.checkout(&snapshot))
                        }
                    }
                    .map_err(|e| format!("{region}: {op:?} failed: {e}"))?;
                    delta
                        .validate()
                        .map_err(|e| format!("{region}: {op:?} gave an invalid delta: {e}"))?;
                    self.deltas.merge(&delta);
                }
            }
            Step::Deliver { from, to } => {
                let (f, t) = (self.region(from), self.region(to));
                let state = self.regions[f].2.clone();
                self.regions[t].2.merge(&state);
            }
            Step::Sync => {
                let states: Vec<Cart> = self.regions.iter().map(|r| r.2.clone()).collect();
                let mut result: Option<Cart> = None;
                for order in permutations(states.len()) {
                    let mut c = Cart::default();
                    for i in order {
                        c.merge(&states[i]);
                    }
                    c.validate()
                        .map_err(|e| format!("sync gave an invalid cart: {e}"))?;
                    match &result {
                        Some(r) if *r != c => {
                            return Err(format!("merge order changed the result: {r:?} vs {c:?}"))
                        }
                        _ => result = Some(c),
                    }
                }
                let synced = result.unwrap_or_default();
                if synced != self.deltas {
                    return Err(format!(
                        "the synced cart is not the join of every delta: {synced:?} vs {:?}",
                        self.deltas
                    ));
                }
                for r in &mut self.regions {
                    r.2.merge(&synced);
                }
            }
        }
        Ok(())
    }

    /// The outcome, rendered as described in the module doc.
    pub fn render(&self) -> String {
        let lines = |l: &[(String, u32)]| {
            if l.is_empty() {
                "empty".to_string()
            } else {
                l.iter()
                    .map(|(s, n)| format!("{s}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let views: Vec<Vec<(String, u32)>> = self.regions.iter().map(|r| r.2.lines()).collect();
        let mut out = if views.windows(2).all(|w| w[0] == w[1]) {
            lines(views.first().map_or(&[][..], |v| &v[..]))
        } else {
            self.regions
                .iter()
                .zip(&views)
                .map(|((name, _, _), v)| format!("{name}: {}", lines(v)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (region, order) in &self.orders {
            let what = if order.is_empty() {
                "nothing".to_string()
            } else {
                lines(order)
            };
            out.push_str(&format!("; {region} ordered {what}"));
        }
        out
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// Runs a script and renders its outcome. Every region the script names exists from the
/// start, so an early `sync` reaches a region that acts only later.
pub fn run(script: &str) -> Result<String, String> {
    let steps = parse(script)?;
    let mut world = World::default();
    for step in &steps {
        match step {
            Step::At { region, .. } => world.declare(region),
            Step::Deliver { from, to } => {
                world.declare(from);
                world.declare(to);
            }
            Step::Sync => {}
        }
    }
    for step in &steps {
        world.step(step)?;
    }
    Ok(world.render())
}

/// Checks every line `script => outcome` of `table` (blank lines and `#` comments are
/// skipped), and fails listing every line whose outcome differs, with what it gave.
#[track_caller]
pub fn check_table(table: &str) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        checked += 1;
        let Some((script, want)) = line.split_once("=>") else {
            failures.push(format!("line {}: no `=>` in `{line}`", i + 1));
            continue;
        };
        let got = run(script.trim()).unwrap_or_else(|e| format!("error: {e}"));
        if got != want.trim() {
            failures.push(format!(
                "line {}: {}\n    want: {}\n     got: {got}",
                i + 1,
                script.trim(),
                want.trim()
            ));
        }
    }
    assert!(checked > 0, "the table has no line to check");
    assert!(
        failures.is_empty(),
        "{} of {checked} lines differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
