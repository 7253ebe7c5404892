//! The chat: a header with the chat's actions, a warning for changed keys, the messages (day
//! separators, times, delivery ticks, cipher badges, "show ciphertext"; files as cards with
//! their transfer), the composer, and a hint while files are dragged over the window.

use egui::{Align, Key, Layout, Modifiers, RichText, TextEdit};
use encrypto_crypto::file::FileId;
use encrypto_crypto::{Cipher, PeerId};
use encrypto_node::view::{Body, Direction, Message, Status, TransferRole, TransferState};

use super::cipher_label;
use crate::app::{Dialog, Main};
use crate::backend::Backend;
use crate::format::{
    ciphertext_hex, day_label, day_of, human_rate, human_size, time_of_day, today,
};
use crate::theme;

/// The composer's id: Enter is taken from it before it sees the key (Shift+Enter is not).
const INPUT_ID: &str = "message_input";
/// Width of the line under a message (time, cipher badge, ticks, the ciphertext toggle).
const META_WIDTH: f32 = 190.0;
/// Width of a file card (less in a narrow window).
const FILE_CARD_WIDTH: f32 = 330.0;

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
        let (name, cipher, verified, key_changed, relay) = (
            row.contact.name.clone(),
            row.contact.cipher,
            row.contact.verified,
            row.contact.key_changed,
            row.contact.relay,
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
                if ui
                    .add_enabled(
                        !key_changed,
                        egui::Button::selectable(relay, "Relay for my files"),
                    )
                    .on_hover_text(
                        "when you send a file to someone who is offline, this contact holds it \
                         for them, sealed: it never gets the key",
                    )
                    .clicked()
                {
                    backend.set_relay(peer, !relay);
                }
                if ui
                    .add_enabled(!key_changed, egui::Button::new("Attach file…"))
                    .on_hover_text("send a file (or drop files on the window)")
                    .clicked()
                {
                    self.open_picker(peer);
                }
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
                    self.bubble(ui, message, backend);
                }
                ui.add_space(4.0);
            });
        if !key_changed && ui.input(|i| !i.raw.hovered_files.is_empty()) {
            let painter = ui.ctx().layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop_hint"),
            ));
            let rect = ui.max_rect();
            painter.rect_filled(
                rect,
                egui::CornerRadius::same(12),
                egui::Color32::from_black_alpha(170),
            );
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                format!("Drop to send to {name}"),
                egui::FontId::proportional(22.0),
                theme::ACCENT,
            );
        }
    }

    fn bubble(&mut self, ui: &mut egui::Ui, message: &Message, backend: &Backend) {
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
            } else if matches!(message.body, Body::File { .. }) {
                FILE_CARD_WIDTH.min(max)
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
                            Body::File {
                                file_id,
                                name,
                                size,
                            } => {
                                let file_id = FileId::from_bytes(*file_id);
                                self.file_card(ui, message, file_id, name, *size, backend);
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

    /// A file in the chat: name, size, direction, and its transfer: state, progress and rate,
    /// where it is once complete, why it failed, and "Download" while it waits.
    fn file_card(
        &mut self,
        ui: &mut egui::Ui,
        message: &Message,
        file_id: FileId,
        name: &str,
        size: u64,
        backend: &Backend,
    ) {
        let out = message.direction == Direction::Out;
        let role = if out {
            TransferRole::Send
        } else {
            TransferRole::Receive
        };
        let whom = self.name_of(&message.peer);
        ui.add(egui::Label::new(RichText::new(name).size(15.0).strong()).wrap());
        let direction = if out {
            format!("to {whom}")
        } else {
            format!("from {whom}")
        };
        let key = (file_id, role, message.peer);
        let Some(view) = self.transfers.get_mut(&key) else {
            ui.label(
                RichText::new(format!("{} · {direction}", human_size(size))).color(theme::MUTED),
            );
            return;
        };
        let t = &view.transfer;
        let (state, color) = match t.state {
            TransferState::Complete => ("complete", theme::OK),
            TransferState::Failed => ("failed", theme::DANGER),
            other => (other.as_str(), theme::MUTED),
        };
        ui.horizontal_wrapped(|ui| {
            ui.label(
                RichText::new(format!("{} · {direction} ·", human_size(size))).color(theme::MUTED),
            );
            ui.label(RichText::new(state).color(color))
                .on_hover_text(match (t.state, out) {
                    (TransferState::Offered, true) => "offered: the recipient has not started",
                    (TransferState::Offered, false) => {
                        "offered: larger than the automatic download limit"
                    }
                    (TransferState::Transferring, _) => "sealed chunks are moving",
                    (TransferState::Complete, true) => "the recipient has the whole file",
                    (TransferState::Complete, false) => "every chunk is here and checked",
                    (TransferState::Failed, _) => "stopped; a download can be started again",
                });
        });
        match t.state {
            TransferState::Transferring => {
                let fraction = if t.size == 0 {
                    1.0
                } else {
                    // Display only: a ratio in [0, 1] needs no more precision than f32 has.
                    (t.bytes_done as f64 / t.size as f64).clamp(0.0, 1.0) as f32
                };
                let mut text = format!(
                    "{:.0}% · {} of {}",
                    fraction * 100.0,
                    human_size(t.bytes_done),
                    human_size(t.size)
                );
                if let Some(rate) = view.rate {
                    text.push_str(&format!(" · {}", human_rate(rate)));
                }
                ui.add(egui::ProgressBar::new(fraction).text(text));
            }
            TransferState::Complete => {
                if let Some(path) = &t.path {
                    let path = path.display().to_string();
                    ui.add(
                        egui::Label::new(
                            RichText::new(&path)
                                .monospace()
                                .small()
                                .color(theme::ACCENT),
                        )
                        .wrap(),
                    );
                    if ui.small_button("Copy path").clicked() {
                        ui.ctx().copy_text(path);
                    }
                }
            }
            TransferState::Failed => {
                if let Some(error) = &t.error {
                    ui.add(egui::Label::new(RichText::new(error).color(theme::DANGER)).wrap());
                }
            }
            TransferState::Offered => {}
        }
        let waiting = matches!(t.state, TransferState::Offered | TransferState::Failed);
        if !out && waiting && ui.button("Download").clicked() {
            backend.fetch_file(file_id);
            // Until the node answers, the card shows the download as started.
            view.transfer.state = TransferState::Transferring;
            view.transfer.error = None;
        }
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
