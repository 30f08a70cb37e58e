//! N replicas of the real [`Replica`] over [`MemStorage`], each with its own manual clock,
//! restarted from what survived a crash under the same node id.

use meridian_cart_store_core::replication::{ReplicationConfig, SyncRequest};
use meridian_cart_store_core::{MemStorage, Node, NodeConfig, Replica, WriteRequest};
use meridian_clocks::{ManualClock, ReplicaId};
use std::time::{Duration, Instant};

/// Virtual time 0 on every node's physical clock (plus its skew).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

pub type SimReplica = Replica<MemStorage, ManualClock>;

/// One region: its storage, clock and (while up) its replica.
#[derive(Debug)]
pub struct SimNode {
    pub region: String,
    pub node_id: ReplicaId,
    pub storage: MemStorage,
    clock: ManualClock,
    skew_ms: u64,
    node_config: NodeConfig,
    config: ReplicationConfig,
    /// `None` while the node is down.
    pub replica: Option<SimReplica>,
    /// When a down node restarts.
    pub restart_at_ms: u64,
    /// When received entries and client requests are to be committed.
    pub commit_due_ms: Option<u64>,
    /// Client requests waiting for the next commit.
    pub pending: Vec<WriteRequest>,
    /// An offloaded sync (`offload_sync`), and when it finishes.
    pub sync_running: Option<(u64, SyncRequest)>,
}

impl SimNode {
    pub fn set_clock(&self, now_ms: u64) {
        self.clock.set(EPOCH_MS + now_ms + self.skew_ms);
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    /// Opens the node on its storage and wraps it in a fresh replica (no peer state).
    pub fn start(&mut self, now: Instant, now_ms: u64) -> Result<(), String> {
        self.set_clock(now_ms);
        let node = Node::open(
            self.storage.clone(),
            self.clock.clone(),
            self.node_config.clone(),
        )
        .map_err(|e| format!("{} failed to open: {e}", self.region))?;
        self.replica = Some(Replica::new(node, self.config.clone(), now));
        Ok(())
    }

    /// Stops the node; `storage` is what its restart will find.
    pub fn stop(&mut self, storage: MemStorage, restart_at_ms: u64) {
        self.storage = storage;
        self.replica = None;
        self.restart_at_ms = restart_at_ms;
        self.commit_due_ms = None;
        self.pending.clear();
        self.sync_running = None;
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// This node's own durable progress (0 while down).
    pub fn durable_own(&self) -> u64 {
        self.replica.as_ref().map_or(0, |r| {
            r.node()
                .durable_progress()
                .get(&self.node_id)
                .copied()
                .unwrap_or(0)
        })
    }
}

/// The settings of one simulated node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub config: ReplicationConfig,
    pub skew_ms: u64,
}

/// The nodes and which pairs hold a connection.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<SimNode>,
    connected: Vec<Vec<bool>>,
    base: Instant,
}

impl Cluster {
    /// Starts one node per spec: regions `r0..`, node ids `1..`.
    pub fn start(specs: Vec<NodeSpec>, base: Instant) -> Result<Self, String> {
        let n = specs.len();
        let mut nodes = Vec::with_capacity(n);
        for (i, spec) in specs.into_iter().enumerate() {
            let node_id = ReplicaId(i as u64 + 1);
            let mut node = SimNode {
                region: spec.config.region.clone(),
                node_id,
                storage: MemStorage::new(),
                clock: ManualClock::new(EPOCH_MS),
                skew_ms: spec.skew_ms,
                // Compact a line from its second add, so that compactions race the removes
                // still in flight as often as possible.
                node_config: NodeConfig {
                    compaction_line_adds_min: 2,
                    ..NodeConfig::new(node_id)
                },
                config: spec.config,
                replica: None,
                restart_at_ms: 0,
                commit_due_ms: None,
                pending: Vec::new(),
                sync_running: None,
            };
            node.start(base, 0)?;
            nodes.push(node);
        }
        Ok(Cluster {
            nodes,
            connected: vec![vec![false; n]; n],
            base,
        })
    }

    pub fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Virtual ms of an instant the core returned.
    pub fn ms_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    pub fn index_of(&self, region: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.region == region)
            .unwrap_or_else(|| panic!("unknown region {region:?}"))
    }

    pub fn is_connected(&self, a: usize, b: usize) -> bool {
        self.connected[a][b]
    }

    /// A new connection between `a` and `b`: both ends hear of it.
    pub fn connect(&mut self, a: usize, b: usize, now_ms: u64) {
        let now = self.at(now_ms);
        self.connected[a][b] = true;
        self.connected[b][a] = true;
        let (ra, rb) = (self.nodes[a].region.clone(), self.nodes[b].region.clone());
        if let Some(r) = self.nodes[a].replica.as_mut() {
            r.handle_connect(now, &rb);
        }
        if let Some(r) = self.nodes[b].replica.as_mut() {
            r.handle_connect(now, &ra);
        }
    }

    /// The connection between `a` and `b` is gone: the ends still up hear of it.
    pub fn disconnect(&mut self, a: usize, b: usize, now_ms: u64) {
        let now = self.at(now_ms);
        self.connected[a][b] = false;
        self.connected[b][a] = false;
        let (ra, rb) = (self.nodes[a].region.clone(), self.nodes[b].region.clone());
        if let Some(r) = self.nodes[a].replica.as_mut() {
            r.handle_disconnect(now, &rb);
        }
        if let Some(r) = self.nodes[b].replica.as_mut() {
            r.handle_disconnect(now, &ra);
        }
    }
}
