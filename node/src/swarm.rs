//! Swarm assembly: transports, behaviours and the libp2p defaults we override on purpose.
//!
//! The protocols themselves (message types and codecs) live in [`crate::protocol`]; this module
//! only wires them into one [`Behaviour`] and builds the [`Swarm`].
//!
//! Defaults that do not fit a messenger, and what we do instead:
//! - connections close after 10 s idle: chats sit idle for minutes, so [`SwarmConfig::idle_timeout`]
//!   defaults to 10 minutes;
//! - Kademlia stays a client until an external address is confirmed: on a LAN nobody ever is,
//!   so [`SwarmConfig::kad_server`] forces server mode; Kademlia also only learns addresses it
//!   is told, so the node feeds it identify's listen addresses;
//! - the built-in request-response codecs cap frames at 1 MiB and report an oversized one as a
//!   bare EOF: ours check sizes themselves and say so ([`crate::protocol::CborCodec`]);
//! - mDNS ignores loopback interfaces: tests on 127.0.0.1 connect by address, mDNS tests run in
//!   network namespaces;
//! - relay servers end circuits after 2 minutes or 128 KiB: ours allow an hour and 1 GiB
//!   ([`SwarmConfig::relay_max_circuit_duration`]);
//! - AutoNAT trusts only global addresses and waits 15 s: private test networks set
//!   [`SwarmConfig::autonat_only_global_ips`] off.
//!
//! Every node is a relay client with DCUtR and AutoNAT: behind a NAT it reserves a slot on a
//! relay it knows, and a relayed connection is upgraded to a direct one when hole punching
//! works (the node's `nat` module decides when to reserve).

use std::time::Duration;

use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, Swarm, SwarmBuilder, autonat, dcutr, identify, mdns, noise, ping, relay, tcp, yamux,
};

use crate::protocol::{
    self, FILE_PROTOCOL, FileCodec, KAD_PROTOCOL, MSG_PROTOCOL, MsgCodec, PROFILE_PROTOCOL,
    ProfileCodec,
};

/// Request-response streams open at once on one connection, both directions together
/// (libp2p's default of 100 is below what a pipelining sender and its peer use).
pub const MAX_STREAMS_PER_CONNECTION: usize = 512;

/// How long an incoming or outgoing TCP connection may take to finish its security and
/// multiplexer handshakes before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identify protocol version; peers that speak another one are not Encrypto nodes.
pub const IDENTIFY_PROTOCOL: &str = "/encrypto/id/1.0.0";

/// How the swarm is built.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Addresses to listen on (TCP and/or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Answer Kademlia queries (server mode) without waiting for a confirmed external address.
    pub kad_server: bool,
    /// Close a connection after it has been idle this long.
    pub idle_timeout: Duration,
    /// How long a request (a message, a profile exchange) may wait for its response.
    pub request_timeout: Duration,
    /// Connection limits: established connections in all.
    pub max_connections: u32,
    /// Connection limits: established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Connection limits: incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Serve circuit relay v2 for other peers (an always-on node with a public address). A
    /// relay only accepts reservations once it has a confirmed external address (see
    /// `NodeConfig::external_addrs`).
    pub relay_server: bool,
    /// Relay limits: how long one relayed connection may last. libp2p's default of 2 minutes
    /// cuts chats and file transfers; ours is an hour.
    pub relay_max_circuit_duration: Duration,
    /// Relay limits: bytes one relayed connection may carry in each direction (libp2p's
    /// default of 128 KiB is less than one file chunk; ours is 1 GiB).
    pub relay_max_circuit_bytes: u64,
    /// Relay limits: reservations held at once.
    pub relay_max_reservations: usize,
    /// Relay limits: relayed connections open at once.
    pub relay_max_circuits: usize,
    /// AutoNAT: only trust dial-backs of global (public) addresses. Tests on private
    /// networks (network namespaces) turn this off.
    pub autonat_only_global_ips: bool,
    /// AutoNAT: how long after start the first reachability probe runs.
    pub autonat_boot_delay: Duration,
}

