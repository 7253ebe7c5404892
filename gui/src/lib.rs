//! Encrypto's desktop window (egui/eframe), driven only through `encrypto-node`'s public API.
//!
//! The window runs a real node in-process, on the same library as the daemon. The UI thread
//! never waits on it: every node call runs on a tokio runtime on other threads, and its result
//! comes back as an update on a bounded channel, followed by a repaint request. `App::ui`
//! drains those updates and draws; it never blocks.
//!
//! # Layout
//!
//! - [`app`]: [`App`], the window's state (a plain struct) and what each update does to it;
//!   [`Options`], how the window starts its node.
//! - `backend`: the tokio runtime, the node handle and one small task per command; node events
//!   are forwarded to the UI thread.
//! - `views`: drawing, one module per screen or panel: onboarding, contacts and search, the
//!   chat (with file cards), the network panel, the file picker, and the dialogs (verify
//!   contact, delete chat).
//! - `theme`: the dark theme and its accent colours.
//! - `format`: times, day separators, passphrase strength, ciphertext as hex, sizes and
//!   rates.
//! - [`run`]: opens the native window (glow renderer); fails with [`GuiError::NoDisplay`]
//!   where there is no display.

pub mod app;
mod backend;
mod format;
mod theme;
mod views;

use std::path::PathBuf;

pub use app::{App, Options};

/// What opening the window can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuiError {
    /// There is no display to open a window on (no X11 server, or one that cannot be used).
    #[error(
        "no display to open the window on ({0}); run `encrypto daemon` for a node without a window"
    )]
    NoDisplay(String),
    /// The window system failed after the window was opened.
    #[error("the window failed: {0}")]
    Window(String),
    /// The tokio runtime for the node could not be started.
    #[error("cannot start the node's runtime: {0}")]
    Runtime(String),
}

/// Opens the window for the data directory in `options` and runs it until it is closed.
///
/// # Errors
/// [`GuiError::NoDisplay`] when no window can be opened (no `DISPLAY`, or the X server or its
/// libraries are missing); [`GuiError::Window`] for a failure of the window system later;
/// [`GuiError::Runtime`] if the runtime cannot start.
pub fn run(options: Options) -> Result<(), GuiError> {
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        return Err(GuiError::NoDisplay("DISPLAY is not set".into()));
    }
    let app = App::new(options).map_err(|e| GuiError::Runtime(e.to_string()))?;
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Encrypto")
            .with_app_id("encrypto")
            .with_inner_size([1000.0, 680.0])
            .with_min_inner_size([600.0, 420.0]),
        ..Default::default()
    };
    // winit and glutin report a missing X server or library as an error, and a few of them as
    // a panic: both mean "no usable display" here, and become one line for the user.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eframe::run_native(
            "Encrypto",
            native,
            Box::new(move |cc| {
                theme::apply(&cc.egui_ctx);
                Ok(Box::new(app))
            }),
        )
    }));
    std::panic::set_hook(previous_hook);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify(e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the window system panicked");
            Err(GuiError::NoDisplay(
                what.lines().next().unwrap_or("").to_owned(),
            ))
        }
    }
}

fn classify(e: eframe::Error) -> GuiError {
    let text = e.to_string().replace(['\n', '\r'], " ");
    match e {
        eframe::Error::Winit(_)
        | eframe::Error::WinitEventLoop(_)
        | eframe::Error::Glutin(_)
        | eframe::Error::NoGlutinConfigs(..)
        | eframe::Error::OpenGL(_) => GuiError::NoDisplay(text),
        _ => GuiError::Window(text),
    }
}

/// Applies the window's theme to a context (for programs that run [`App`] inside their own
/// eframe app, such as the screenshot demo).
pub fn apply_theme(ctx: &egui::Context) {
    theme::apply(ctx);
}

/// The default data directory, as the CLI's (`~/.local/share/encrypto` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    encrypto_node::DataDir::default_path()
}
