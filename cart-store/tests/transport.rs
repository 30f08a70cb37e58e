//! The replication transport over real QUIC on loopback: mutual TLS, the two streams,
//! refusals, garbage, faults and simulated latency.

use meridian_cart_store::certs::write_dev_certs;
use meridian_cart_store::config::TlsConfig;
use meridian_cart_store::replication::wire::{encode_frame, Entry};
use meridian_cart_store::replication::Message;
use meridian_cart_store::transport::{
    Faults, Inbound, Outbound, PeerLink, Transport, TransportConfig, ALPN,
};
use meridian_clocks::{HlcTimestamp, ReplicaId};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

fn certs(regions: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let regions: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    write_dev_certs(dir.path(), &regions).unwrap();
    dir
}

fn tls(dir: &Path, region: &str) -> TlsConfig {
    TlsConfig {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("{region}.pem")),
        key: dir.join(format!("{region}.key")),
    }
}

fn link(region: &str, address: &str, latency: Duration) -> PeerLink {
    PeerLink {
        region: region.into(),
        address: address.into(),
        latency,
    }
}

fn config(tls: TlsConfig, region: &str, peers: Vec<PeerLink>) -> TransportConfig {
    let mut c = TransportConfig::new(region, "127.0.0.1:0".parse().unwrap(), tls, peers);
    c.reconnect_delay_max = Duration::from_millis(300);
    c.handshake_timeout = Duration::from_secs(3);
    c
}

/// Never dialed: the acceptor's address for a peer that dials it.
const NOWHERE: &str = "127.0.0.1:9";

struct Node {
    transport: Transport,
    out: Outbound,
    faults: Faults,
    rx: crossbeam_channel::Receiver<Inbound>,
}

impl Node {
    async fn start(config: TransportConfig) -> Node {
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let (transport, out, faults) = Transport::start(config, tx).await.unwrap();
        Node {
            transport,
            out,
            faults,
            rx,
        }
    }

    fn addr(&self) -> String {
        self.transport.local_addr().to_string()
    }

    /// The next event, or `None` after `within`.
    async fn next(&self, within: Duration) -> Option<Inbound> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(e) = self.rx.try_recv() {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(2)).await;
        }
    }

    /// The next event, which must come within 5 s.
    async fn expect(&self) -> Inbound {
        self.next(Duration::from_secs(5))
            .await
            .expect("an event within 5 s")
    }

    async fn expect_up(&self, peer: &str) {
        assert_eq!(self.expect().await, Inbound::Up { peer: peer.into() });
    }

    async fn expect_down(&self, peer: &str) -> String {
        match self.expect().await {
            Inbound::Down { peer: p, reason } if p == peer => reason,
            other => panic!("expected Down from {peer}, got {other:?}"),
        }
    }

    async fn expect_message(&self, peer: &str) -> Message {
        match self.expect().await {
            Inbound::Message {
                peer: p,
                message,
                bytes,
            } if p == peer => {
                assert_eq!(bytes, encode_frame(&message).len());
                message
            }
            other => panic!("expected a message from {peer}, got {other:?}"),
        }
    }
}

/// Starts beta, then alpha dialing it (alpha < beta), and waits for both `Up`s.
async fn pair(dir: &Path, alpha_latency: Duration) -> (Node, Node) {
    let beta = Node::start(config(
        tls(dir, "beta"),
        "beta",
        vec![link("alpha", NOWHERE, Duration::ZERO)],
    ))
    .await;
    let alpha = Node::start(config(
        tls(dir, "alpha"),
        "alpha",
        vec![link("beta", &beta.addr(), alpha_latency)],
    ))
    .await;
    alpha.expect_up("beta").await;
    beta.expect_up("alpha").await;
    (alpha, beta)
}

fn ack(n: u64) -> Message {
    Message::Ack {
        hlc: HlcTimestamp::new(1_700_000_000_000 + n, 0),
        progress: vec![(ReplicaId(1), n), (ReplicaId(2), 7)],
        committed: n,
    }
}

