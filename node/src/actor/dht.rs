//! The actor's side of the name directory ([`crate::directory`]): announcing our name and
//! profile, filtering what others store with us, and searching names.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use encrypto_crypto::{Fingerprint, PeerId};
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, InboundRequest, QueryResult, Quorum};
use tracing::{debug, warn};

use super::{Actor, NodeEvent, Reply, Via};
use crate::directory;

/// A search answers with what it has after this long.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(15);
/// When the name and profile are announced again after the first time: soon after joining
/// (the routing table fills as peers are learnt), then hourly; and whenever the routing table
/// has doubled since the last time. Kademlia also republishes.
const ANNOUNCE_AGAIN: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
/// Most profiles one search fetches (the record store keeps at most 20 providers per key).
const MAX_RESULTS: usize = 64;

/// A profile found in the name directory, verified against the PeerId it is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// The name in its signed profile.
    pub name: String,
    /// The fingerprint of its keys.
    pub fingerprint: Fingerprint,
    /// The signed profile (CBOR).
    pub profile: Vec<u8>,
}

/// One search in progress.
pub(super) struct Search {
    normalised: String,
    reply: Reply<Vec<DirectoryEntry>>,
    started: Instant,
    providers: HashSet<PeerId>,
    providers_done: bool,
    records_pending: usize,
    found: HashMap<PeerId, DirectoryEntry>,
}

/// The directory state of the actor.
#[derive(Default)]
pub(super) struct Directory {
    searches: HashMap<u64, Search>,
    next_search: u64,
    provider_queries: HashMap<kad::QueryId, u64>,
    record_queries: HashMap<kad::QueryId, u64>,
    /// Lookups of a peer's addresses for `add_peer` by PeerId.
    finding: HashMap<kad::QueryId, PeerId>,
    /// Announcements made so far; the next one is due at `next_announce`.
    announced: usize,
    /// Peers in the routing table at the last announcement: when it has doubled, the peers
    /// closest to our keys have likely changed, so we announce again.
    announced_with: usize,
    next_announce: Option<Instant>,
}

impl Actor {
    /// Starts a search for `name`; the reply comes when every provider's profile is in (or
    /// failed), or after [`SEARCH_TIMEOUT`].
    pub(super) fn search_dht(&mut self, name: &str, reply: Reply<Vec<DirectoryEntry>>) {
        let id = self.directory.next_search;
        self.directory.next_search += 1;
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(directory::name_key(name));
        self.directory.provider_queries.insert(query, id);
        self.directory.searches.insert(
            id,
            Search {
                normalised: directory::normalise(name),
                reply,
                started: Instant::now(),
                providers: HashSet::new(),
                providers_done: false,
                records_pending: 0,
                found: HashMap::new(),
            },
        );
    }

    /// Announces our name (provider record) and publishes our profile (record), when due and
    /// the routing table has someone to tell.
    pub(super) fn announce_if_due(&mut self) {
        let known: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let due = self
            .directory
            .next_announce
            .is_none_or(|at| Instant::now() >= at)
            || known >= 2 * self.directory.announced_with.max(1);
        if !due || known == 0 {
            return;
        }
        self.directory.announced_with = known;
        let me = self.identity.peer_id();
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad.start_providing(directory::name_key(&self.profile.name)) {
            warn!(error = %e, "cannot announce our name");
        }
        if let Err(e) = kad.put_record(directory::profile_record(&me, &self.profile), Quorum::One) {
            warn!(error = %e, "cannot publish our profile");
        }
        let again = ANNOUNCE_AGAIN[self.directory.announced.min(ANNOUNCE_AGAIN.len() - 1)];
        self.directory.announced += 1;
        self.directory.next_announce = Some(Instant::now() + again);
        debug!(
            announced = self.directory.announced,
            "announced our name and profile"
        );
    }

    /// Looks `peer` up in the DHT to learn its addresses; `add_peer` calls waiting for it are
    /// answered by the dial that follows, or with [`NodeError::NoAddress`](super::NodeError).
    pub(super) fn find_peer(&mut self, peer: PeerId) {
        let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        self.directory.finding.insert(query, peer);
    }

