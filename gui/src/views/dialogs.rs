//! Modal dialogs: delete a chat (here only, or for both), and verify a contact (safety number
//! and both fingerprints side by side).

use egui::RichText;
use encrypto_crypto::SafetyNumber;

use crate::app::{Dialog, Main};
use crate::backend::Backend;
use crate::theme;

impl Main {
    pub(crate) fn dialogs_ui(&mut self, ctx: &egui::Context, backend: &Backend) {
        match self.dialog {
            Some(Dialog::Delete(peer)) => {
                let name = self.name_of(&peer);
                let response =
                    egui::Modal::new(egui::Id::unique("delete_dialog")).show(ctx, |ui| {
                        ui.set_max_width(420.0);
                        ui.label(
                            RichText::new(format!("Delete the chat with {name}?"))
                                .size(18.0)
                                .strong(),
                        );
                        ui.label(
                            "\"Delete here\" removes the messages from this computer. \"Delete for \
                         both\" also asks the other side to delete its copy (a signed request \
                         that Encrypto honours).",
                        );
                        ui.add_space(8.0);
                        let mut choice = None;
                        ui.horizontal(|ui| {
                            if ui.button("Delete here").clicked() {
                                choice = Some(false);
                            }
                            if ui
                                .button(RichText::new("Delete for both").color(theme::DANGER))
                                .clicked()
                            {
                                choice = Some(true);
                            }
                            if ui.button("Cancel").clicked() {
                                self.dialog = None;
                            }
                        });
                        choice
                    });
                if let Some(for_both) = response.inner {
                    backend.delete_chat(peer, for_both);
                    self.dialog = None;
                } else if response.should_close() {
                    self.dialog = None;
                }
            }
            Some(Dialog::Verify(peer)) => {
                let Some(row) = self.contact(&peer) else {
                    self.dialog = None;
                    return;
                };
                let name = row.contact.name.clone();
                let verified = row.contact.verified;
                let key_changed = row.contact.key_changed;
                // A contact whose keys changed is verified against the keys it presents now:
                // accepting them is what "Mark as verified" does then.
                let presented = row.contact.presented.clone().filter(|_| key_changed);
                let theirs = if key_changed {
                    presented
                } else {
                    row.public.clone()
                };
                let their_fp = theirs.as_ref().map(|p| p.fingerprint().to_string());
                let mine = self.fingerprint;
                let safety = theirs
                    .as_ref()
                    .map(|p| SafetyNumber::between(&self.session.public, p).to_string());
                let response =
                    egui::Modal::new(egui::Id::unique("verify_dialog")).show(ctx, |ui| {
                        ui.set_max_width(520.0);
                        ui.label(RichText::new(format!("Verify {name}")).size(18.0).strong());
                        if key_changed {
                            ui.label(
                                RichText::new(format!(
                                    "{name} now presents new keys. Compare the safety number below \
                                 with {name} before accepting them."
                                ))
                                .color(theme::DANGER),
                            );
                        }
                        ui.label(format!(
                            "Compare this safety number with the one {name} sees, in person or on \
                         a call you trust. If they match, nobody is in between."
                        ));
                        if let Some(safety) = &safety {
                            ui.add_space(6.0);
                            ui.label(RichText::new("Safety number").color(theme::MUTED));
                            ui.label(
                                RichText::new(safety)
                                    .monospace()
                                    .size(16.0)
                                    .color(theme::ACCENT),
                            );
                        }
                        ui.add_space(6.0);
                        ui.columns(2, |cols| {
                            cols[0].label(RichText::new("You").strong());
                            cols[0].label(RichText::new(mine.to_string()).monospace());
                            cols[1].label(RichText::new(&name).strong());
                            cols[1].label(
                                RichText::new(their_fp.clone().unwrap_or_default()).monospace(),
                            );
                        });
                        ui.add_space(8.0);
                        let mut action = None;
                        ui.horizontal(|ui| {
                            let label = if key_changed {
                                "Accept the new keys and mark verified"
                            } else {
                                "Mark as verified"
                            };
                            let can = safety.is_some() && (key_changed || !verified);
                            if ui.add_enabled(can, egui::Button::new(label)).clicked() {
                                action = Some(true);
                            }
                            if verified && !key_changed {
                                ui.label(RichText::new("✔ verified").color(theme::OK));
                            }
                            if ui.button("Close").clicked() {
                                action = Some(false);
                            }
                        });
                        action
                    });
                match response.inner {
                    Some(true) => {
                        backend.verify_contact(peer);
                        self.dialog = None;
                    }
                    Some(false) => self.dialog = None,
                    None if response.should_close() => self.dialog = None,
                    None => {}
                }
            }
            None => {}
        }
    }
}
