//! Drawing: one module per screen or panel. Each view is a method on the state it shows;
//! commands go to the backend, which answers later with updates.
//!
//! Every input widget is labelled (its accessible name), so screen readers and the tests
//! find it by label and role.

mod chat;
mod contacts;
mod dialogs;
mod main_view;
mod network;
mod onboarding;
mod picker;

use egui::RichText;
use encrypto_crypto::Cipher;

use crate::theme;

/// `AES` or `RSA`, as badges and buttons show it.
pub(crate) fn cipher_label(cipher: Cipher) -> &'static str {
    match cipher {
        Cipher::Aes => "AES",
        Cipher::Rsa => "RSA",
    }
}

/// The screen shown when another process uses the data directory.
pub(crate) fn in_use(ui: &mut egui::Ui, message: &str) {
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.add_space(60.0);
            ui.label(
                RichText::new("Encrypto")
                    .size(32.0)
                    .color(theme::ACCENT)
                    .strong(),
            );
            ui.add_space(16.0);
            theme::card().show(ui, |ui| {
                ui.set_max_width(460.0);
                ui.label(RichText::new("Already running").size(18.0).strong());
                ui.label(message);
                ui.add_space(8.0);
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
        });
    });
}

/// A text field with a visible label that is also its accessible name.
pub(crate) fn labelled_field(
    ui: &mut egui::Ui,
    label: &str,
    edit: egui::TextEdit<'_>,
) -> egui::Response {
    let label = ui.label(label);
    ui.add(edit).labelled_by(label.id)
}