    fn found_peer(&mut self, peer: PeerId, peers: Vec<kad::PeerInfo>) {
        let addrs: Vec<libp2p::Multiaddr> = peers
            .into_iter()
            .filter(|p| p.peer_id == peer)
            .flat_map(|p| p.addrs)
            .collect();
        if addrs.is_empty() {
            self.finish_adding(peer, || Err(super::NodeError::NoAddress(peer)));
            return;
        }
        debug!(%peer, addrs = addrs.len(), "found a peer's addresses in the DHT");
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            let reason = e.to_string();
            self.finish_adding(peer, || {
                Err(super::NodeError::Unreachable {
                    peer,
                    reason: reason.clone(),
                })
            });
        }
    }

    /// Answers searches that ran out of time with what they found.
    pub(super) fn expire_searches(&mut self) {
        let expired: Vec<u64> = self
            .directory
            .searches
            .iter()
            .filter(|(_, s)| s.started.elapsed() >= SEARCH_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_search(id);
        }
    }

    fn finish_search(&mut self, id: u64) {
        let Some(search) = self.directory.searches.remove(&id) else {
            return;
        };
        // Stop the queries still running for it.
        let queries: Vec<kad::QueryId> = self
            .directory
            .provider_queries
            .iter()
            .chain(self.directory.record_queries.iter())
            .filter(|(_, s)| **s == id)
            .map(|(q, _)| *q)
            .collect();
        for q in queries {
            self.directory.provider_queries.remove(&q);
            self.directory.record_queries.remove(&q);
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&q) {
                query.finish();
            }
        }
        let mut found: Vec<DirectoryEntry> = search.found.into_values().collect();
        found.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        let _ = search.reply.send(Ok(found));
    }

    fn maybe_finish(&mut self, id: u64) {
        if let Some(s) = self.directory.searches.get(&id)
            && s.providers_done
            && s.records_pending == 0
        {
            self.finish_search(id);
        }
    }

    pub(super) fn handle_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { .. } => self.announce_if_due(),
            kad::Event::InboundRequest { request } => self.filter_inbound(request),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetProviders(result) => {
                    let Some(&search) = self.directory.provider_queries.get(&id) else {
                        return;
                    };
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                        for provider in providers {
                            self.fetch_profile(search, provider);
                        }
                    }
                    if step.last {
                        self.directory.provider_queries.remove(&id);
                        if let Some(s) = self.directory.searches.get_mut(&search) {
                            s.providers_done = true;
                        }
                        self.maybe_finish(search);
                    }
                }
                QueryResult::GetRecord(result) => {
                    let Some(&search) = self.directory.record_queries.get(&id) else {
                        return;
                    };
                    if let Ok(GetRecordOk::FoundRecord(found)) = result {
                        self.accept_profile(search, &found.record);
                        // One valid copy is enough.
                        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            query.finish();
                        }
                    }
                    if step.last {
                        self.directory.record_queries.remove(&id);
                        if let Some(s) = self.directory.searches.get_mut(&search) {
                            s.records_pending = s.records_pending.saturating_sub(1);
                        }
                        self.maybe_finish(search);
                    }
                }
                QueryResult::GetClosestPeers(result) => {
                    if !step.last {
                        return;
                    }
                    let Some(peer) = self.directory.finding.remove(&id) else {
                        return;
                    };
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    self.found_peer(peer, peers);
                }
                QueryResult::StartProviding(Err(e)) => debug!(error = %e, "announcing failed"),
                QueryResult::PutRecord(Err(e)) => debug!(error = %e, "publishing failed"),
                _ => {}
            },
            _ => {}
        }
    }

    /// Starts fetching the profile record of a provider found by search `search`.
    fn fetch_profile(&mut self, search: u64, provider: PeerId) {
        let Some(s) = self.directory.searches.get_mut(&search) else {
            return;
        };
        if s.providers.len() >= MAX_RESULTS || !s.providers.insert(provider) {
            return;
        }
        s.records_pending += 1;
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(directory::profile_key(&provider));
        self.directory.record_queries.insert(query, search);
    }

    /// Adds a fetched profile to a search's results if it verifies and claims the name.
    fn accept_profile(&mut self, search: u64, record: &kad::Record) {
        let (peer, verified) = match directory::validate_record(record) {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "discarded a profile record");
                return;
            }
        };
        let Some(s) = self.directory.searches.get_mut(&search) else {
            return;
        };
        if directory::normalise(&verified.name) != s.normalised {
            debug!(%peer, "discarded a profile that does not claim the name searched");
            return;
        }
        s.found.insert(
            peer,
            DirectoryEntry {
                peer_id: peer,
                name: verified.name.clone(),
                fingerprint: verified.public.fingerprint(),
                profile: record.value.clone(),
            },
        );
        if peer != self.identity.peer_id() {
            self.remember_peer(peer, None, Some(verified.name), Some(Via::Kad));
            self.emit(NodeEvent::PeerDiscovered {
                peer,
                via: Via::Kad,
            });
        }
    }

    /// With record filtering on, Kademlia hands us what peers ask to store: only valid
    /// profile records and provider records for name keys go into the store.
    fn filter_inbound(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => match directory::validate_record(&record) {
                Ok(_) => {
                    if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                        debug!(%source, error = ?e, "cannot store a profile record");
                    }
                }
                Err(e) => {
                    debug!(%source, error = %e, "refused a DHT record");
                    self.emit(NodeEvent::Rejected {
                        peer: source,
                        reason: format!("dht record: {e}"),
                    });
                }
            },
            InboundRequest::AddProvider {
                record: Some(provider),
            } => {
                if directory::is_name_key(&provider.key) {
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .add_provider(provider)
                    {
                        debug!(error = ?e, "cannot store a provider record");
                    }
                } else {
                    debug!(provider = %provider.provider, "refused a provider record for a foreign key");
                }
            }
            _ => {}
        }
    }
}
