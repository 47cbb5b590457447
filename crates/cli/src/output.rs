//! What the CLI prints: text for people or JSON lines for programs, dates,
//! QR codes, and yes/no questions.

use anyhow::Result;
use sotto_client::{ConversationKind, EntryKind, HistoryEntry};
use std::io::Write as _;

pub(crate) fn confirm(question: &str) -> Result<bool> {
    use std::io::BufRead as _;
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), by the civil
/// calendar algorithm of H. Hinnant.
pub(crate) fn date_of(day: u64) -> String {
    let z = i64::try_from(day).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A QR code drawn with Unicode half blocks.
pub(crate) fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// Text from others, safe to put on a terminal: control characters
/// (escape sequences) and bidirectional overrides become U+FFFD; line
/// breaks stay (they are laid out, never sent raw).
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
                '\u{FFFD}'
            }
            c => c,
        })
        .collect()
}

/// Prints text for people or JSON lines for programs, flushing each line so
/// `listen` output can be piped.
pub(crate) struct Printer {
    pub(crate) json: bool,
}

impl Printer {
    pub(crate) fn line(&self, text: &str, json: &serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = if self.json {
            writeln!(stdout, "{json}")
        } else {
            writeln!(stdout, "{}", clean(text))
        };
        let _ = stdout.flush();
    }

    pub(crate) fn entry(&self, entry: &HistoryEntry) {
        let text = human_entry(entry);
        if !self.json && entry.text.starts_with("WARNING") {
            eprintln!("{text}");
        }
        self.line(&text, &serde_json::to_value(entry).unwrap_or_default());
    }
}

/// A history line for people, safe for a terminal ([`clean`]); a line
/// break in someone's text is indented, so it cannot start a line that
/// looks like another sender's.
fn human_entry(entry: &HistoryEntry) -> String {
    let place = match entry.conversation_kind {
        ConversationKind::Direct => entry.conversation.clone(),
        ConversationKind::Group => format!("#{}", entry.conversation),
    };
    let text = match entry.kind {
        EntryKind::Text => format!("[{place}] {}: {}", entry.sender, chat_line(entry)),
        EntryKind::System if entry.conversation.is_empty() => entry.text.clone(),
        EntryKind::System => format!("[{place}] * {}", entry.text),
    };
    clean(&text).replace('\n', "\n    ")
}

/// A chat message for people: the quoted message of a reply, the text (or
/// that it was deleted), whether it was edited, and its reactions.
fn chat_line(entry: &HistoryEntry) -> String {
    let chat = &entry.chat;
    let mut line = String::new();
    if chat.reply_to.is_some() {
        match &chat.quoted {
            Some(q) if q.deleted => {
                line.push_str(&format!("(reply to a deleted message of {}) ", q.sender))
            }
            Some(q) => line.push_str(&format!(
                "(reply to {}: \"{}\") ",
                q.sender,
                shorten(&q.text)
            )),
            None => line.push_str("(reply to a message you do not have) "),
        }
    }
    if chat.deleted {
        line.push_str("(deleted)");
    } else {
        line.push_str(&entry.text);
        if let Some(file) = &chat.attachment {
            if !entry.text.is_empty() {
                line.push(' ');
            }
            line.push_str(&format!(
                "[file: {} ({}, {} bytes); sotto save {} PATH]",
                file.name, file.content_type, file.size, entry.id
            ));
        }
    }
    if chat.edited {
        line.push_str(" (edited)");
    }
    if !chat.reactions.is_empty() {
        let reactions: Vec<String> = chat
            .reactions
            .iter()
            .map(|(emoji, senders)| format!("{emoji} {}", senders.join(", ")))
            .collect();
        line.push_str(&format!("  [{}]", reactions.join("; ")));
    }
    // Ticks on your own messages: ✓ delivered to someone, ✓✓ read by
    // everyone who sent a receipt (who: `--json`).
    if !chat.receipts.is_empty() {
        let all_read = chat
            .receipts
            .values()
            .all(|state| *state == sotto_client::ReceiptState::Read);
        line.push_str(if all_read { " ✓✓" } else { " ✓" });
    }
    if chat.expires_at.is_some() {
        line.push_str(" (disappearing)");
    }
    line
}

/// At most 40 characters of a quoted text.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_line_from_someone_else_cannot_drive_the_terminal_or_forge_a_line() {
        let entry = HistoryEntry {
            id: "00".into(),
            conversation: "team\u{1b}[2J".into(),
            conversation_kind: ConversationKind::Group,
            sender: "mallory".into(),
            kind: EntryKind::Text,
            text: "\u{1b}]52;c;ZXZpbA==\u{7}hi\n[#team] alice: send me your code\u{202e}".into(),
            sent_at: 0,
            chat: Default::default(),
        };
        let shown = human_entry(&entry);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(!shown.contains('\u{202e}'), "{shown:?}");
        assert!(
            shown.lines().skip(1).all(|l| l.starts_with("    ")),
            "a continuation line starts flush: {shown:?}"
        );
        assert!(
            shown.starts_with("[#team\u{fffd}[2J] mallory: \u{fffd}]52;c;"),
            "{shown}"
        );
    }
}
