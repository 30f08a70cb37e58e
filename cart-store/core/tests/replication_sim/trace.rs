//! The event trace: a bounded ring of the last scheduler events, printed on failure;
//! `SIM_TRACE=1` prints every event as it happens.

use meridian_cart_store_core::replication::Message;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// Events kept for a failure report.
pub const TRACE_EVENTS_MAX: usize = 200;

#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<String>,
    print_all: bool,
}

impl Trace {
    pub fn new(print_all: bool) -> Self {
        Trace {
            ring: VecDeque::with_capacity(TRACE_EVENTS_MAX),
            print_all,
        }
    }

    pub fn log(&mut self, now_ms: u64, event: impl FnOnce() -> String) {
        let line = format!("{now_ms:>6} ms  {}", event());
        if self.print_all {
            eprintln!("{line}");
        }
        if self.ring.len() == TRACE_EVENTS_MAX {
            self.ring.pop_front();
        }
        self.ring.push_back(line);
    }

    /// The last events, one a line.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for line in &self.ring {
            let _ = writeln!(s, "  {line}");
        }
        s
    }
}

/// A short description of a message: its kind and, for deltas, the seq ranges per origin.
pub fn describe(m: &Message) -> String {
    match m {
        Message::Hello {
            node_id, progress, ..
        } => format!("hello(node {}, {})", node_id.0, progress_str(progress)),
        Message::Ack { progress, .. } => format!("ack({})", progress_str(progress)),
        Message::Deltas { entries, .. } => {
            let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
            for e in entries {
                match ranges.last_mut() {
                    Some((o, _, to)) if *o == e.origin.0 && *to + 1 == e.seq => *to = e.seq,
                    _ => ranges.push((e.origin.0, e.seq, e.seq)),
                }
            }
            let parts: Vec<String> = ranges
                .iter()
                .map(|(o, a, b)| format!("{o}:{a}..={b}"))
                .collect();
            format!("deltas[{}]", parts.join(" "))
        }
        Message::AeDigests {
            session,
            level,
            nodes,
            ..
        } => format!(
            "ae_digests(s{session}, level {level}, {} nodes)",
            nodes.len()
        ),
        Message::AeDiffer {
            session,
            level,
            nodes,
            empty,
            ..
        } => format!(
            "ae_differ(s{session}, level {level}, {} differ, {} empty)",
            nodes.len(),
            empty.len()
        ),
        Message::AeCarts {
            session,
            chunk,
            carts,
            ..
        } => format!("ae_carts(s{session}, chunk {chunk}, {} carts)", carts.len()),
        Message::AeDone {
            session,
            chunks,
            progress,
            ..
        } => format!(
            "ae_done(s{session}, {chunks} chunks, {})",
            progress_str(progress)
        ),
        Message::AeAck {
            session, chunks, ..
        } => format!("ae_ack(s{session}, {chunks})"),
        Message::AeBusy { session, .. } => format!("ae_busy(s{session})"),
    }
}

fn progress_str(p: &[(meridian_clocks::ReplicaId, u64)]) -> String {
    let parts: Vec<String> = p.iter().map(|(o, s)| format!("{}:{s}", o.0)).collect();
    parts.join(",")
}
