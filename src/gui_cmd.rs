//! `encrypto gui`, and `encrypto` with no command: opens the window on the data directory.

use anyhow::Result;

use crate::commands::Global;

/// Opens the window; it creates or unlocks the identity itself. Without a display this is one
/// error line that points to `encrypto daemon`.
pub(crate) fn gui(global: &Global) -> Result<()> {
    let options = encrypto_gui::Options::new(global.data_dir_path()?);
    encrypto_gui::run(options)?;
    Ok(())
}
