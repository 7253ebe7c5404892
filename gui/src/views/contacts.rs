//! The left panel: search (contacts and known peers at once; Enter also asks the DHT), adding
//! a peer by address, and the contact list with unread badges.

use egui::{Key, RichText, TextEdit};
use encrypto_crypto::PeerId;
use encrypto_node::{Multiaddr, PeerInfo, Via};

use super::labelled_field;
use crate::app::Main;
use crate::backend::Backend;
use crate::format::short_peer;
use crate::theme;

/// Where a search result was found, as the user reads it.
pub(crate) fn via_label(via: Via) -> &'static str {
    match via {
        Via::Mdns => "mDNS",
        Via::Kad => "DHT",
        Via::Direct => "direct",
        Via::Relay => "relay",
    }
}

/// One line of search results.
struct Found {
    peer: PeerId,
    name: String,
    short: String,
    place: String,
    contact: bool,
}

impl Main {
    pub(crate) fn contacts_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        ui.add_space(6.0);
        let search = labelled_field(
            ui,
            "Search",
            TextEdit::singleline(&mut self.search)
                .hint_text("a name; Enter searches the DHT too")
                .desired_width(f32::INFINITY),
        );
        if search.changed() {
            let query = self.search.trim().to_owned();
            self.search_results.clear();
            if !query.is_empty() {
                backend.search(query, false);
            }
        }
        if search.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)) {
            let query = self.search.trim().to_owned();
            if !query.is_empty() {
                self.searched = query.clone();
                backend.search(query, true);
            }
        }
        ui.collapsing("Add by address", |ui| {
            labelled_field(
                ui,
                "Peer address",
                TextEdit::singleline(&mut self.add_addr)
                    .hint_text("/ip4/…/tcp/…/p2p/…")
                    .desired_width(f32::INFINITY),
            );
            if ui.button("Add").clicked() {
                match self.add_addr.trim().parse::<Multiaddr>() {
                    Ok(addr) => {
                        self.status = Some((format!("adding {addr}…"), false));
                        backend.add_peer(addr);
                        self.add_addr.clear();
                    }
                    Err(e) => self.status = Some((format!("not a peer address: {e}"), true)),
                }
            }
        });
        ui.separator();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if self.search.trim().is_empty() {
                    self.contact_list(ui, backend);
                } else {
                    self.search_results_ui(ui, backend);
                }
            });
    }

    fn contact_list(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        ui.label(RichText::new("Contacts").strong().color(theme::ACCENT));
        if self.contacts.is_empty() {
            ui.label(
                RichText::new(
                    "No contacts yet. People on your network appear when they are found; \
                     or search, or add one by address.",
                )
                .color(theme::MUTED),
            );
        }
        let mut open = None;
        for row in &self.contacts {
            let peer = row.contact.peer_id;
            ui.horizontal(|ui| {
                let selected = self.selected == Some(peer);
                let name = RichText::new(&row.contact.name).strong();
                if ui.add(egui::Button::selectable(selected, name)).clicked() {
                    open = Some(peer);
                }
                if row.contact.key_changed {
                    ui.label(RichText::new("keys changed").small().color(theme::DANGER))
                        .on_hover_text("This contact presented new keys: verify them again");
                } else if row.contact.verified {
                    ui.label(RichText::new("✔").color(theme::OK))
                        .on_hover_text("verified");
                }
                if let Some(n) = self.unread.get(&peer).copied().filter(|n| *n > 0) {
                    ui.label(
                        RichText::new(format!("{n} unread"))
                            .small()
                            .strong()
                            .color(egui::Color32::BLACK)
                            .background_color(theme::ACCENT_2),
                    );
                }
            });
        }
        if let Some(peer) = open {
            self.open_chat(peer, backend);
        }
    }

    fn search_results_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        let needle = self.search.trim().to_lowercase();
        let mut found: Vec<Found> = self
            .contacts
            .iter()
            .filter(|r| r.contact.name.to_lowercase().contains(&needle))
            .map(|r| Found {
                peer: r.contact.peer_id,
                name: r.contact.name.clone(),
                short: r
                    .fingerprint
                    .map_or_else(|| short_peer(&r.contact.peer_id), |f| f.short()),
                place: "contact".to_owned(),
                contact: true,
            })
            .collect();
        for p in &self.search_results {
            if found.iter().any(|f| f.peer == p.peer_id) {
                continue;
            }
            found.push(found_peer(p));
        }
        // Known peers not yet answered by the node's search are filtered here at once.
        for p in &self.peers {
            if found.iter().any(|f| f.peer == p.peer_id)
                || !p
                    .name
                    .as_ref()
                    .is_some_and(|n| n.to_lowercase().contains(&needle))
            {
                continue;
            }
            found.push(found_peer(p));
        }
        ui.label(RichText::new("Results").strong().color(theme::ACCENT));
        if found.is_empty() {
            ui.label(RichText::new("Nobody by that name here yet.").color(theme::MUTED));
        }
        let mut clicked = None;
        for f in &found {
            let text = format!("{}  ·  {}  ·  {}", f.name, f.short, f.place);
            let response = ui
                .add(egui::Button::new(RichText::new(text)).frame(false))
                .on_hover_text(if f.contact {
                    "Open the chat"
                } else {
                    "Add as a contact and open the chat"
                });
            if response.clicked() {
                clicked = Some(f.peer);
            }
        }
        let Some(peer) = clicked else {
            return;
        };
        let Some(f) = found.into_iter().find(|f| f.peer == peer) else {
            return;
        };
        self.search.clear();
        self.search_results.clear();
        if f.contact {
            self.open_chat(peer, backend);
        } else {
            self.pending_open = Some(peer);
            self.status = Some((format!("adding {}…", f.name), false));
            backend.add_peer_id(peer);
        }
    }
}

fn found_peer(p: &PeerInfo) -> Found {
    Found {
        peer: p.peer_id,
        name: p.name.clone().unwrap_or_else(|| short_peer(&p.peer_id)),
        short: short_peer(&p.peer_id),
        place: via_label(p.via).to_owned(),
        contact: false,
    }
}
