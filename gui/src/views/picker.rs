//! The file picker: a dialog listing one folder (folders first; a click opens a folder or
//! picks a file) and a path field that takes a file to send or a folder to open. It reads the
//! folder with `std::fs` once per visit, not every frame.

use std::path::{Path, PathBuf};

use egui::{Key, RichText, TextEdit};
use encrypto_crypto::PeerId;

use super::labelled_field;
use crate::app::{FilePicker, Main, PickerEntry};
use crate::backend::Backend;
use crate::format::human_size;
use crate::theme;

/// Most entries listed from one folder; the path field still reaches the rest.
const MAX_ENTRIES: usize = 5000;
/// Height of the listing.
const LIST_HEIGHT: f32 = 280.0;

impl FilePicker {
    /// A picker for a file to send to `peer`, listing `dir` (the home folder if unset).
    pub(crate) fn new(peer: PeerId, dir: Option<PathBuf>) -> Self {
        let dir = dir
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut picker = FilePicker {
            peer,
            dir: dir.clone(),
            entries: Vec::new(),
            truncated: false,
            path: String::new(),
            show_hidden: false,
            error: None,
        };
        picker.open_dir(dir);
        picker
    }

    /// Lists `dir`; on failure, stays where it was and says why.
    fn open_dir(&mut self, dir: PathBuf) {
        match list(&dir) {
            Ok((entries, truncated)) => {
                self.dir = dir;
                self.entries = entries;
                self.truncated = truncated;
                self.error = None;
            }
            Err(e) => self.error = Some(format!("cannot open {}: {e}", dir.display())),
        }
    }

    /// The path field, read against the folder shown (`~` is the home folder).
    fn typed_path(&self) -> PathBuf {
        let typed = self.path.trim();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let path = match (typed.strip_prefix("~"), home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(typed),
        };
        self.dir.join(path)
    }

    /// What the path field names: a file to send (returned), or a folder to open.
    fn submit(&mut self) -> Option<PathBuf> {
        if self.path.trim().is_empty() {
            self.error = Some("type a path, or pick a file from the list".to_owned());
            return None;
        }
        let path = self.typed_path();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                self.open_dir(path);
                if self.error.is_none() {
                    self.path.clear();
                }
                None
            }
            Ok(meta) if meta.is_file() => Some(path),
            Ok(_) => {
                self.error = Some(format!("{} is not a regular file", path.display()));
                None
            }
            Err(e) => {
                self.error = Some(format!("cannot open {}: {e}", path.display()));
                None
            }
        }
    }
}