fn deltas(entries: usize, record_bytes: usize) -> Message {
    Message::Deltas {
        hlc: HlcTimestamp::new(1_700_000_000_000, 1),
        entries: (1..=entries as u64)
            .map(|seq| Entry {
                origin: ReplicaId(1),
                seq,
                record: vec![(seq % 251) as u8; record_bytes],
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_come_up_and_carry_messages_both_ways() {
    let dir = certs(&["alpha", "beta"]);
    let (alpha, beta) = pair(dir.path(), Duration::ZERO).await;

    let hello = Message::Hello {
        region: "alpha".into(),
        node_id: ReplicaId(1),
        hlc: HlcTimestamp::new(5, 0),
        progress: vec![(ReplicaId(1), 3)],
        committed: 3,
    };
    // A 3 MiB batch, then an ack: the ack has its own stream, and both arrive intact.
    let big = deltas(3, 1 << 20);
    alpha.out.try_send("beta", hello.clone()).unwrap();
    alpha.out.try_send("beta", big.clone()).unwrap();
    alpha.out.try_send("beta", ack(1)).unwrap();
    let mut got = vec![];
    for _ in 0..3 {
        got.push(beta.expect_message("alpha").await);
    }
    // The data stream keeps its order; the ack may overtake the batch.
    let data: Vec<&Message> = got
        .iter()
        .filter(|m| !matches!(m, Message::Ack { .. }))
        .collect();
    assert_eq!(data, vec![&hello, &big]);
    assert!(got.contains(&ack(1)));

    beta.out.try_send("alpha", ack(2)).unwrap();
    beta.out.try_send("alpha", deltas(10, 100)).unwrap();
    let mut got = vec![
        alpha.expect_message("beta").await,
        alpha.expect_message("beta").await,
    ];
    got.sort_by_key(|m| m.kind());
    assert_eq!(got, vec![ack(2), deltas(10, 100)]);

    let a = &alpha.transport.stats()[0];
    assert_eq!(
        (a.region.as_str(), a.connected, a.connects),
        ("beta", true, 1)
    );
    assert_eq!((a.messages_sent, a.messages_received), (3, 2));
    let b = &beta.transport.stats()[0];
    assert_eq!((b.messages_sent, b.messages_received), (2, 3));
    assert!(b.bytes_received > 3 << 20);
    assert_eq!(
        alpha.out.try_send("gamma", ack(1)),
        Err(meridian_cart_store::transport::SendError::NoSuchPeer)
    );

    alpha.transport.shutdown().await;
    assert!(beta.expect_down("alpha").await.contains("shutdown"));
    assert_eq!(
        alpha.out.try_send("beta", ack(1)),
        Err(meridian_cart_store::transport::SendError::Closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let good = certs(&["alpha", "beta"]);
    let other = certs(&["alpha", "beta"]);
    let beta = Node::start(config(
        tls(good.path(), "beta"),
        "beta",
        vec![link("alpha", NOWHERE, Duration::ZERO)],
    ))
    .await;
    // alpha trusts the other CA and presents its certificate.
    let alpha = Node::start(config(
        tls(other.path(), "alpha"),
        "alpha",
        vec![link("beta", &beta.addr(), Duration::ZERO)],
    ))
    .await;
    assert_eq!(alpha.next(Duration::from_secs(2)).await, None);
    assert_eq!(beta.next(Duration::ZERO).await, None);
    let a = &alpha.transport.stats()[0];
    assert!(!a.connected);
    let err = a.last_error.clone().expect("alpha's dial failed");
    // Both dev CAs have the same name, so webpki finds "the" issuer and its signature fails.
    assert!(err.contains("invalid peer certificate"), "{err}");
    let refused = beta.transport.refusals();
    assert!(refused.count >= 1, "{refused:?}");
    let reason = refused.last.unwrap();
    assert!(reason.contains("handshake failed"), "{reason}");
    assert!(!beta.transport.stats()[0].connected);
}

fn raw_client(ca: &Path, client_auth: Option<(&Path, &Path)>) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut tls = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let dir = certs(&["alpha", "beta"]);
    let beta = Node::start(config(
        tls(dir.path(), "beta"),
        "beta",
        vec![link("alpha", NOWHERE, Duration::ZERO)],
    ))
    .await;
    let addr: SocketAddr = beta.transport.local_addr();
    let client = raw_client(&dir.path().join("ca.pem"), None);
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        // TLS 1.3: the client may finish before the server has checked it, so the refusal
        // can come as the handshake's error or as the connection closing right after.
        let conn = client.connect(addr, "beta").unwrap().await?;
        let mut s = conn.open_uni().await?;
        s.write_all(&[0]).await.ok();
        let mut r = conn.accept_uni().await?;
        let mut b = [0u8];
        r.read_exact(&mut b).await.ok();
        Err::<(), _>(conn.closed().await)
    })
    .await
    .expect("refused within 5 s");
    let err = outcome.unwrap_err();
    assert!(
        !matches!(err, quinn::ConnectionError::TimedOut),
        "refused, not timed out: {err}"
    );
    assert_eq!(beta.next(Duration::from_millis(200)).await, None);
    let refused = beta.transport.refusals();
    assert_eq!(refused.count, 1, "{refused:?}");
    let reason = refused.last.unwrap();
    assert!(reason.contains("no certificates"), "{reason}");
    client.close(0u32.into(), b"");
}

/// Opens the two tagged streams as a well-behaved peer would.
async fn open_streams(conn: &quinn::Connection) -> (quinn::SendStream, quinn::SendStream) {
    let mut data = conn.open_uni().await.unwrap();
    data.write_all(&[0]).await.unwrap();
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&[1]).await.unwrap();
    (data, control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_from_a_peer_replaces_the_first() {
    let dir = certs(&["alpha", "beta"]);
    let beta = Node::start(config(
        tls(dir.path(), "beta"),
        "beta",
        vec![link("alpha", NOWHERE, Duration::ZERO)],
    ))
    .await;
    let addr = beta.transport.local_addr();
    let alpha_cert = (dir.path().join("alpha.pem"), dir.path().join("alpha.key"));
    let client = raw_client(
        &dir.path().join("ca.pem"),
        Some((&alpha_cert.0, &alpha_cert.1)),
    );
    let first = client.connect(addr, "beta").unwrap().await.unwrap();
    let _first_streams = open_streams(&first).await;
    beta.expect_up("alpha").await;
    let second = client.connect(addr, "beta").unwrap().await.unwrap();
    let (mut data, _control) = open_streams(&second).await;
    // The old link's Down comes before the new one's Up.
    assert!(beta.expect_down("alpha").await.contains("replaced"));
    beta.expect_up("alpha").await;
    match tokio::time::timeout(Duration::from_secs(5), first.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            assert!(String::from_utf8_lossy(&c.reason).contains("replaced"))
        }
        other => panic!("the first connection should be closed as replaced: {other:?}"),
    }
    // The new one carries messages.
    let hello = Message::Hello {
        region: "alpha".into(),
        node_id: ReplicaId(1),
        hlc: HlcTimestamp::new(5, 0),
        progress: vec![],
        committed: 0,
    };
    data.write_all(&encode_frame(&hello)).await.unwrap();
    assert_eq!(beta.expect_message("alpha").await, hello);
    assert_eq!(beta.transport.stats()[0].connects, 2);
    client.close(0u32.into(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_frame_closes_that_connection_and_the_node_keeps_serving() {
    let dir = certs(&["alpha", "beta"]);
    let beta = Node::start(config(
        tls(dir.path(), "beta"),
        "beta",
        vec![link("alpha", NOWHERE, Duration::ZERO)],
    ))
    .await;
    let addr = beta.transport.local_addr();
    let mut wrong_version = encode_frame(&ack(1));
    wrong_version[5] = 9;
    let cases: [(&[u8], &str); 3] = [
        (&u32::MAX.to_be_bytes(), "more than the maximum"),
        (&wrong_version, "protocol version 9"),
        (
            &encode_frame(&deltas(1, 3)),
            "deltas message on the control stream",
        ),
    ];
    for (i, (garbage, want)) in cases.into_iter().enumerate() {
        // A client with alpha's valid certificate, speaking garbage.
        let client = raw_client(
            &dir.path().join("ca.pem"),
            Some((&dir.path().join("alpha.pem"), &dir.path().join("alpha.key"))),
        );
        let conn = client.connect(addr, "beta").unwrap().await.unwrap();
        let (mut data, mut control) = open_streams(&conn).await;
        let stream = if i == 2 { &mut control } else { &mut data };
        stream.write_all(garbage).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("closed within 5 s");
        match &closed {
            quinn::ConnectionError::ApplicationClosed(c) => {
                let reason = String::from_utf8_lossy(&c.reason);
                assert!(reason.contains(want), "{reason:?} should contain {want:?}");
            }
            other => panic!("expected an application close, got {other}"),
        }
        beta.expect_up("alpha").await;
        let reason = beta.expect_down("alpha").await;
        assert!(reason.contains(want), "{reason}");
        client.close(0u32.into(), b"");
    }

    // A well-behaved alpha still gets through.
    let alpha = Node::start(config(
        tls(dir.path(), "alpha"),
        "alpha",
        vec![link("beta", &beta.addr(), Duration::ZERO)],
    ))
    .await;
    alpha.expect_up("beta").await;
    beta.expect_up("alpha").await;
    alpha.out.try_send("beta", ack(9)).unwrap();
    assert_eq!(beta.expect_message("alpha").await, ack(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_change_nothing() {
    let dir = certs(&["alpha", "beta"]);
    let (alpha, beta) = pair(dir.path(), Duration::ZERO).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..2000 {
        let len = if i % 4 == 0 { 1200 } else { rng.usize(1..1400) };
        let mut d: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 2 == 0 {
            // Looks like a QUIC long header (Initial, version 1).
            d[0] = 0xc0 | (d[0] & 0x0f);
            if d.len() >= 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        for to in [alpha.transport.local_addr(), beta.transport.local_addr()] {
            let _ = socket.send_to(&d, to);
        }
        if i % 200 == 0 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    alpha.out.try_send("beta", deltas(2, 10)).unwrap();
    beta.out.try_send("alpha", ack(3)).unwrap();
    assert_eq!(beta.expect_message("alpha").await, deltas(2, 10));
    assert_eq!(alpha.expect_message("beta").await, ack(3));
    assert_eq!(alpha.next(Duration::from_millis(200)).await, None);
    assert_eq!(beta.next(Duration::ZERO).await, None);
    for s in alpha
        .transport
        .stats()
        .iter()
        .chain(&beta.transport.stats())
    {
        assert!(s.connected && s.connects == 1, "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_holds_the_link_down_until_heal() {
    let dir = certs(&["alpha", "beta"]);
    let (alpha, beta) = pair(dir.path(), Duration::ZERO).await;
    // Cut on the dialing side, then on the accepting side.
    for (cutter, other, peer, cutter_peer) in [
        (&alpha, &beta, "alpha", "beta"),
        (&beta, &alpha, "beta", "alpha"),
    ] {
        cutter.faults.cut(cutter_peer);
        assert!(cutter.faults.is_cut(cutter_peer));
        assert!(cutter.expect_down(cutter_peer).await.contains("cut"));
        assert!(other.expect_down(peer).await.contains("cut"));
        // The dialer retries every ≤ 300 ms; nothing comes up while cut.
        assert_eq!(other.next(Duration::from_millis(1200)).await, None);
        assert_eq!(cutter.next(Duration::ZERO).await, None);
        assert!(cutter.out.try_send(cutter_peer, ack(1)).is_ok());
        cutter.faults.heal(cutter_peer);
        assert!(!cutter.faults.is_cut(cutter_peer));
        cutter.expect_up(cutter_peer).await;
        other.expect_up(peer).await;
    }
    // Messages queued while the link was down were for the old connection: discarded.
    alpha.out.try_send("beta", ack(5)).unwrap();
    assert_eq!(beta.expect_message("alpha").await, ack(5));
    assert_eq!(alpha.transport.stats()[0].connects, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_latency_delays_each_message() {
    let dir = certs(&["alpha", "beta"]);
    let (alpha, beta) = pair(dir.path(), Duration::from_millis(100)).await;
    for n in 0..3 {
        let sent = Instant::now();
        alpha.out.try_send("beta", ack(n)).unwrap();
        assert_eq!(beta.expect_message("alpha").await, ack(n));
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_say_what_is_wrong() {
    let dir = certs(&["alpha", "beta"]);
    let start = |c: TransportConfig| async move {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        match Transport::start(c, tx).await {
            Ok(_) => panic!("should be refused"),
            Err(e) => e.to_string(),
        }
    };
    let peers = || vec![link("beta", NOWHERE, Duration::ZERO)];
    let mut c = config(tls(dir.path(), "alpha"), "alpha", peers());
    c.keep_alive = c.idle_timeout;
    assert!(start(c).await.contains("keep_alive"));
    let mut t = tls(dir.path(), "alpha");
    t.key = dir.path().join("missing.key");
    let e = start(config(t, "alpha", peers())).await;
    assert!(e.contains("missing.key"), "{e}");
    // alpha's certificate does not name beta.
    let e = start(config(tls(dir.path(), "alpha"), "beta", vec![])).await;
    assert!(e.contains("alpha.pem") && e.contains("not valid"), "{e}");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = config(tls(dir.path(), "alpha"), "alpha", peers());
    c.listen = taken.local_addr().unwrap();
    let e = start(c).await;
    assert!(e.contains(&taken.local_addr().unwrap().to_string()), "{e}");
}
