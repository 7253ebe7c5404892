//! Onboarding: create an identity (name, passphrase twice, a strength hint) or unlock the one
//! in the data directory.

use egui::{Key, RichText, TextEdit};
use zeroize::Zeroizing;

use super::labelled_field;
use crate::app::{Onboarding, OnboardingMode};
use crate::backend::OpenRequest;
use crate::format::{Strength, strength};
use crate::theme;

impl Onboarding {
    /// Draws the screen; returns the request when the user submits.
    pub(crate) fn ui(&mut self, ui: &mut egui::Ui) -> Option<OpenRequest> {
        let mut request = None;
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.vertical_centered(|ui| {
                    ui.add_space(40.0);
                    ui.label(
                        RichText::new("Encrypto")
                            .size(36.0)
                            .color(theme::ACCENT)
                            .strong(),
                    );
                    ui.label(
                        RichText::new("Serverless, end-to-end encrypted messaging")
                            .color(theme::MUTED),
                    );
                    ui.add_space(20.0);
                    theme::card().show(ui, |ui| {
                        ui.set_max_width(400.0);
                        ui.vertical(|ui| {
                            request = match self.mode {
                                OnboardingMode::Create => self.create_ui(ui),
                                OnboardingMode::Unlock => self.unlock_ui(ui),
                            };
                            if self.busy {
                                ui.horizontal(|ui| {
                                    ui.spinner();
                                    ui.label(match self.mode {
                                        OnboardingMode::Create => {
                                            "Generating your keys and sealing them…"
                                        }
                                        OnboardingMode::Unlock => "Unlocking…",
                                    });
                                });
                            }
                            if let Some(error) = &self.error {
                                ui.label(RichText::new(error).color(theme::DANGER));
                            }
                            ui.add_space(6.0);
                            ui.label(
                                RichText::new(format!(
                                    "Data directory: {}",
                                    self.data_dir.display()
                                ))
                                .small()
                                .color(theme::MUTED),
                            );
                        });
                    });
                });
            });
        });
        request
    }

    fn create_ui(&mut self, ui: &mut egui::Ui) -> Option<OpenRequest> {
        ui.label(RichText::new("Create your identity").size(20.0).strong());
        ui.label(
            RichText::new(
                "Your keys are made on this computer and sealed with your passphrase. \
                 There is no recovery: without the passphrase the identity is lost.",
            )
            .color(theme::MUTED),
        );
        ui.add_space(6.0);
        let name = labelled_field(
            ui,
            "Name",
            TextEdit::singleline(&mut self.name)
                .hint_text("how others see you (not unique)")
                .desired_width(f32::INFINITY),
        );
        if std::mem::take(&mut self.autofocus) {
            name.request_focus();
        }
        labelled_field(
            ui,
            "Passphrase",
            TextEdit::singleline(&mut *self.passphrase)
                .password(true)
                .desired_width(f32::INFINITY),
        );
        let hint = strength(&self.passphrase);
        if hint != Strength::Empty {
            let color = match hint {
                Strength::Strong => theme::OK,
                Strength::Fair => theme::ACCENT,
                _ => theme::DANGER,
            };
            ui.label(RichText::new(format!("Strength: {}", hint.label())).color(color));
        }
        let repeat = labelled_field(
            ui,
            "Repeat passphrase",
            TextEdit::singleline(&mut *self.repeat)
                .password(true)
                .desired_width(f32::INFINITY),
        );
        let mismatch = !self.repeat.is_empty() && *self.repeat != *self.passphrase;
        if mismatch {
            ui.label(RichText::new("The passphrases differ").color(theme::DANGER));
        }
        let ready = !self.busy
            && !self.name.trim().is_empty()
            && !self.passphrase.is_empty()
            && *self.repeat == *self.passphrase;
        ui.add_space(6.0);
        let clicked = ui
            .add_enabled(ready, egui::Button::new("Create identity"))
            .clicked();
        let entered = repeat.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        if ready && (clicked || entered) {
            self.repeat = Zeroizing::new(String::new());
            return Some(OpenRequest::Create {
                name: self.name.trim().to_owned(),
                passphrase: Zeroizing::new(std::mem::take(&mut *self.passphrase)),
            });
        }
        None
    }

    fn unlock_ui(&mut self, ui: &mut egui::Ui) -> Option<OpenRequest> {
        ui.label(RichText::new("Unlock your identity").size(20.0).strong());
        ui.add_space(6.0);
        let field = labelled_field(
            ui,
            "Passphrase",
            TextEdit::singleline(&mut *self.passphrase)
                .password(true)
                .desired_width(f32::INFINITY),
        );
        if std::mem::take(&mut self.autofocus) {
            field.request_focus();
        }
        let ready = !self.busy && !self.passphrase.is_empty();
        ui.add_space(6.0);
        let clicked = ui.add_enabled(ready, egui::Button::new("Unlock")).clicked();
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        if ready && (clicked || entered) {
            return Some(OpenRequest::Unlock {
                passphrase: Zeroizing::new(std::mem::take(&mut *self.passphrase)),
            });
        }
        None
    }
}