/// The folders and files in `dir`, folders first, each group by name; symbolic links are
/// followed, and entries that cannot be read are left out.
fn list(dir: &Path) -> std::io::Result<(Vec<PickerEntry>, bool)> {
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if entries.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        entries.push(PickerEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            dir: meta.is_dir(),
            size: meta.len(),
        });
    }
    entries.sort_by(|a, b| {
        b.dir
            .cmp(&a.dir)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok((entries, truncated))
}

impl Main {
    /// Opens the picker for a file to send to `peer`, in the folder it showed last.
    pub(crate) fn open_picker(&mut self, peer: PeerId) {
        self.picker = Some(FilePicker::new(peer, self.picker_dir.clone()));
    }

    pub(crate) fn picker_ui(&mut self, ctx: &egui::Context, backend: &Backend) {
        let name = match &self.picker {
            Some(picker) => self.name_of(&picker.peer),
            None => return,
        };
        let Some(picker) = &mut self.picker else {
            return;
        };
        let mut open = None;
        let mut send = None;
        let mut close = false;
        let response = egui::Modal::new(egui::Id::unique("file_picker")).show(ctx, |ui| {
            ui.set_width(520.0);
            ui.label(
                RichText::new(format!("Send a file to {name}"))
                    .size(18.0)
                    .strong(),
            );
            ui.horizontal(|ui| {
                let parent = picker.dir.parent().map(Path::to_owned);
                if ui
                    .add_enabled(parent.is_some(), egui::Button::new("Up"))
                    .on_hover_text("the folder above")
                    .clicked()
                {
                    open = parent;
                }
                ui.add(
                    egui::Label::new(
                        RichText::new(picker.dir.display().to_string())
                            .monospace()
                            .color(theme::MUTED),
                    )
                    .truncate(),
                );
            });
            egui::ScrollArea::vertical()
                .id_salt("file_picker_list")
                // A fixed height: the dialog keeps its place from one folder to the next.
                .max_height(LIST_HEIGHT)
                .min_scrolled_height(LIST_HEIGHT)
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    let mut shown = 0;
                    for entry in &picker.entries {
                        if !picker.show_hidden && entry.name.starts_with('.') {
                            continue;
                        }
                        shown += 1;
                        if entry.dir {
                            if ui
                                .selectable_label(false, format!("{}/", entry.name))
                                .clicked()
                            {
                                open = Some(entry.path.clone());
                            }
                            continue;
                        }
                        let path_text = entry.path.display().to_string();
                        ui.horizontal(|ui| {
                            let response =
                                ui.selectable_label(picker.path == path_text, entry.name.as_str());
                            ui.label(
                                RichText::new(human_size(entry.size))
                                    .small()
                                    .color(theme::MUTED),
                            );
                            if response.double_clicked() {
                                send = Some(entry.path.clone());
                            } else if response.clicked() {
                                picker.path = path_text.clone();
                                picker.error = None;
                            }
                        });
                    }
                    if shown == 0 {
                        ui.label(RichText::new("This folder is empty.").color(theme::MUTED));
                    }
                    if picker.truncated {
                        ui.label(
                            RichText::new(format!(
                                "Only the first {MAX_ENTRIES} entries are listed: type the path \
                                 of any other."
                            ))
                            .small()
                            .color(theme::MUTED),
                        );
                    }
                });
            ui.checkbox(&mut picker.show_hidden, "Hidden files");
            ui.horizontal(|ui| {
                let field = labelled_field(
                    ui,
                    "File path",
                    TextEdit::singleline(&mut picker.path)
                        .hint_text("a file to send, or a folder to open")
                        .desired_width(f32::INFINITY),
                );
                if field.changed() {
                    picker.error = None;
                }
                if field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)) {
                    send = picker.submit();
                }
            });
            if let Some(error) = &picker.error {
                ui.label(RichText::new(error).color(theme::DANGER));
            }
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(
                        !picker.path.trim().is_empty(),
                        egui::Button::new("Send file"),
                    )
                    .clicked()
                {
                    send = picker.submit();
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        });
        if let Some(dir) = open {
            picker.open_dir(dir);
        }
        if let Some(path) = send {
            self.picker_dir = Some(picker.dir.clone());
            self.picker = None;
            self.send_files(vec![path], backend);
        } else if close || response.should_close() {
            self.picker_dir = Some(picker.dir.clone());
            self.picker = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_come_first_and_a_typed_folder_is_opened() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("b folder")).unwrap();
        std::fs::write(dir.path().join("A.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("c.bin"), b"").unwrap();
        let peer = PeerId::random();
        let mut picker = FilePicker::new(peer, Some(dir.path().to_owned()));
        let names: Vec<_> = picker.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b folder", "A.txt", "c.bin"]);
        assert_eq!(picker.entries[1].size, 5);

        picker.path = "b folder".to_owned();
        assert_eq!(picker.submit(), None);
        assert_eq!(picker.dir, dir.path().join("b folder"));
        assert!(picker.path.is_empty());

        picker.path = "../A.txt".to_owned();
        let picked = picker.submit().expect("a file is picked");
        assert_eq!(std::fs::read(picked).unwrap(), b"12345");

        picker.path = "missing".to_owned();
        assert_eq!(picker.submit(), None);
        assert!(picker.error.as_deref().unwrap_or("").contains("missing"));
    }
}
