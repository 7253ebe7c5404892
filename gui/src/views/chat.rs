//! The chat: a header with the chat's actions, a warning for changed keys, the messages (day
//! separators, times, delivery ticks, cipher badges, "show ciphertext"), and the composer.

use egui::{Align, Key, Layout, Modifiers, RichText, TextEdit};
use encrypto_crypto::{Cipher, PeerId};
use encrypto_node::store::{Body, Direction, Status, StoredMessage};

use super::cipher_label;
use crate::app::{Dialog, Main};
use crate::backend::Backend;
use crate::format::{ciphertext_hex, day_label, day_of, time_of_day, today};
use crate::theme;

/// The composer's id: Enter is taken from it before it sees the key (Shift+Enter is not).
const INPUT_ID: &str = "message_input";
/// Width of the line under a message (time, cipher badge, ticks, the ciphertext toggle).
const META_WIDTH: f32 = 190.0;

impl Main {
    pub(crate) fn chat_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        let Some(peer) = self.selected else {
            ui.centered_and_justified(|ui| {
                ui.label(
                    RichText::new("Pick a contact, or search for someone, to start a chat.")
                        .color(theme::MUTED),
                );
            });
            return;
        };
        let Some(row) = self.contact(&peer) else {
            ui.label(RichText::new("Connecting to this peer…").color(theme::MUTED));
            return;
        };
        let (name, cipher, verified, key_changed) = (
            row.contact.name.clone(),
            row.contact.cipher,
            row.contact.verified,
            row.contact.key_changed,
        );
        let short = row.fingerprint.map(|f| f.short()).unwrap_or_default();
        egui::Panel::top("chat_header").show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(&name).size(18.0).strong());
                ui.label(RichText::new(short).monospace().color(theme::MUTED))
                    .on_hover_text("the first digits of their fingerprint");
                if key_changed {
                    ui.label(RichText::new("keys changed").color(theme::DANGER).strong());
                } else if verified {
                    ui.label(RichText::new("✔ verified").color(theme::OK));
                } else {
                    ui.label(RichText::new("not verified").color(theme::MUTED));
                }
                ui.separator();
                ui.label("Cipher:");
                for choice in [Cipher::Aes, Cipher::Rsa] {
                    let button = egui::Button::selectable(cipher == choice, cipher_label(choice));
                    let response =
                        ui.add_enabled(!key_changed, button)
                            .on_hover_text(match choice {
                                Cipher::Aes => {
                                    "AES-256-GCM under an RSA-wrapped session key (fast)"
                                }
                                Cipher::Rsa => {
                                    "RSA-OAEP on every message (slow, short messages only)"
                                }
                            });
                    if response.clicked() && choice != cipher {
                        backend.set_cipher(peer, choice);
                    }
                }
                ui.separator();
                if ui.button("Verify…").clicked() {
                    self.dialog = Some(Dialog::Verify(peer));
                }
                if ui.button("Delete chat…").clicked() {
                    self.dialog = Some(Dialog::Delete(peer));
                }
                ui.add_enabled(false, egui::Button::new("Attach file"))
                    .on_disabled_hover_text("file sharing arrives with the files feature");
            });
            if key_changed {
                egui::Frame::new()
                    .fill(egui::Color32::from_rgb(70, 16, 28))
                    .stroke(egui::Stroke::new(1.0, theme::DANGER))
                    .corner_radius(egui::CornerRadius::same(8))
                    .inner_margin(egui::Margin::same(8))
                    .show(ui, |ui| {
                        ui.label(
                            RichText::new(format!(
                                "⚠ {name}'s keys changed. This may be a new device, or someone \
                                 else. Messages to and from {name} are held until you compare \
                                 safety numbers again and mark the contact verified."
                            ))
                            .color(theme::DANGER),
                        );
                    });
            }
            ui.add_space(4.0);
        });
        self.composer(ui, backend, peer, !key_changed);
        let messages = self.histories.get(&peer).cloned().unwrap_or_default();
        egui::ScrollArea::vertical()
            .id_salt(("chat", peer.to_bytes()))
            .auto_shrink([false, false])
            // Follows new messages only while the user is at the bottom.
            .stick_to_bottom(true)
            .show(ui, |ui| {
                if messages.is_empty() {
                    ui.label(RichText::new("No messages yet.").color(theme::MUTED));
                }
                let today = today();
                let mut last_day = None;
                for message in &messages {
                    let day = day_of(message.timestamp_ms);
                    if day != last_day {
                        if let Some(day) = day {
                            ui.vertical_centered(|ui| {
                                ui.label(
                                    RichText::new(day_label(day, today))
                                        .small()
                                        .color(theme::MUTED),
                                );
                            });
                        }
                        last_day = day;
                    }
                    self.bubble(ui, message);
                }
                ui.add_space(4.0);
            });
    }

    fn bubble(&mut self, ui: &mut egui::Ui, message: &StoredMessage) {
        let out = message.direction == Direction::Out;
        let layout = if out {
            Layout::right_to_left(Align::TOP)
        } else {
            Layout::left_to_right(Align::TOP)
        };
        let shown = self.show_ciphertext.contains(&message.id);
        ui.with_layout(layout, |ui| {
            let max = (ui.available_width() * 0.78).max(200.0);
            // A bubble hugs its text (a right-aligned one cannot shrink by itself): measure the
            // text, and leave room for the line of time, badge and toggles under it.
            let text = match &message.body {
                Body::Text(text) => text.clone(),
                Body::File { name, .. } => name.clone(),
            };
            let text_width = ui
                .painter()
                .layout(text, egui::FontId::proportional(15.0), theme::MUTED, max)
                .size()
                .x;
            let width = if shown {
                max
            } else {
                (text_width + 4.0).max(META_WIDTH).min(max)
            };
            egui::Frame::new()
                .fill(if out {
                    theme::BUBBLE_OUT
                } else {
                    theme::BUBBLE_IN
                })
                .corner_radius(egui::CornerRadius::same(12))
                .inner_margin(egui::Margin::symmetric(10, 6))
                .show(ui, |ui| {
                    ui.set_max_width(width);
                    ui.with_layout(Layout::top_down(Align::Min), |ui| {
                        match &message.body {
                            Body::Text(text) => {
                                ui.add(egui::Label::new(RichText::new(text).size(15.0)).wrap());
                            }
                            Body::File { name, size, .. } => {
                                ui.label(format!("File: {name} ({size} bytes)"));
                            }
                        }
                        let mut shown = shown;
                        ui.horizontal(|ui| {
                            ui.label(
                                RichText::new(time_of_day(message.timestamp_ms))
                                    .small()
                                    .color(theme::MUTED),
                            );
                            let (badge, color) = match message.cipher {
                                Cipher::Aes => ("AES", theme::ACCENT),
                                Cipher::Rsa => ("RSA", theme::ACCENT_2),
                            };
                            ui.label(RichText::new(badge).small().strong().color(color))
                                .on_hover_text(format!("sent with cipher {badge}"));
                            if out {
                                let (ticks, what, color) = match message.status {
                                    Status::Queued => ("🕓", "queued", theme::MUTED),
                                    Status::Sent => ("✔", "sent", theme::MUTED),
                                    Status::Delivered => ("✔✔", "delivered", theme::OK),
                                    Status::Received => ("", "", theme::MUTED),
                                };
                                ui.label(RichText::new(ticks).small().color(color))
                                    .on_hover_text(what);
                            }
                            if ui
                                .toggle_value(&mut shown, RichText::new("ciphertext").small())
                                .on_hover_text("show the sealed bytes as the peer received them")
                                .changed()
                            {
                                if shown {
                                    self.show_ciphertext.insert(message.id);
                                } else {
                                    self.show_ciphertext.remove(&message.id);
                                }
                            }
                        });
                        if shown {
                            let text = match &message.envelope {
                                Some(bytes) => ciphertext_hex(bytes),
                                None => "Not delivered yet: the sealed bytes are recorded \
                                         when the peer acknowledges the message."
                                    .to_owned(),
                            };
                            egui::Frame::new()
                                .fill(egui::Color32::from_rgb(6, 8, 16))
                                .corner_radius(egui::CornerRadius::same(6))
                                .inner_margin(egui::Margin::same(6))
                                .show(ui, |ui| {
                                    ui.label(
                                        RichText::new(text)
                                            .monospace()
                                            .small()
                                            .color(theme::ACCENT),
                                    );
                                });
                        }
                    });
                });
        });
    }

    fn composer(&mut self, ui: &mut egui::Ui, backend: &Backend, peer: PeerId, can_send: bool) {
        egui::Panel::bottom("composer").show(ui, |ui| {
            ui.add_space(6.0);
            let id = egui::Id::unique(INPUT_ID);
            let focused = ui.memory(|m| m.has_focus(id));
            // Enter sends; Shift+Enter is left to the text field, which adds a line.
            let enter = focused
                && ui.input_mut(|i| {
                    !i.modifiers.shift && i.consume_key(Modifiers::NONE, Key::Enter)
                });
            let mut send = enter;
            ui.horizontal(|ui| {
                let label = ui.label(RichText::new("Message").color(theme::MUTED));
                let draft = self.drafts.entry(peer).or_default();
                let width = (ui.available_width() - 70.0).max(100.0);
                ui.add_enabled(
                    can_send,
                    TextEdit::multiline(draft)
                        .id(id)
                        .desired_rows(2)
                        .return_key(egui::KeyboardShortcut::new(Modifiers::SHIFT, Key::Enter))
                        .desired_width(width)
                        .hint_text("Enter sends, Shift+Enter adds a line"),
                )
                .labelled_by(label.id);
                if ui
                    .add_enabled(can_send, egui::Button::new("Send"))
                    .clicked()
                {
                    send = true;
                }
            });
            let draft = self.drafts.entry(peer).or_default();
            if send && can_send && !draft.trim().is_empty() {
                let text = std::mem::take(draft).trim_end().to_owned();
                backend.send_text(peer, text);
                ui.memory_mut(|m| m.request_focus(id));
            }
            ui.add_space(4.0);
        });
    }
}
