//! The look: a dark theme with a neon accent (the original's glass-and-neon spirit), with
//! contrast kept high enough to read.

use egui::{Color32, CornerRadius, Stroke, Visuals};

/// The accent: neon cyan.
pub(crate) const ACCENT: Color32 = Color32::from_rgb(0, 229, 255);
/// The second accent: neon magenta, for RSA and highlights.
pub(crate) const ACCENT_2: Color32 = Color32::from_rgb(255, 64, 214);
/// Warnings (a changed key, a failed command).
pub(crate) const DANGER: Color32 = Color32::from_rgb(255, 82, 102);
/// Success (verified, delivered).
pub(crate) const OK: Color32 = Color32::from_rgb(80, 250, 160);
/// Quiet text: times, hints.
pub(crate) const MUTED: Color32 = Color32::from_rgb(150, 160, 190);
/// The window behind everything.
pub(crate) const BACKGROUND: Color32 = Color32::from_rgb(11, 13, 26);
/// Panels: a little lighter, like frosted glass over the background.
pub(crate) const GLASS: Color32 = Color32::from_rgb(20, 24, 44);
/// Our own message bubbles.
pub(crate) const BUBBLE_OUT: Color32 = Color32::from_rgb(14, 58, 74);
/// The peer's message bubbles.
pub(crate) const BUBBLE_IN: Color32 = Color32::from_rgb(32, 36, 62);

/// Applies the theme to a context.
pub(crate) fn apply(ctx: &egui::Context) {
    ctx.set_theme(egui::Theme::Dark);
    ctx.set_visuals_of(egui::Theme::Dark, visuals());
    ctx.all_styles_mut(|style| {
        style.spacing.item_spacing = egui::vec2(8.0, 6.0);
        style.spacing.button_padding = egui::vec2(10.0, 5.0);
    });
}

fn visuals() -> Visuals {
    let mut v = Visuals::dark();
    v.panel_fill = BACKGROUND;
    v.window_fill = GLASS;
    v.extreme_bg_color = Color32::from_rgb(8, 10, 20);
    v.faint_bg_color = GLASS;
    v.hyperlink_color = ACCENT;
    v.selection.bg_fill = Color32::from_rgba_unmultiplied(0, 229, 255, 70);
    v.selection.stroke = Stroke::new(1.0, ACCENT);
    v.window_corner_radius = CornerRadius::same(14);
    v.window_stroke = Stroke::new(1.0, Color32::from_rgba_unmultiplied(0, 229, 255, 90));
    v.widgets.noninteractive.bg_stroke = Stroke::new(1.0, Color32::from_rgb(40, 46, 80));
    v.widgets.inactive.weak_bg_fill = Color32::from_rgb(30, 35, 64);
    v.widgets.inactive.bg_fill = Color32::from_rgb(30, 35, 64);
    v.widgets.inactive.corner_radius = CornerRadius::same(8);
    v.widgets.hovered.weak_bg_fill = Color32::from_rgb(40, 48, 90);
    v.widgets.hovered.bg_stroke = Stroke::new(1.0, ACCENT);
    v.widgets.hovered.corner_radius = CornerRadius::same(8);
    v.widgets.active.weak_bg_fill = Color32::from_rgb(0, 110, 130);
    v.widgets.active.bg_stroke = Stroke::new(1.0, ACCENT);
    v.widgets.active.corner_radius = CornerRadius::same(8);
    v
}

/// A glass card: a translucent panel with a faint neon edge.
pub(crate) fn card() -> egui::Frame {
    egui::Frame::new()
        .fill(GLASS)
        .stroke(Stroke::new(
            1.0,
            Color32::from_rgba_unmultiplied(0, 229, 255, 60),
        ))
        .corner_radius(CornerRadius::same(12))
        .inner_margin(egui::Margin::same(12))
}
