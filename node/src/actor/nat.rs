//! Reachability: relay reservations, hole punching and AutoNAT, for nodes behind a NAT.
//!
//! A node that AutoNAT has not found publicly reachable reserves a slot on the first relay it
//! is connected to (a peer whose identify lists the relay hop protocol). Its relayed address
//! then goes out with identify and Kademlia, so others can reach it through the relay; DCUtR
//! upgrades such a relayed connection to a direct one when hole punching works. `peers` tells
//! relayed connections from direct ones.

use std::collections::HashMap;

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, autonat, dcutr, relay};
use tracing::{debug, info, warn};

use super::{Actor, NodeEvent, PeerId, Via};

/// What the actor tracks about reachability.
#[derive(Default)]
pub(super) struct Reachability {
    /// AutoNAT found us reachable at a public address.
    public: bool,
    /// Peers that serve circuit relay, with the address we reached them at.
    relays: HashMap<PeerId, Multiaddr>,
    /// The relay we hold (or asked for) a reservation on, and its listener.
    reservation: Option<(PeerId, ListenerId)>,
    /// Open connections per peer: whether each is relayed.
    connections: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    /// The last direct address we dialled each peer at.
    dialed: HashMap<PeerId, Multiaddr>,
}

/// `addr` without a trailing `/p2p/ID`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Whether an address goes through a relay.
pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl Actor {
    /// Records a new connection; one through a relay marks the peer as reached via relay.
    pub(super) fn track_connection(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let relayed = endpoint.is_relayed();
        self.reach
            .connections
            .entry(peer)
            .or_default()
            .insert(id, relayed);
        if let ConnectedPoint::Dialer { address, .. } = endpoint
            && !relayed
        {
            self.reach.dialed.insert(peer, without_peer(address));
        }
        if relayed {
            self.remember_peer(peer, None, None, Some(Via::Relay));
        }
    }

    pub(super) fn untrack_connection(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.reach.connections.get_mut(&peer) {
            conns.remove(&id);
            if conns.is_empty() {
                self.reach.connections.remove(&peer);
            }
        }
    }

    /// How a connected peer is reached now: `Some(Relay)` when every open connection goes
    /// through a relay, `Some(Direct)` when one does not, `None` when not connected.
    pub(super) fn connection_path(&self, peer: &PeerId) -> Option<Via> {
        let conns = self.reach.connections.get(peer)?;
        if conns.is_empty() {
            None
        } else if conns.values().all(|relayed| *relayed) {
            Some(Via::Relay)
        } else {
            Some(Via::Direct)
        }
    }

    /// Identify told us what a peer supports: a relay is remembered, and used if we need one.
    pub(super) fn note_protocols(&mut self, peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) || self.reach.relays.contains_key(&peer) {
            return;
        }
        let Some(addr) = self
            .reach
            .dialed
            .get(&peer)
            .cloned()
            .or_else(|| self.known_direct_addr(&peer))
        else {
            return;
        };
        debug!(%peer, %addr, "found a relay");
        self.reach.relays.insert(peer, addr);
        self.reserve_if_needed();
    }

    /// A direct address remembered for `peer`, without its `/p2p` suffix.
    fn known_direct_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        let known = self.store.peer(peer).ok().flatten()?;
        known
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .find(|a| !is_relayed(a))
            .map(|a| without_peer(&a))
    }

    /// Holds a reservation on a relay while we are not known to be publicly reachable.
    pub(super) fn reserve_if_needed(&mut self) {
        if self.reach.public || self.reach.reservation.is_some() {
            return;
        }
        let Some((relay, addr)) = self
            .reach
            .relays
            .iter()
            .next()
            .map(|(p, a)| (*p, a.clone()))
        else {
            return;
        };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                info!(%relay, "asking the relay for a reservation");
                self.reach.reservation = Some((relay, listener));
            }
            Err(e) => {
                warn!(%circuit, error = %e, "cannot listen through the relay");
                self.reach.relays.remove(&relay);
            }
        }
    }

    /// A listener closed: if it was our reservation, try again (on another relay if this one
    /// is gone).
    pub(super) fn listener_closed(&mut self, listener: ListenerId) {
        if let Some((relay, id)) = self.reach.reservation
            && id == listener
        {
            self.reach.reservation = None;
            if !self.connected.contains(&relay) {
                self.reach.relays.remove(&relay);
            }
            self.reserve_if_needed();
        }
    }

    pub(super) fn handle_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                info!(relay = %relay_peer_id, "relay reservation accepted");
            }
            other => debug!(?other, "relay client"),
        }
    }

    pub(super) fn handle_dcutr_event(&mut self, event: dcutr::Event) {
        let ok = event.result.is_ok();
        match &event.result {
            Ok(_) => {
                info!(peer = %event.remote_peer_id, "hole punching succeeded: direct connection")
            }
            Err(e) => debug!(peer = %event.remote_peer_id, error = %e, "hole punching failed"),
        }
        self.emit(NodeEvent::HolePunch {
            peer: event.remote_peer_id,
            direct: ok,
        });
    }

    pub(super) fn handle_autonat_event(&mut self, event: autonat::Event) {
        if let autonat::Event::StatusChanged { new, .. } = event {
            debug!(?new, "reachability");
            self.reach.public = matches!(new, autonat::NatStatus::Public(_));
            if !self.reach.public {
                self.reserve_if_needed();
            }
        }
    }
}
