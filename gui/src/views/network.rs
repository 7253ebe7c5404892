//! The network window: who we are (name, peer id, fingerprint, each with a copy button), where
//! we listen, and the peers we know with how they were found and whether they are connected.

use egui::RichText;

use super::contacts::via_label;
use crate::app::Main;
use crate::format::short_peer;
use crate::theme;

impl Main {
    pub(crate) fn network_window(&mut self, ctx: &egui::Context) {
        let mut open = self.network_open;
        egui::Window::new("Network")
            .open(&mut open)
            .default_width(380.0)
            .resizable(true)
            .show(ctx, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    ui.label(RichText::new("You").strong().color(theme::ACCENT));
                    copy_row(ui, "Name", &self.session.name);
                    copy_row(ui, "Peer ID", &self.session.peer_id.to_string());
                    copy_row(ui, "Fingerprint", &self.fingerprint.to_string());
                    ui.separator();
                    ui.label(RichText::new("Listening on").strong().color(theme::ACCENT));
                    if self.listen_addrs.is_empty() {
                        ui.label(RichText::new("nowhere yet").color(theme::MUTED));
                    }
                    for addr in &self.listen_addrs {
                        let full = format!("{addr}/p2p/{}", self.session.peer_id);
                        ui.horizontal(|ui| {
                            ui.label(RichText::new(addr.to_string()).monospace().small());
                            if ui
                                .small_button("Copy")
                                .on_hover_text(full.clone())
                                .clicked()
                            {
                                ui.ctx().copy_text(full.clone());
                            }
                        });
                    }
                    ui.separator();
                    ui.label(
                        RichText::new(format!("Peers ({})", self.peers.len()))
                            .strong()
                            .color(theme::ACCENT),
                    );
                    if self.peers.is_empty() {
                        ui.label(RichText::new("none found yet").color(theme::MUTED));
                    }
                    egui::Grid::new("peers").striped(true).show(ui, |ui| {
                        for p in &self.peers {
                            let name = p.name.clone().unwrap_or_else(|| "(no profile yet)".into());
                            ui.label(name).on_hover_text(p.peer_id.to_string());
                            ui.label(RichText::new(short_peer(&p.peer_id)).monospace().small());
                            ui.label(via_label(p.via));
                            if p.connected {
                                ui.label(RichText::new("• connected").color(theme::OK));
                            } else {
                                ui.label(RichText::new("• not connected").color(theme::MUTED));
                            }
                            ui.end_row();
                        }
                    });
                });
            });
        self.network_open = open;
    }
}

fn copy_row(ui: &mut egui::Ui, what: &str, value: &str) {
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new(format!("{what}:")).color(theme::MUTED));
        ui.label(RichText::new(value).monospace());
        if ui
            .small_button(format!("Copy {}", what.to_lowercase()))
            .clicked()
        {
            ui.ctx().copy_text(value.to_owned());
        }
    });
}