impl Default for SwarmConfig {
    /// TCP and QUIC on every interface, ephemeral ports; mDNS and Kademlia server mode on.
    fn default() -> Self {
        SwarmConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .expect("a valid literal multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid literal multiaddr"),
            ],
            mdns: true,
            kad_server: true,
            idle_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_peer: 4,
            max_pending_incoming: 64,
            relay_server: false,
            relay_max_circuit_duration: Duration::from_secs(3600),
            relay_max_circuit_bytes: 1 << 30,
            relay_max_reservations: 128,
            relay_max_circuits: 64,
            autonat_only_global_ips: true,
            autonat_boot_delay: Duration::from_secs(15),
        }
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    // The derive also generates `BehaviourEvent`, whose variants it cannot document.
    #![allow(missing_docs)]

    use super::*;

    /// All of the node's libp2p behaviours.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Connection limits (first, so they apply before anything else sees a connection).
        pub limits: connection_limits::Behaviour,
        /// Identify: listen addresses and protocols of peers.
        pub identify: identify::Behaviour,
        /// Ping: liveness and round-trip times.
        pub ping: ping::Behaviour,
        /// mDNS discovery, when enabled.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// The Kademlia DHT on `/encrypto/kad/1.0.0`.
        pub kad: kad::Behaviour<MemoryStore>,
        /// `/encrypto/msg/3`: envelopes (one or a batch) and control payloads; the response is
        /// the ack.
        pub msg: request_response::Behaviour<MsgCodec>,
        /// `/encrypto/profile/1`: signed profiles exchanged on connect.
        pub profile: request_response::Behaviour<ProfileCodec>,
        /// `/encrypto/file/1`: manifests and sealed chunks.
        pub file: request_response::Behaviour<FileCodec>,
        /// Circuit relay v2 server, when enabled.
        pub relay: Toggle<relay::Behaviour>,
        /// Circuit relay v2 client: reservations on relays, relayed connections.
        pub relay_client: relay::client::Behaviour,
        /// Hole punching over a relayed connection (DCUtR).
        pub dcutr: dcutr::Behaviour,
        /// AutoNAT: asks peers to dial back, to learn whether we are reachable.
        pub autonat: autonat::Behaviour,
    }
}

/// The swarm could not be built or could not listen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The TCP/noise/yamux transport could not be set up.
    #[error("cannot set up the TCP transport: {0}")]
    Transport(String),
    /// mDNS could not start (no usable network interface or socket).
    #[error("cannot start mDNS discovery: {0}")]
    Mdns(String),
    /// A listen address could not be bound (in use, not local, unsupported).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Builds the swarm for `keypair` (the identity's Ed25519 key, so the PeerId is the signing
/// key) and starts listening on the configured addresses.
///
/// # Errors
/// [`SwarmError`] naming what could not be set up.
pub fn build(keypair: Keypair, config: &SwarmConfig) -> Result<Swarm<Behaviour>, SwarmError> {
    let mut mdns_error = None;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        // TCP built by hand rather than with `with_tcp`, which sets no handshake timeout: a
        // connection that never finishes its handshake would hold one of the few pending
        // slots for ever, and a few dozen silent sockets would lock every new peer out.
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                use libp2p::Transport as _;
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default())
                        .timeout(HANDSHAKE_TIMEOUT),
                )
            },
        )
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mdns = if config.mdns {
                match mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        mdns_error = Some(e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            // What peers ask us to store is handed to the node, which keeps only valid
            // profile records and name providers (see `crate::directory`).
            kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
            let mut kad =
                kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_config);
            if config.kad_server {
                kad.set_mode(Some(kad::Mode::Server));
            }
            let relay = config.relay_server.then(|| {
                relay::Behaviour::new(
                    peer_id,
                    relay::Config {
                        max_reservations: config.relay_max_reservations,
                        max_circuits: config.relay_max_circuits,
                        max_circuit_duration: config.relay_max_circuit_duration,
                        max_circuit_bytes: config.relay_max_circuit_bytes,
                        ..relay::Config::default()
                    },
                )
            });
            let rr_config = request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
            Behaviour {
                limits: connection_limits::Behaviour::new(
                    ConnectionLimits::default()
                        .with_max_established(Some(config.max_connections))
                        .with_max_established_per_peer(Some(config.max_connections_per_peer))
                        .with_max_pending_incoming(Some(config.max_pending_incoming)),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("encrypto/{}", env!("CARGO_PKG_VERSION")))
                        // A new address (a relay reservation) reaches connected peers, and
                        // through them the DHT, at once rather than at the next identify.
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                kad,
                msg: request_response::Behaviour::with_codec(
                    protocol::msg_codec(),
                    [(MSG_PROTOCOL, ProtocolSupport::Full)],
                    rr_config.clone(),
                ),
                profile: request_response::Behaviour::with_codec(
                    protocol::profile_codec(),
                    [(PROFILE_PROTOCOL, ProtocolSupport::Full)],
                    rr_config.clone(),
                ),
                file: request_response::Behaviour::with_codec(
                    protocol::file_codec(),
                    [(FILE_PROTOCOL, ProtocolSupport::Full)],
                    rr_config,
                ),
                relay: Toggle::from(relay),
                relay_client,
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config {
                        only_global_ips: config.autonat_only_global_ips,
                        boot_delay: config.autonat_boot_delay,
                        ..autonat::Config::default()
                    },
                ),
            }
        })
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_timeout)
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    if let Some(e) = mdns_error {
        return Err(SwarmError::Mdns(e));
    }
    for addr in &config.listen {
        check_tcp_port_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| SwarmError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(swarm)
}

/// libp2p binds TCP listeners with `SO_REUSEPORT` (so that dials can reuse the port), and two
/// such sockets may share a port: a second node on a taken port would then start "fine" and
/// receive half of the first one's connections. A plain bind of the same address (no
/// `SO_REUSEPORT`) fails when the port is taken, so it is tried first. Port 0 is always free.
fn check_tcp_port_free(addr: &Multiaddr) -> Result<(), SwarmError> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) => Err(SwarmError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        }),
    }
}
