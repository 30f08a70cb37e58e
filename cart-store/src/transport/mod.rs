//! Placeholder for the QUIC transport (being written on branch `transport`): the API the
//! writer codes against. Replaced wholesale at merge.
#![allow(missing_docs, dead_code, unused_variables)]

use crate::config::TlsConfig;
use meridian_cart_store_core::replication::Message;
use std::net::SocketAddr;
use std::time::Duration;

pub struct PeerLink {
    pub region: String,
    pub address: String,
    pub latency: Duration,
}
pub struct TransportConfig {
    pub region: String,
    pub listen: SocketAddr,
    pub tls: TlsConfig,
    pub peers: Vec<PeerLink>,
    pub reconnect_delay_max: Duration,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub outbound_messages_max: usize,
}
impl TransportConfig {
    pub fn new(region: String, listen: SocketAddr, tls: TlsConfig, peers: Vec<PeerLink>) -> Self {
        TransportConfig {
            region,
            listen,
            tls,
            peers,
            reconnect_delay_max: Duration::from_secs(5),
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            outbound_messages_max: 1024,
        }
    }
}
pub enum Inbound {
    Up {
        peer: String,
    },
    Down {
        peer: String,
        reason: String,
    },
    Message {
        peer: String,
        message: Message,
        bytes: usize,
    },
}
pub struct Transport;
#[derive(Clone)]
pub struct Outbound;
#[derive(Debug)]
pub enum SendError {
    Full,
    NoSuchPeer,
    Closed,
}
impl Outbound {
    pub fn try_send(&self, peer: &str, message: Message) -> Result<(), SendError> {
        Err(SendError::Closed)
    }
}
#[derive(Clone)]
pub struct Faults;
impl Faults {
    pub fn cut(&self, peer: &str) {}
    pub fn heal(&self, peer: &str) {}
}
#[derive(Debug, thiserror::Error)]
#[error("transport")]
pub struct TransportError;
impl Transport {
    pub async fn start(
        config: TransportConfig,
        inbound: crossbeam_channel::Sender<Inbound>,
    ) -> Result<(Transport, Outbound, Faults), TransportError> {
        Err(TransportError)
    }
    pub fn local_addr(&self) -> SocketAddr {
        unimplemented!()
    }
    pub async fn shutdown(self) {}
}
