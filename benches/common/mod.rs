//! Paired measurement, shared by the benches: the two sides of a comparison timed in
//! alternating rounds, so that a change in the machine's load (2 shared cores) hits both
//! alike, and the ratio is taken per round. Criterion times one bench function after the
//! other, so a load spike during one of them skews its ratio; this does not.

use std::time::Instant;

/// The outcome of [`paired`]: median nanoseconds per call of each side, and the median,
/// lowest and highest over the rounds of `b / a`.
pub struct Paired {
    pub a_ns: f64,
    pub b_ns: f64,
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds per call of `calls` calls of `f` (generic, so `f` is inlined into the loop
/// as criterion's `iter` inlines its routine: no indirect call per iteration).
#[inline(never)]
fn time<F: FnMut()>(f: &mut F, calls: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// Runs `rounds` rounds of `calls` calls of `a` and of `b` (which goes first alternates
/// between rounds), after one untimed warm-up round.
pub fn paired(rounds: usize, calls: u32, mut a: impl FnMut(), mut b: impl FnMut()) -> Paired {
    time(&mut a, calls);
    time(&mut b, calls);
    let (mut xs, mut ys, mut rs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut a, calls);
            (x, time(&mut b, calls))
        } else {
            let y = time(&mut b, calls);
            (time(&mut a, calls), y)
        };
        xs.push(x);
        ys.push(y);
        rs.push(y / x);
    }
    let ratio = median(&mut rs);
    Paired {
        a_ns: median(&mut xs),
        b_ns: median(&mut ys),
        ratio,
        ratio_min: rs[0],
        ratio_max: rs[rs.len() - 1],
    }
}

impl Paired {
    /// One line: `paired  <what>: <a> X ns, <b> Y ns, <b>/<a> R (rounds: min–max)`.
    pub fn print(&self, what: &str, a: &str, b: &str) {
        println!(
            "paired  {what}: {a} {:.2} ns, {b} {:.2} ns, {b}/{a} median {:.2}× (rounds {:.2}–{:.2})",
            self.a_ns, self.b_ns, self.ratio, self.ratio_min, self.ratio_max
        );
    }
}
