//! `sotto send … --file PATH` and `sotto save ID PATH`: attachments, with
//! a progress bar on stderr (drawn only when stderr is a terminal).

use crate::output::Printer;
use crate::profile::open;
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sotto_client::ConversationKind;
use std::path::Path;

/// A byte progress bar titled `what`; indicatif hides it when stderr is
/// not a terminal.
fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// `sotto send USER [TEXT] --file PATH`, `sotto send --group NAME [TEXT] --file PATH`.
pub(crate) async fn send(
    profile: &Path,
    out: &Printer,
    group: Option<String>,
    args: &[String],
    file: &Path,
) -> Result<()> {
    let (kind, name, words) = match (group, args) {
        (Some(name), words) => (ConversationKind::Group, name, words),
        (None, [user, words @ ..]) => (ConversationKind::Direct, user.clone(), words),
        (None, []) => bail!("usage: sotto send USERNAME [TEXT] --file PATH"),
    };
    let text = (!words.is_empty()).then(|| words.join(" "));
    let mut client = open(profile)?;
    let progress = bar("uploading");
    let mut report = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let sent = client
        .send_file(kind, &name, file, text.as_deref(), &mut report)
        .await;
    progress.finish_and_clear();
    client.disconnect().await;
    let sent = sent?;
    if sent.resent_bytes > 0 {
        eprintln!(
            "the connection broke during the upload; it resumed where the server had it ({} bytes sent again)",
            sent.resent_bytes
        );
    }
    out.entry(&sent.entry);
    Ok(())
}

/// `sotto save ID PATH`.
pub(crate) async fn save(profile: &Path, out: &Printer, id: &str, path: &Path) -> Result<()> {
    let mut client = open(profile)?;
    let progress = bar("downloading");
    let mut report = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let saved = client.save_attachment(id, path, &mut report).await;
    progress.finish_and_clear();
    let size = saved?;
    out.line(
        &format!("saved {} ({size} bytes)", path.display()),
        &serde_json::json!({ "type": "saved", "path": path.display().to_string(), "size": size }),
    );
    Ok(())
}
