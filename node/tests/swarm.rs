//! Two real swarms on loopback: they connect by address over TCP and over QUIC, identify each
//! other, and exchange signed profiles on `/encrypto/profile/1` through our codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use encrypto_crypto::{Identity, RsaBits, SignedProfile};
use encrypto_node::protocol::{ProfileRequest, ProfileResponse};
use encrypto_node::swarm::{self, Behaviour, BehaviourEvent, SwarmConfig};
use futures::StreamExt;
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use rand::SeedableRng;
use rand::rngs::StdRng;

const STEP: Duration = Duration::from_secs(20);

fn identity(seed: u64) -> Identity {
    Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048).unwrap()
}

fn loopback(listen: &str) -> SwarmConfig {
    SwarmConfig {
        listen: vec![listen.parse().unwrap()],
        mdns: false,
        ..SwarmConfig::default()
    }
}

/// Polls `swarm` until it reports a listen address.
async fn listen_addr(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("no listen address within the step timeout")
}

/// Alice dials Bob at `listen` and asks for his profile; Bob answers with it.
async fn profile_exchange(listen: &str) {
    let (alice, bob) = (identity(1), identity(2));
    let alice_profile = alice.sign_profile("Alice", 1).unwrap();
    let bob_profile = bob.sign_profile("Bob", 2).unwrap();
    let mut a = swarm::build(alice.to_libp2p_keypair(), &loopback(listen)).unwrap();
    let mut b = swarm::build(bob.to_libp2p_keypair(), &loopback(listen)).unwrap();
    let addr = listen_addr(&mut b).await;
    a.dial(addr).unwrap();

    let bob_peer = bob.peer_id();
    let bob_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Profile(
                request_response::Event::Message {
                    message:
                        Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) = b.select_next_some().await
            {
                let theirs = SignedProfile::from_bytes(&request.profile).unwrap();
                let response = ProfileResponse {
                    profile: bob_profile.to_bytes().into(),
                };
                b.behaviour_mut()
                    .profile
                    .send_response(channel, response)
                    .unwrap();
                // Keep polling so the response is actually written out.
                let deadline = tokio::time::sleep(Duration::from_secs(2));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        _ = b.select_next_some() => {}
                    }
                }
                return theirs;
            }
        }
    });

    let got = tokio::time::timeout(STEP, async {
        loop {
            match a.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == bob_peer => {
                    a.behaviour_mut().profile.send_request(
                        &bob_peer,
                        ProfileRequest {
                            profile: alice_profile.to_bytes().into(),
                        },
                    );
                }
                SwarmEvent::Behaviour(BehaviourEvent::Profile(
                    request_response::Event::Message {
                        message: Message::Response { response, .. },
                        peer,
                        ..
                    },
                )) => {
                    assert_eq!(peer, bob_peer);
                    return SignedProfile::from_bytes(&response.profile).unwrap();
                }
                SwarmEvent::Behaviour(BehaviourEvent::Profile(
                    request_response::Event::OutboundFailure { error, .. },
                )) => panic!("profile request failed: {error}"),
                _ => {}
            }
        }
    })
    .await
    .expect("no profile response within the step timeout");

    let verified = got.verify(&bob.peer_id()).unwrap();
    assert_eq!(verified.name, "Bob");
    let theirs = tokio::time::timeout(STEP, bob_task).await.unwrap().unwrap();
    assert_eq!(theirs.verify(&alice.peer_id()).unwrap().name, "Alice");
}

#[tokio::test]
async fn profiles_exchanged_over_tcp() {
    profile_exchange("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn profiles_exchanged_over_quic() {
    profile_exchange("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn an_address_in_use_is_reported() {
    // Bind a TCP port, then ask the swarm for the same one: an error from `build` naming the
    // address, or (if the transport binds asynchronously) a listener event; never a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = loopback(&format!("/ip4/127.0.0.1/tcp/{port}"));
    let mut s = match swarm::build(identity(3).to_libp2p_keypair(), &config) {
        Err(e) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}");
            return;
        }
        Ok(s) => s,
    };
    let closed = tokio::time::timeout(STEP, async {
        loop {
            match s.select_next_some().await {
                SwarmEvent::ListenerClosed { reason: Err(_), .. }
                | SwarmEvent::ListenerError { .. } => return true,
                SwarmEvent::NewListenAddr { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .expect("no listener event within the step timeout");
    assert!(closed, "listening on a taken port succeeded");
}

/// A port held by another swarm (whose listener has `SO_REUSEPORT`) is refused too, rather
/// than shared with it.
#[tokio::test]
async fn a_port_taken_by_another_node_is_refused() {
    let mut first = swarm::build(
        identity(4).to_libp2p_keypair(),
        &loopback("/ip4/127.0.0.1/tcp/0"),
    )
    .unwrap();
    let addr = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = first.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .unwrap();
    let err = swarm::build(
        identity(5).to_libp2p_keypair(),
        &loopback(&addr.to_string()),
    )
    .err()
    .expect("a second swarm listened on a taken port");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct RelayClient {
    relay: libp2p::relay::client::Behaviour,
}

/// A node started with `relay_server` and an external address accepts a reservation from a
/// relay client (the way a node behind NAT will use it), with our limits, not libp2p's.
#[tokio::test]
async fn a_relay_server_accepts_reservations() {
    use libp2p::multiaddr::Protocol;
    use libp2p::{SwarmBuilder, noise, relay, tcp, yamux};

    let server_id = identity(4);
    let mut config = loopback("/ip4/127.0.0.1/tcp/0");
    config.relay_server = true;
    let mut server = swarm::build(server_id.to_libp2p_keypair(), &config).unwrap();
    let addr = listen_addr(&mut server).await;
    // What `NodeConfig::external_addrs` does: without a confirmed external address a relay
    // refuses reservations (it would have no address to hand out).
    server.add_external_address(addr.clone());
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });

    let client_id = identity(5);
    let mut client = SwarmBuilder::with_existing_identity(client_id.to_libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| RelayClient { relay })
        .unwrap()
        .build();
    let circuit = addr
        .with(Protocol::P2p(server_id.peer_id()))
        .with(Protocol::P2pCircuit);
    client.listen_on(circuit).unwrap();
    let accepted = tokio::time::timeout(STEP, async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(RelayClientEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
                )) => return relay_peer_id,
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                    panic!("reservation refused: {e}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("no reservation within the step timeout");
    assert_eq!(accepted, server_id.peer_id());
}
