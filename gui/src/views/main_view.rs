//! The main view's frame: the top bar, the status line, the contacts panel on the left, the
//! chat in the centre, and the network window, the file picker and dialogs over them. Files
//! dropped anywhere on the window go to the open chat.

use egui::RichText;

use crate::app::Main;
use crate::backend::Backend;
use crate::theme;

impl Main {
    pub(crate) fn ui(&mut self, ui: &mut egui::Ui, backend: &Backend) {
        let width = ui.available_width();
        let dropped: Vec<_> = ui.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        if !dropped.is_empty() {
            self.send_files(dropped, backend);
        }
        egui::Panel::top("top_bar")
            .frame(
                egui::Frame::new()
                    .fill(theme::GLASS)
                    .inner_margin(egui::Margin::symmetric(12, 8)),
            )
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(
                        RichText::new("Encrypto")
                            .size(18.0)
                            .strong()
                            .color(theme::ACCENT),
                    );
                    ui.separator();
                    ui.label(RichText::new(&self.session.name).strong());
                    ui.label(
                        RichText::new(self.fingerprint.short())
                            .monospace()
                            .color(theme::MUTED),
                    )
                    .on_hover_text(format!("Your fingerprint: {}", self.fingerprint));
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.toggle_value(&mut self.network_open, "Network").clicked()
                            && self.network_open
                        {
                            backend.refresh_network();
                        }
                        if self.notifications_unavailable {
                            ui.label(
                                RichText::new("notifications unavailable")
                                    .small()
                                    .color(theme::MUTED),
                            )
                            .on_hover_text(
                                "No desktop notification service answered; unread counts still \
                                 show in the title and the contact list.",
                            );
                        }
                    });
                });
            });
        if let Some((text, error)) = self.status.clone() {
            egui::Panel::bottom("status_bar").show(ui, |ui| {
                ui.horizontal(|ui| {
                    let color = if error { theme::DANGER } else { theme::MUTED };
                    ui.label(RichText::new(text).color(color));
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.small_button("Dismiss").clicked() {
                            self.status = None;
                        }
                    });
                });
            });
        }
        // Narrow windows (down to 600 px) keep most of the width for the chat.
        let left = (width * 0.3).clamp(170.0, 300.0);
        egui::Panel::left("contacts_panel")
            .default_size(left)
            .size_range(150.0..=420.0)
            .show(ui, |ui| self.contacts_ui(ui, backend));
        egui::CentralPanel::default().show(ui, |ui| self.chat_ui(ui, backend));
        if self.network_open {
            self.network_window(ui.ctx());
        }
        self.picker_ui(ui.ctx(), backend);
        self.dialogs_ui(ui.ctx(), backend);
    }
}
