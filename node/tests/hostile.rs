//! A hostile peer against a real node: it completes the profile exchange honestly (so it is a
//! contact) and then sends random bytes, forged, misaddressed, replayed and oversized frames.
//! Every bad frame is rejected, a replay is stored once, and the victim keeps serving an honest
//! peer. The hostile side is a raw libp2p swarm with a codec that allows oversized frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use encrypto_crypto::control::{Control, ControlKind};
use encrypto_crypto::envelope::{self, OutboundSession};
use encrypto_crypto::{Identity, MessageId, PublicIdentity, SignedProfile, StorageKey};
use encrypto_node::addr_with_peer as dialable;
use encrypto_node::protocol::{
    CborCodec, ChatPayload, EnvelopeBatch, MAX_BATCH_ENVELOPES, MAX_MSG_FRAME, MSG_PROTOCOL,
    MsgRequest, MsgResponse, PROFILE_PROTOCOL, ProfileRequest, ProfileResponse,
};
use encrypto_node::test_support::loopback_config;
use encrypto_node::view::{Direction, Status};
use encrypto_node::{NodeConfig, NodeEvent, NodeHandle};
use futures::StreamExt;
use libp2p::request_response::{self, Message, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::{
    STEP, raw_swarm, seeded_identity as identity, start_node as start_harness_node, wait_for,
};
use tempfile::TempDir;
use tokio::sync::broadcast;

const NOW_SLACK: u64 = 0;

#[derive(NetworkBehaviour)]
struct Hostile {
    msg: request_response::Behaviour<CborCodec<MsgRequest, MsgResponse>>,
    /// The same protocol, outbound only, with batches of any size.
    raw: request_response::Behaviour<CborCodec<RawMsgRequest, MsgResponse>>,
    profile: request_response::Behaviour<CborCodec<ProfileRequest, ProfileResponse>>,
}

/// [`MsgRequest`] as it looks on the wire, without the batch's count limit.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum RawMsgRequest {
    Envelope(serde_bytes::ByteBuf),
    Control(serde_bytes::ByteBuf),
    Envelopes(Vec<serde_bytes::ByteBuf>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + NOW_SLACK
}

async fn start_node(
    tmp: &TempDir,
    name: &'static str,
    seed: u64,
) -> (NodeHandle, broadcast::Receiver<NodeEvent>, Multiaddr) {
    start_node_with(tmp, name, seed, |_| {}).await
}

async fn start_node_with(
    tmp: &TempDir,
    name: &'static str,
    seed: u64,
    tweak: impl FnOnce(&mut NodeConfig),
) -> (NodeHandle, broadcast::Receiver<NodeEvent>, Multiaddr) {
    let mut config = loopback_config(tmp.path().join(name));
    tweak(&mut config);
    let storage = StorageKey::from_bytes([seed as u8; 32]);
    let node = start_harness_node(identity(seed), name, 1, storage, config).unwrap();
    (node.handle, node.events, node.addr)
}

/// Sends a text from a real node and waits (one step at most) until it is acknowledged.
async fn send_and_deliver(
    from: &NodeHandle,
    events: &mut broadcast::Receiver<NodeEvent>,
    to: PeerId,
    text: String,
) {
    let id = from.send_text(to, text).await.unwrap();
    wait_for(events, |e| {
        matches!(e, NodeEvent::Delivered { id: done, .. } if *done == id).then_some(())
    })
    .await;
}

fn hostile_swarm(me: &Identity) -> Swarm<Hostile> {
    // Our own codec, but with limits far above the victim's, so oversized frames go out.
    let big = 4 * 1024 * 1024;
    raw_swarm(me, Duration::from_secs(60), |_| Hostile {
        msg: request_response::Behaviour::with_codec(
            CborCodec::new(big, big),
            [(MSG_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
        raw: request_response::Behaviour::with_codec(
            CborCodec::new(big, big),
            [(MSG_PROTOCOL, ProtocolSupport::Outbound)],
            request_response::Config::default(),
        ),
        profile: request_response::Behaviour::with_codec(
            CborCodec::new(big, big),
            [(PROFILE_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    })
    .unwrap()
}

/// Sends one message request and waits for its outcome: the response, or the failure text.
async fn ask(
    swarm: &mut Swarm<Hostile>,
    peer: PeerId,
    request: MsgRequest,
) -> Result<MsgResponse, String> {
    let id = swarm.behaviour_mut().msg.send_request(&peer, request);
    tokio::time::timeout(STEP, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(HostileEvent::Msg(request_response::Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                })) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(HostileEvent::Msg(
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    },
                )) if request_id == id => return Err(error.to_string()),
                SwarmEvent::Behaviour(HostileEvent::Profile(
                    request_response::Event::Message {
                        message: Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    // The victim asks for our profile too; answering is not needed here.
                    drop(channel);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("no outcome within the step timeout")
}

/// Dials the victim and presents `me`'s profile as "Mallory", so the victim pins it as a
/// contact; returns the victim's verified keys.
async fn join(
    h: &mut Swarm<Hostile>,
    me: &Identity,
    victim_addr: &Multiaddr,
    victim_peer: PeerId,
) -> PublicIdentity {
    h.dial(victim_addr.clone()).unwrap();
    let my_profile = me.sign_profile("Mallory", 1).unwrap();
    tokio::time::timeout(STEP, async {
        let mut sent = false;
        loop {
            match h.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. }
                    if peer_id == victim_peer && !sent =>
                {
                    h.behaviour_mut().profile.send_request(
                        &victim_peer,
                        ProfileRequest {
                            profile: my_profile.to_bytes().into(),
                        },
                    );
                    sent = true;
                }
                SwarmEvent::Behaviour(HostileEvent::Profile(
                    request_response::Event::Message {
                        message: Message::Response { response, .. },
                        ..
                    },
                )) => {
                    let p = SignedProfile::from_bytes(&response.profile).unwrap();
                    return p.verify(&victim_peer).unwrap().public;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn hostile_frames_are_rejected_and_honest_peers_still_served() {
    let tmp = TempDir::new().unwrap();
    let (victim, mut victim_events, victim_addr) = start_node(&tmp, "victim", 21).await;
    let (honest, mut honest_events, _) = start_node(&tmp, "honest", 22).await;
    let victim_peer = victim.peer_id();

    // The hostile peer connects and presents a valid profile, so it is pinned as a contact.
    let mallory = identity(23);
    let mut h = hostile_swarm(&mallory);
    let victim_public = join(&mut h, &mallory, &victim_addr, victim_peer).await;
    wait_for(&mut victim_events, |e| {
        matches!(e, NodeEvent::ProfileVerified { name, .. } if name == "Mallory").then_some(())
    })
    .await;

    let mut rng = StdRng::seed_from_u64(24);
    let seal = |rng: &mut StdRng, signer: &Identity, to: &PublicIdentity, text: &str| {
        let mut s = OutboundSession::new(rng, to, now_ms()).unwrap();
        let id = MessageId::random(rng);
        let body = ChatPayload::Text(text.to_owned()).to_bytes();
        envelope::seal_aes(signer, to, &mut s, id, now_ms(), &body, rng).unwrap()
    };

    // Random bytes.
    let r = ask(
        &mut h,
        victim_peer,
        MsgRequest::Envelope(vec![0xa5; 300].into()),
    )
    .await;
    assert_eq!(r, Ok(MsgResponse::Rejected));
    // Forged: Mallory's sender field, signed by someone else.
    let mut forged = seal(&mut rng, &mallory, &victim_public, "forged");
    forged.signature = seal(&mut rng, &identity(25), &victim_public, "x").signature;
    let r = ask(
        &mut h,
        victim_peer,
        MsgRequest::Envelope(forged.to_bytes().into()),
    )
    .await;
    assert_eq!(r, Ok(MsgResponse::Rejected));
    // Claims to be from the honest node.
    let honest_identity = identity(22);
    let impersonated = seal(&mut rng, &honest_identity, &victim_public, "impersonated");
    let r = ask(
        &mut h,
        victim_peer,
        MsgRequest::Envelope(impersonated.to_bytes().into()),
    )
    .await;
    assert_eq!(r, Ok(MsgResponse::Rejected));
    // Misaddressed: sealed for the honest node, sent to the victim.
    let misaddressed = seal(&mut rng, &mallory, honest_identity.public(), "misaddressed");
    let r = ask(
        &mut h,
        victim_peer,
        MsgRequest::Envelope(misaddressed.to_bytes().into()),
    )
    .await;
    assert_eq!(r, Ok(MsgResponse::Rejected));
    // Oversized: refused by the victim's codec before it reads the body.
    let r = ask(
        &mut h,
        victim_peer,
        MsgRequest::Envelope(vec![0; 1024 * 1024].into()),
    )
    .await;
    assert!(r.is_err(), "oversized frame got a response: {r:?}");
    // A valid message, then the same bytes again: both acknowledged, stored once.
    let valid = seal(&mut rng, &mallory, &victim_public, "valid once");
    for _ in 0..2 {
        let r = ask(
            &mut h,
            victim_peer,
            MsgRequest::Envelope(valid.to_bytes().into()),
        )
        .await;
        assert!(matches!(r, Ok(MsgResponse::Ack(_))), "{r:?}");
    }
    let history = victim.history(mallory.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].direction, Direction::In);

    // A batch mixing good and bad envelopes: one signed ack naming only the good ones (a
    // repeat counts as good), and only the new good one is stored.
    let fresh = seal(&mut rng, &mallory, &victim_public, "batched");
    let mut batch = EnvelopeBatch::new();
    for bytes in [
        forged.to_bytes(),
        fresh.to_bytes(),
        vec![0x5a; 200],
        valid.to_bytes(),
        misaddressed.to_bytes(),
    ] {
        batch.try_push(bytes).unwrap();
    }
    let r = ask(&mut h, victim_peer, MsgRequest::Envelopes(batch)).await;
    let Ok(MsgResponse::Ack(ack)) = r else {
        panic!("a batch with good envelopes got {r:?}")
    };
    let ack = Control::from_bytes(&ack).unwrap();
    let ControlKind::DeliveryAck { ids } = ack.kind else {
        panic!("not a delivery ack: {:?}", ack.kind)
    };
    assert_eq!(ids, vec![fresh.id, valid.id]);
    let history = victim.history(mallory.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 2);
    // Nothing good in it: rejected as a whole.
    let mut batch = EnvelopeBatch::new();
    batch.try_push(forged.to_bytes()).unwrap();
    batch.try_push(vec![0xa5; 300]).unwrap();
    let r = ask(&mut h, victim_peer, MsgRequest::Envelopes(batch)).await;
    assert_eq!(r, Ok(MsgResponse::Rejected));
    // Four envelopes signed together with one signature, one of them changed on the way: the
    // other three are acknowledged and stored; the changed one no longer fits the signature.
    // What changes is its wrapped session key, which the victim does not need (it unwraps the
    // first envelope's): only the signature tells.
    let mut s = OutboundSession::new(&mut rng, &victim_public, now_ms()).unwrap();
    let unsigned: Vec<_> = (0..4)
        .map(|i| {
            let id = MessageId::random(&mut rng);
            let body = ChatPayload::Text(format!("signed together {i}")).to_bytes();
            let now = now_ms();
            envelope::seal_aes_unsigned(&mallory, &victim_public, &mut s, id, now, &body, &mut rng)
                .unwrap()
        })
        .collect();
    let mut together = envelope::sign_batch(&mallory, unsigned);
    assert!(
        together
            .iter()
            .all(|e| e.signature == together[0].signature)
    );
    together[1].wrapped_key = Some(vec![1; 384].into());
    let mut batch = EnvelopeBatch::new();
    for env in &together {
        batch.try_push(env.to_bytes()).unwrap();
    }
    let r = ask(&mut h, victim_peer, MsgRequest::Envelopes(batch)).await;
    let Ok(MsgResponse::Ack(ack)) = r else {
        panic!("a batch signed together got {r:?}")
    };
    let ControlKind::DeliveryAck { ids } = Control::from_bytes(&ack).unwrap().kind else {
        panic!("not a delivery ack")
    };
    assert_eq!(ids, vec![together[0].id, together[2].id, together[3].id]);
    let history = victim.history(mallory.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 5);
    // Over the count limit, or empty (sent with a codec that does not check): refused by the
    // victim's codec, no response at all.
    let too_many = vec![fresh.to_bytes().into(); MAX_BATCH_ENVELOPES + 1];
    let r = ask_raw(&mut h, victim_peer, RawMsgRequest::Envelopes(too_many)).await;
    assert!(r.is_err(), "an over-count batch got a response: {r:?}");
    let r = ask_raw(&mut h, victim_peer, RawMsgRequest::Envelopes(Vec::new())).await;
    assert!(r.is_err(), "an empty batch got a response: {r:?}");
    let history = victim.history(mallory.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 5);

    // The victim still serves an honest peer.
    honest.dial(victim_addr).await.unwrap();
    wait_for(&mut honest_events, |e| {
        matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == victim_peer).then_some(())
    })
    .await;
    send_and_deliver(
        &honest,
        &mut honest_events,
        victim_peer,
        "still there?".into(),
    )
    .await;
    let history = victim.history(honest.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    victim.shutdown().await;
    honest.shutdown().await;
}

/// Sends a raw message request (any batch size) and waits for its outcome.
async fn ask_raw(
    swarm: &mut Swarm<Hostile>,
    peer: PeerId,
    request: RawMsgRequest,
) -> Result<MsgResponse, String> {
    let id = swarm.behaviour_mut().raw.send_request(&peer, request);
    tokio::time::timeout(STEP, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(HostileEvent::Raw(request_response::Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                })) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(HostileEvent::Raw(
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    },
                )) if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    })
    .await
    .expect("no outcome within the step timeout")
}

/// Presents `profile` to `victim` on the profile protocol and waits for the answer.
async fn present_profile(h: &mut Swarm<Hostile>, victim: PeerId, profile: &SignedProfile) {
    let id = h.behaviour_mut().profile.send_request(
        &victim,
        ProfileRequest {
            profile: profile.to_bytes().into(),
        },
    );
    tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::Behaviour(HostileEvent::Profile(request_response::Event::Message {
                message: Message::Response { request_id, .. },
                ..
            })) = h.select_next_some().await
                && request_id == id
            {
                return;
            }
        }
    })
    .await
    .expect("no profile response within the step timeout");
}

#[tokio::test]
async fn a_changed_key_is_flagged_not_accepted() {
    let tmp = TempDir::new().unwrap();
    let (victim, mut events, addr) = start_node(&tmp, "victim", 31).await;
    let victim_peer = victim.peer_id();
    let mallory = identity(32);
    let mut h = hostile_swarm(&mallory);
    h.dial(addr).unwrap();
    tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } = h.select_next_some().await
                && peer_id == victim_peer
            {
                return;
            }
        }
    })
    .await
    .unwrap();
    present_profile(
        &mut h,
        victim_peer,
        &mallory.sign_profile("Mallory", 1).unwrap(),
    )
    .await;
    wait_for(&mut events, |e| {
        matches!(e, NodeEvent::ProfileVerified { name, .. } if name == "Mallory").then_some(())
    })
    .await;
    let pinned = victim.contact(mallory.peer_id()).await.unwrap().unwrap();
    assert!(
        !pinned.listed,
        "a peer that only connected is not a contact"
    );
    let pinned_keys = pinned.public.clone();
    assert!(pinned_keys.is_some());

    // Same Ed25519 key (so the same PeerId), another RSA key: validly signed, but not the key
    // that was pinned.
    let other_rsa = identity(33).rsa_pkcs8_der().unwrap();
    let swapped = Identity::from_secret_parts(&mallory.ed25519_secret(), &other_rsa).unwrap();
    assert_eq!(swapped.peer_id(), mallory.peer_id());
    present_profile(
        &mut h,
        victim_peer,
        &swapped.sign_profile("Mallory", 2).unwrap(),
    )
    .await;
    wait_for(&mut events, |e| {
        matches!(e, NodeEvent::KeyChanged { peer } if *peer == mallory.peer_id()).then_some(())
    })
    .await;
    let contact = victim.contact(mallory.peer_id()).await.unwrap().unwrap();
    assert!(contact.key_changed);
    assert_eq!(contact.public, pinned_keys, "the pinned key was replaced");
    assert_eq!(contact.presented.as_ref(), Some(swapped.public()));
    let err = victim
        .send_text(mallory.peer_id(), "to whom?".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");

    // Re-verifying (after comparing safety numbers) accepts exactly the keys that were offered.
    let accepted = victim.verify_contact(mallory.peer_id()).await.unwrap();
    assert!(accepted.verified && !accepted.key_changed);
    assert_eq!(accepted.public.as_ref(), Some(swapped.public()));
    assert_eq!(accepted.presented, None);
    let stored = victim.contact(mallory.peer_id()).await.unwrap().unwrap();
    assert_eq!(stored, accepted);
    victim
        .send_text(mallory.peer_id(), "to the new key".into())
        .await
        .unwrap();
    assert_eq!(victim.contacts().await.unwrap(), [stored]);
    victim.shutdown().await;
}

/// A flood: hundreds of TCP connections that send random bytes or stall after connecting,
/// opened while an honest peer connects and sends. The honest message still arrives within
/// one step, and the victim answers its handle throughout.
#[tokio::test]
async fn a_connection_flood_does_not_lock_out_honest_peers() {
    use tokio::io::AsyncWriteExt;

    const FLOOD: usize = 600;
    let tmp = TempDir::new().unwrap();
    let (victim, _events, addr) = start_node(&tmp, "victim", 51).await;
    let (honest, mut honest_events, _) = start_node(&tmp, "honest", 52).await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();

    // The flood: half send garbage, half say nothing; all stay open until the test ends.
    let mut sockets = Vec::new();
    for i in 0..FLOOD {
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            continue;
        };
        if i % 2 == 0 {
            let junk: Vec<u8> = (0..4096u32)
                .map(|b| (b.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let _ = s.write_all(&junk).await;
        }
        sockets.push(s);
    }
    assert!(
        sockets.len() > FLOOD / 2,
        "the flood could not even connect"
    );

    // An honest peer adds the victim in the middle of it (retrying, as the node does for its
    // outbox: the silent connections hold the pending slots until their handshake times out)
    // and gets a message through.
    let started = std::time::Instant::now();
    let victim_peer = victim.peer_id();
    let full = dialable(&addr, victim_peer);
    let mut added = false;
    for _ in 0..30 {
        if honest.add_peer(full.clone()).await.is_ok() {
            added = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(added, "locked out for {:?}", started.elapsed());
    send_and_deliver(
        &honest,
        &mut honest_events,
        victim_peer,
        "through the flood".into(),
    )
    .await;
    println!(
        "flood of {} connections: honest peer connected and delivered in {:?}",
        sockets.len(),
        started.elapsed()
    );
    let history = victim.history(honest.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    drop(sockets);
    victim.shutdown().await;
    honest.shutdown().await;
}

/// A contact that sends ten times the victim's per-peer rate limit (valid, sealed envelopes,
/// so everything it gets through is stored): it is throttled to about the limit, while an
/// honest peer sending at the same time is never throttled and gets every message through.
#[tokio::test]
async fn a_peer_sending_ten_times_the_rate_limit_is_throttled_and_others_are_not() {
    const RATE: u32 = 25;
    const WAVES: usize = 40;
    const WAVE: Duration = Duration::from_millis(100);
    // 10x the rate: RATE / 10 per wave of a tenth of a second, times 10.
    const PER_WAVE: usize = RATE as usize;
    const BURST: u32 = 256;
    let tmp = TempDir::new().unwrap();
    let (victim, mut victim_events, victim_addr) = start_node_with(&tmp, "victim", 61, |c| {
        c.inbound_per_second = RATE;
        c.inbound_burst = BURST;
    })
    .await;
    let (honest, mut honest_events, _) = start_node(&tmp, "honest", 62).await;
    let victim_peer = victim.peer_id();
    honest
        .add_peer(dialable(&victim_addr, victim_peer))
        .await
        .unwrap();
    let mallory = identity(63);
    let mut h = hostile_swarm(&mallory);
    let victim_public = join(&mut h, &mallory, &victim_addr, victim_peer).await;
    let mallory_peer = mallory.peer_id();
    wait_for(&mut victim_events, |e| {
        matches!(e, NodeEvent::ProfileVerified { name, .. } if name == "Mallory").then_some(())
    })
    .await;

    // The honest peer chats at its own pace throughout the flood.
    let chat = {
        let honest = honest.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                ids.push(
                    honest
                        .send_text(victim_peer, format!("honest {i}"))
                        .await
                        .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ids
        })
    };

    // Mallory: PER_WAVE sealed envelopes every WAVE, each its own request.
    let mut rng = StdRng::seed_from_u64(64);
    let mut pending = std::collections::HashSet::new();
    let (mut stored, mut refused) = (0usize, 0usize);
    let mut tally = |event: SwarmEvent<HostileEvent>,
                     pending: &mut std::collections::HashSet<_>| match event {
        SwarmEvent::Behaviour(HostileEvent::Msg(request_response::Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        })) if pending.remove(&request_id) => match response {
            MsgResponse::Ack(_) => stored += 1,
            MsgResponse::Rejected => refused += 1,
        },
        SwarmEvent::Behaviour(HostileEvent::Msg(request_response::Event::OutboundFailure {
            request_id,
            error,
            ..
        })) if pending.contains(&request_id) => panic!("a flood request failed: {error}"),
        _ => {}
    };
    let started = std::time::Instant::now();
    for wave in 0..WAVES {
        for i in 0..PER_WAVE {
            let mut session = OutboundSession::new(&mut rng, &victim_public, now_ms()).unwrap();
            let body = ChatPayload::Text(format!("flood {wave}.{i}")).to_bytes();
            let env = envelope::seal_aes(
                &mallory,
                &victim_public,
                &mut session,
                MessageId::random(&mut rng),
                now_ms(),
                &body,
                &mut rng,
            )
            .unwrap();
            let id = h
                .behaviour_mut()
                .msg
                .send_request(&victim_peer, MsgRequest::Envelope(env.to_bytes().into()));
            pending.insert(id);
        }
        let until = tokio::time::Instant::now() + WAVE;
        while let Ok(event) = tokio::time::timeout_at(until, h.select_next_some()).await {
            tally(event, &mut pending);
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    tokio::time::timeout(STEP, async {
        while !pending.is_empty() {
            let event = h.select_next_some().await;
            tally(event, &mut pending);
        }
    })
    .await
    .expect("the victim did not answer every flood request");
    let sent = WAVES * PER_WAVE;
    assert_eq!(stored + refused, sent);

    // Throttled: at most the burst plus the rate over the flood's duration got through (with
    // a second's slack), so most of the 10x was refused; and what got through is stored.
    let allowed = f64::from(BURST) + f64::from(RATE) * (flood_secs + 1.0);
    println!(
        "10x flood: {sent} sent over {flood_secs:.1} s, {stored} stored, {refused} refused (at most {allowed:.0} allowed)"
    );
    assert!(stored as f64 <= allowed, "{stored} got through");
    assert!(refused >= sent / 2, "only {refused} of {sent} refused");
    let kept = victim.history(mallory_peer, None).await.unwrap();
    assert_eq!(kept.len(), stored);

    // The honest peer was never throttled, and all it sent is delivered and stored.
    let ids = chat.await.unwrap();
    let mut waiting: std::collections::HashSet<_> = ids.iter().copied().collect();
    tokio::time::timeout(STEP, async {
        while !waiting.is_empty() {
            if let Ok(NodeEvent::Delivered { id, .. }) = honest_events.recv().await {
                waiting.remove(&id);
            }
        }
    })
    .await
    .expect("the honest peer's messages were not all delivered");
    let honest_peer = honest.peer_id();
    while let Ok(event) = victim_events.try_recv() {
        if let NodeEvent::Rejected { peer, reason } = event {
            assert_ne!(peer, honest_peer, "the honest peer was refused: {reason}");
        }
    }
    let history = victim.history(honest_peer, None).await.unwrap();
    assert_eq!(history.len(), 20);
    victim.shutdown().await;
    honest.shutdown().await;
}

/// Outbound-only codec of a peer that opens message streams and never finishes them: each
/// request declares a frame of the given size, sends a few bytes of it, and then stalls.
#[derive(Clone, Default)]
struct StallCodec;

impl request_response::Codec for StallCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = u32;
    type Response = ();

    async fn read_request<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<u32>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        futures::future::pending().await
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        declared: u32,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&declared.to_be_bytes()).await?;
        io.write_all(&[0xa1; 100]).await?;
        io.flush().await?;
        futures::future::pending().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        (): (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// A peer opens 400 message streams (under the per-connection limit of 512), declares a
/// maximal frame on each, sends 100 bytes and stalls. The streams stay open, an honest peer's
/// message still arrives within one step (30 s), and memory stays bounded (well under 256 MiB
/// more than before; the figure is printed). Then it opens 2,000 more: over the limit, the
/// victim closes that connection, and still serves the honest peer.
#[tokio::test]
async fn streams_opened_and_never_finished_do_not_lock_out_honest_peers() {
    use libp2p::request_response::ProtocolSupport;
    const STREAMS: u32 = 400;
    const OVER: u32 = 2000;
    let tmp = TempDir::new().unwrap();
    let (victim, _victim_events, victim_addr) = start_node(&tmp, "victim", 71).await;
    let (honest, mut honest_events, _) = start_node(&tmp, "honest", 72).await;
    let victim_peer = victim.peer_id();
    let before = resident_mib();

    let mut staller = raw_swarm(&identity(73), Duration::from_secs(600), |_| {
        request_response::Behaviour::with_codec(
            StallCodec,
            [(MSG_PROTOCOL, ProtocolSupport::Outbound)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(600))
                .with_max_concurrent_streams(100_000),
        )
    })
    .unwrap();
    staller.add_peer_address(victim_peer, victim_addr.clone());
    for _ in 0..STREAMS {
        staller
            .behaviour_mut()
            .send_request(&victim_peer, MAX_MSG_FRAME as u32);
    }
    // The staller runs on its own task for the rest of the test.
    let (opened_tx, mut opened_rx) = tokio::sync::watch::channel(0usize);
    let (more_tx, mut more_rx) = tokio::sync::mpsc::channel::<u32>(1);
    let stalling = tokio::spawn(async move {
        let mut failed = 0usize;
        loop {
            let event = tokio::select! {
                event = staller.select_next_some() => event,
                Some(n) = more_rx.recv() => {
                    for _ in 0..n {
                        staller
                            .behaviour_mut()
                            .send_request(&victim_peer, MAX_MSG_FRAME as u32);
                    }
                    continue;
                }
            };
            match event {
                SwarmEvent::ConnectionEstablished { .. } => {}
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    if failed < 3 {
                        println!("stalled stream failed: {error}");
                    }
                    failed += 1;
                    let _ = opened_tx.send(failed);
                }
                _ => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = resident_mib();

    // An honest peer connects and chats in the middle of it.
    let started = std::time::Instant::now();
    honest
        .add_peer(dialable(&victim_addr, victim_peer))
        .await
        .unwrap();
    send_and_deliver(
        &honest,
        &mut honest_events,
        victim_peer,
        "past the stalled streams".into(),
    )
    .await;
    let history = victim.history(honest.peer_id(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    let refused = *opened_rx.borrow_and_update();
    println!(
        "{STREAMS} stalled streams: honest message delivered in {:?}; {refused} streams \
         failed; resident memory {before:.0} MiB before, {during:.0} MiB with the streams open",
        started.elapsed()
    );
    assert_eq!(refused, 0, "the stalled streams did not stay open");
    assert!(
        during - before < 256.0,
        "memory grew from {before:.0} to {during:.0} MiB"
    );

    // Over the stream limit: the victim closes the staller's connection.
    more_tx.send(OVER).await.unwrap();
    tokio::time::timeout(STEP, opened_rx.wait_for(|n| *n >= STREAMS as usize))
        .await
        .expect("the connection over the stream limit was not closed")
        .unwrap();
    send_and_deliver(
        &honest,
        &mut honest_events,
        victim_peer,
        "after the stream flood".into(),
    )
    .await;
    assert_eq!(
        victim.history(honest.peer_id(), None).await.unwrap().len(),
        2
    );
    stalling.abort();
    victim.shutdown().await;
    honest.shutdown().await;
}

/// A peer of an older build: it exchanges profiles as this build does, but speaks
/// `/encrypto/msg/2` where this build speaks `/encrypto/msg/3`.
#[derive(NetworkBehaviour)]
struct OldBuild {
    msg: request_response::Behaviour<CborCodec<MsgRequest, MsgResponse>>,
    profile: request_response::Behaviour<CborCodec<ProfileRequest, ProfileResponse>>,
}

#[tokio::test]
async fn a_peer_of_another_version_is_reported_once_and_its_messages_stay_queued() {
    const OLD_MSG_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/encrypto/msg/2");
    assert_ne!(OLD_MSG_PROTOCOL, MSG_PROTOCOL);
    let tmp = TempDir::new().unwrap();
    let (alice, mut events, addr) = start_node(&tmp, "alice", 41).await;
    let alice_peer = alice.peer_id();
    let old = identity(42);
    let old_peer = old.peer_id();
    let old_profile = old.sign_profile("Old Bob", 1).unwrap();
    let mut swarm = raw_swarm(&old, Duration::from_secs(60), |_| OldBuild {
        msg: request_response::Behaviour::with_codec(
            CborCodec::new(MAX_MSG_FRAME, MAX_MSG_FRAME),
            [(OLD_MSG_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
        profile: request_response::Behaviour::with_codec(
            CborCodec::default(),
            [(PROFILE_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    })
    .unwrap();
    swarm.dial(addr).unwrap();
    // The old build answers profile requests and presents its own once connected, for as
    // long as the test runs.
    let serving = tokio::spawn(async move {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == alice_peer => {
                    let profile = old_profile.to_bytes().into();
                    swarm
                        .behaviour_mut()
                        .profile
                        .send_request(&alice_peer, ProfileRequest { profile });
                }
                SwarmEvent::Behaviour(OldBuildEvent::Profile(
                    request_response::Event::Message {
                        message: Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let profile = old_profile.to_bytes().into();
                    let _ = swarm
                        .behaviour_mut()
                        .profile
                        .send_response(channel, ProfileResponse { profile });
                }
                _ => {}
            }
        }
    });
    wait_for(&mut events, |e| {
        matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == old_peer).then_some(())
    })
    .await;

    let first = alice.send_text(old_peer, "one".into()).await.unwrap();
    wait_for(&mut events, |e| {
        matches!(e, NodeEvent::PeerIncompatible { peer } if *peer == old_peer).then_some(())
    })
    .await;
    // Told once: the next messages to the same peer are refused the same way, without another
    // event, and all three stay queued (the outbox keeps them for when one side updates).
    let second = alice.send_text(old_peer, "two".into()).await.unwrap();
    let third = alice.send_text(old_peer, "three".into()).await.unwrap();
    let mut refused_again = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        match event {
            NodeEvent::PeerIncompatible { .. } => refused_again += 1,
            NodeEvent::Delivered { id, .. } => panic!("{id} was delivered to an old build"),
            _ => {}
        }
    }
    assert_eq!(
        refused_again, 0,
        "the incompatible peer was reported more than once"
    );
    let history = alice.history(old_peer, None).await.unwrap();
    let queued: Vec<_> = history
        .iter()
        .filter(|m| m.direction == Direction::Out && m.status == Status::Queued)
        .map(|m| m.id)
        .collect();
    assert_eq!(queued, [first, second, third]);
    serving.abort();
    alice.shutdown().await;
}
