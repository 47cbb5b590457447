//! Drawing `sotto chat` from its state: the conversation list, the
//! message view (quoted replies, reactions per emoji, "edited", deleted
//! messages, ticks, warnings in red), the typing line, the compose line
//! and the status line. A pure function of [`App`] and the frame size.
//!
//! Everything shown that others wrote (texts, names) goes through
//! [`clean`] first: control characters and bidirectional overrides are
//! replaced, so a message cannot move the cursor, recolour the terminal
//! or disguise what it says.

use super::app::{App, Connection, ConversationKey, Level, prefix, short_id};
use crate::output::clean;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use sotto_client::{EntryKind, HistoryEntry, ReceiptState};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

/// Below this width the conversation list is hidden.
const LIST_MIN_WIDTH: u16 = 60;
const LIST_WIDTH: u16 = 22;
/// Width of `HH:MM `.
const TIME_WIDTH: usize = 6;

pub(crate) fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    let banner = banner_lines(app, area.width as usize);
    let [banner_area, main, typing, compose, status] = Layout::vertical([
        Constraint::Length(banner.len() as u16),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(banner), banner_area);
    let messages = if area.width >= LIST_MIN_WIDTH {
        let [list, messages] =
            Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(10)]).areas(main);
        draw_list(frame, app, list);
        messages
    } else {
        main
    };
    draw_messages(frame, app, messages);
    draw_typing(frame, app, typing);
    draw_compose(frame, app, compose);
    draw_status(frame, app, status);
    if let Some(popup) = &app.popup {
        draw_popup(frame, &popup.title, &popup.lines, main);
    }
}

/// Account warnings, at most three lines, in red.
fn banner_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    app.banner
        .iter()
        .flat_map(|text| wrap(vec![Span::styled(clean_line(text), style)], width, 2))
        .take(3)
        .collect()
}

fn draw_list(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let inner = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line<'static>> = app
        .conversations
        .iter()
        .map(|c| {
            let key = ConversationKey::of_summary(c);
            let open = app.open.as_ref() == Some(&key);
            let count = if c.unread > 0 && !open {
                format!(" {}", c.unread.min(999))
            } else {
                String::new()
            };
            let room = inner.saturating_sub(count.width() + 2);
            let name = truncate(&clean_line(&key.label()), room);
            let pad = inner.saturating_sub(name.width() + count.width() + 2);
            let marker = if open { "> " } else { "  " };
            let mut style = Style::new();
            if open {
                style = style.add_modifier(Modifier::REVERSED);
            } else if c.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            Line::from(vec![
                Span::styled(format!("{marker}{name}{}", " ".repeat(pad)), style),
                Span::styled(count, style.fg(Color::Yellow)),
            ])
        })
        .collect();
    let block = Block::bordered().title(" chats ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_messages(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let height = area.height.saturating_sub(2) as usize;
    let (lines, starts) = message_lines(app, width);
    let max_top = lines.len().saturating_sub(height);
    let top = match app.search.as_ref().and_then(|s| s.current) {
        Some(i) => starts.get(i).map_or(max_top, |start| {
            start.saturating_sub(height / 3).min(max_top)
        }),
        None => max_top - app.scroll.min(max_top),
    };
    let visible: Vec<Line<'static>> = lines.into_iter().skip(top).take(height).collect();
    let title = match &app.open {
        Some(key) => format!(" {} ", clean_line(&key.label())),
        None => " no conversation: /open USER or /open #GROUP ".into(),
    };
    let mut block = Block::bordered().title(truncate(&title, width));
    if top < max_top {
        block = block.title_bottom(Line::from(" ↓ newer below (Esc) ").right_aligned());
    }
    frame.render_widget(Paragraph::new(visible).block(block), area);
}

/// The open conversation as lines `width` wide, and the first line of
/// each entry.
pub(crate) fn message_lines(app: &App, width: usize) -> (Vec<Line<'static>>, Vec<usize>) {
    let code_len = app.code_len();
    let indent = (TIME_WIDTH + code_len + 1).min(width / 2);
    let current = app.search.as_ref().and_then(|s| s.current);
    let mut lines = Vec::new();
    let mut starts = Vec::with_capacity(app.entries.len());
    for (i, entry) in app.entries.iter().enumerate() {
        starts.push(lines.len());
        let mut rows = entry_rows(app, entry, code_len, indent);
        if current == Some(i) {
            for row in &mut rows {
                for span in row.iter_mut() {
                    span.style = span.style.add_modifier(Modifier::REVERSED);
                }
            }
        }
        for row in rows {
            lines.extend(wrap(row, width, indent));
        }
    }
    (lines, starts)
}

/// One entry as unwrapped rows of spans.
fn entry_rows(
    app: &App,
    entry: &HistoryEntry,
    code_len: usize,
    indent: usize,
) -> Vec<Vec<Span<'static>>> {
    let dim = Style::new().fg(Color::DarkGray);
    let time = Span::styled(format!("{} ", clock(entry.sent_at)), dim);
    if entry.kind == EntryKind::System {
        let (style, text) = if entry.text.starts_with("WARNING") {
            (
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                clean(&entry.text),
            )
        } else {
            (
                dim.add_modifier(Modifier::ITALIC),
                format!("* {}", clean(&entry.text)),
            )
        };
        return text_rows(vec![time], &text, style, indent);
    }
    let chat = &entry.chat;
    let pad = " ".repeat(indent);
    let mut rows = Vec::new();
    if chat.reply_to.is_some() {
        let quote = match &chat.quoted {
            Some(q) if q.deleted => format!("┃ (a deleted message of {})", clean_line(&q.sender)),
            Some(q) => format!("┃ {}: {}", clean_line(&q.sender), one_line(&clean(&q.text))),
            None => "┃ (a message you do not have)".into(),
        };
        rows.push(vec![
            Span::raw(pad.clone()),
            Span::styled(quote, dim.add_modifier(Modifier::ITALIC)),
        ]);
    }
    let code = prefix(short_id(&entry.id), code_len);
    let sender_style = Style::new()
        .fg(sender_colour(&entry.sender, &app.me))
        .add_modifier(Modifier::BOLD);
    let head = vec![
        time,
        Span::styled(format!("{code:<code_len$} "), dim),
        Span::styled(clean_line(&entry.sender), sender_style),
        Span::raw(": "),
    ];
    let mut body = if chat.deleted {
        text_rows(
            head,
            "(deleted)",
            dim.add_modifier(Modifier::ITALIC),
            indent,
        )
    } else {
        text_rows(head, &clean(&entry.text), Style::new(), indent)
    };
    if let Some(last) = body.last_mut() {
        if chat.edited && !chat.deleted {
            last.push(Span::styled(" (edited)", dim));
        }
        if !chat.receipts.is_empty() {
            let all_read = chat.receipts.values().all(|s| *s == ReceiptState::Read);
            last.push(if all_read {
                Span::styled(" ✓✓", Style::new().fg(Color::Green))
            } else {
                Span::styled(" ✓", dim)
            });
        }
        if chat.expires_at.is_some() {
            last.push(Span::styled(" ⏱", dim));
        }
    }
    rows.extend(body);
    if !chat.reactions.is_empty() && !chat.deleted {
        let mut row = vec![Span::raw(pad)];
        for (n, (emoji, senders)) in chat.reactions.iter().enumerate() {
            if n > 0 {
                row.push(Span::raw("  "));
            }
            let names: Vec<String> = senders.iter().map(|s| clean_line(s)).collect();
            row.push(Span::raw(clean_line(emoji)));
            row.push(Span::styled(
                format!(" {} {}", senders.len(), names.join(", ")),
                dim,
            ));
        }
        rows.push(row);
    }
    rows
}

/// `head` then `text`, one row per line of the text (later ones indented).
fn text_rows(
    head: Vec<Span<'static>>,
    text: &str,
    style: Style,
    indent: usize,
) -> Vec<Vec<Span<'static>>> {
    let mut rows = Vec::new();
    let mut head = Some(head);
    for line in text.split('\n') {
        let mut row = head
            .take()
            .unwrap_or_else(|| vec![Span::raw(" ".repeat(indent))]);
        row.push(Span::styled(line.to_owned(), style));
        rows.push(row);
    }
    rows
}

fn draw_typing(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let users: Vec<String> = app.typing_here().iter().map(|u| clean_line(u)).collect();
    let text = match users.as_slice() {
        [] => String::new(),
        [one] => format!(" {one} is typing…"),
        [first @ .., last] => format!(" {} and {last} are typing…", first.join(", ")),
    };
    let style = Style::new()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC);
    frame.render_widget(
        Paragraph::new(Line::styled(truncate(&text, area.width as usize), style)),
        area,
    );
}

fn draw_compose(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let (title, text, cursor) = match &app.search {
        Some(search) => (
            " search (Enter: older match, Esc: stop) ".to_owned(),
            clean_line(&search.query),
            search.query.chars().count(),
        ),
        None => {
            let title = match app
                .reply_to
                .as_ref()
                .and_then(|id| app.entries.iter().find(|e| e.id == *id))
            {
                Some(e) => format!(
                    " reply to {}: {} (Esc: cancel) ",
                    clean_line(&e.sender),
                    one_line(&clean(&e.text))
                ),
                None => " message (/help) ".to_owned(),
            };
            (title, clean_line(&app.input), app.cursor)
        }
    };
    // Keep the cursor in view: show the end of a long line.
    let before: String = text.chars().take(cursor).collect();
    let room = width.saturating_sub(3);
    let mut skip = 0;
    while before.chars().skip(skip).collect::<String>().width() > room {
        skip += 1;
    }
    let shown: String = text.chars().skip(skip).collect();
    let cursor_x = before.chars().skip(skip).collect::<String>().width() + 2;
    let block = Block::bordered().title(truncate(&title, width));
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("> ", Style::new().fg(Color::DarkGray)),
            Span::raw(truncate(&shown, width.saturating_sub(2))),
        ]))
        .block(block),
        area,
    );
    if app.popup.is_none() {
        let x = area.x.saturating_add(1).saturating_add(cursor_x as u16);
        frame.set_cursor_position(Position::new(
            x.min(area.right().saturating_sub(2)),
            area.y + 1,
        ));
    }
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let (mark, mark_style) = match &app.connection {
        Connection::Online => ("● online".to_owned(), Style::new().fg(Color::Green)),
        Connection::Connecting => ("○ connecting…".to_owned(), Style::new().fg(Color::Yellow)),
        Connection::Offline(why) => (
            format!("○ offline ({}), retrying", clean_line(why)),
            Style::new().fg(Color::Red),
        ),
    };
    let (text, style) = match &app.status {
        Some((Level::Info, text)) => (clean_line(text), Style::new()),
        Some((Level::Error, text)) => (clean_line(text), Style::new().fg(Color::Red)),
        Some((Level::Warning, text)) => (
            clean_line(text),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        None => (
            "Ctrl-N/P chats · PgUp/PgDn scroll · Ctrl-F search · /help".to_owned(),
            Style::new().fg(Color::DarkGray),
        ),
    };
    let line = Line::from(vec![
        Span::styled(mark, mark_style),
        Span::raw(" "),
        Span::styled(text, style),
    ]);
    let lines = wrap(line.spans, area.width as usize, 0);
    frame.render_widget(
        Paragraph::new(lines.into_iter().take(1).collect::<Vec<_>>()),
        area,
    );
}

fn draw_popup(frame: &mut Frame<'_>, title: &str, lines: &[String], over: Rect) {
    let width = over.width.saturating_sub(4).min(78);
    let inner = width.saturating_sub(2) as usize;
    let wrapped: Vec<Line<'static>> = lines
        .iter()
        .flat_map(|l| wrap(vec![Span::raw(clean_line(l))], inner, 2))
        .collect();
    let height = (wrapped.len() as u16 + 2).min(over.height);
    let area = Rect {
        x: over.x + (over.width.saturating_sub(width)) / 2,
        y: over.y + (over.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(truncate(&format!(" {} ", clean_line(title)), inner))
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Paragraph::new(wrapped).block(block), area);
}

// ------------------------------------------------------------ text

/// [`clean`], on one line: for names, titles and quotes.
fn clean_line(text: &str) -> String {
    clean(text).replace('\n', " ")
}

/// Only the first line, at most 40 characters.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut short: String = first.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// At most `width` columns of `text`.
fn truncate(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

/// `HH:MM` (UTC) of milliseconds since the Unix epoch.
fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// This user in cyan; everyone else in a colour of their name.
fn sender_colour(sender: &str, me: &str) -> Color {
    const OTHERS: [Color; 5] = [
        Color::Magenta,
        Color::Yellow,
        Color::Blue,
        Color::LightRed,
        Color::LightGreen,
    ];
    if sender == me {
        return Color::Cyan;
    }
    let sum = sender
        .bytes()
        .fold(0usize, |a, b| a.wrapping_add(b as usize));
    OTHERS
        .get(sum % OTHERS.len())
        .copied()
        .unwrap_or(Color::Magenta)
}

/// Lays `spans` out in lines at most `width` columns wide, breaking at
/// spaces where it can (inside a word where it must); lines after the
/// first start with `indent` spaces.
pub(crate) fn wrap(spans: Vec<Span<'static>>, width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = indent.min(width / 2);
    let mut lines = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    let mut start = 0;
    let mut new_line = |line: &mut Vec<Span<'static>>, used: &mut usize, start: &mut usize| {
        lines.push(Line::from(std::mem::take(line)));
        line.push(Span::raw(" ".repeat(indent)));
        *used = indent;
        *start = indent;
    };
    for span in spans {
        let style = span.style;
        for token in tokens(&span.content) {
            let w = token.width();
            if token.starts_with(' ') {
                if used + w <= width {
                    line.push(Span::styled(token.to_owned(), style));
                    used += w;
                } else {
                    new_line(&mut line, &mut used, &mut start);
                }
                continue;
            }
            if used + w > width && used > start {
                new_line(&mut line, &mut used, &mut start);
            }
            if used + w <= width {
                line.push(Span::styled(token.to_owned(), style));
                used += w;
                continue;
            }
            let mut piece = String::new();
            for c in token.chars() {
                let cw = c.width().unwrap_or(0);
                if used + cw > width && used > start {
                    if !piece.is_empty() {
                        line.push(Span::styled(std::mem::take(&mut piece), style));
                    }
                    new_line(&mut line, &mut used, &mut start);
                }
                piece.push(c);
                used += cw;
            }
            if !piece.is_empty() {
                line.push(Span::styled(piece, style));
            }
        }
    }
    if !line.is_empty() {
        lines.push(Line::from(line));
    }
    lines
}

/// Words and runs of spaces, in order.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    let mut space = None;
    for (at, c) in text.char_indices() {
        let is_space = c == ' ';
        if space.is_some_and(|s| s != is_space) {
            if let Some(token) = text.get(from..at) {
                out.push(token);
            }
            from = at;
        }
        space = Some(is_space);
    }
    if let Some(token) = text.get(from..)
        && !token.is_empty()
    {
        out.push(token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::app::tests::{alice_with_bob, summary, text};
    use crate::chat::app::{Popup, Search};
    use crate::chat::net::Event;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use sotto_client::{ConversationKind, Quoted};

    fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        terminal
    }

    fn screen(app: &App, width: u16, height: u16) -> String {
        render(app, width, height).backend().to_string()
    }

    const HI: &str = "01a1b2c3d4";
    const YO: &str = "01c3d4e5f6";
    const LATE: &str = "01e5f60718";

    fn chat() -> Vec<HistoryEntry> {
        let mut reply = text(YO, "alice", "yes, at noon", 2);
        reply.chat.reply_to = Some(HI.into());
        reply.chat.quoted = Some(Quoted {
            sender: "bob".into(),
            text: "lunch today?".into(),
            deleted: false,
        });
        reply.chat.receipts.insert("bob".into(), ReceiptState::Read);
        vec![text(HI, "bob", "lunch today?", 0), reply]
    }

    #[test]
    fn the_list_shows_unread_counts_and_the_open_conversation() {
        let mut app = alice_with_bob(chat());
        app.on_event(
            Event::Conversations(vec![
                summary(ConversationKind::Direct, "bob", 0),
                summary(ConversationKind::Group, "team", 3),
                summary(ConversationKind::Direct, "carol", 12),
            ]),
            0,
        );
        insta::assert_snapshot!(screen(&app, 80, 14));
    }

    #[test]
    fn a_reply_quotes_its_message_and_ticks_show_it_was_read() {
        let app = alice_with_bob(chat());
        let shown = screen(&app, 80, 14);
        assert!(shown.contains("┃ bob: lunch today?"), "{shown}");
        assert!(shown.contains("alice: yes, at noon ✓✓"), "{shown}");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn reactions_are_counted_per_emoji() {
        let mut entries = chat();
        let first = entries.first_mut().unwrap();
        first
            .chat
            .reactions
            .insert("👍".into(), vec!["alice".into(), "carol".into()]);
        first
            .chat
            .reactions
            .insert("🎉".into(), vec!["dave".into()]);
        let shown = screen(&alice_with_bob(entries), 80, 14);
        assert!(shown.contains("👍 2 alice, carol"), "{shown}");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn edits_and_deletes_show_for_what_they_are() {
        let mut entries = chat();
        let mut edited = text(LATE, "bob", "make it 12:30", 3);
        edited.chat.edited = true;
        entries.push(edited);
        let first = entries.first_mut().unwrap();
        first.chat.deleted = true;
        first.text.clear();
        // The reply now quotes a deleted message.
        if let Some(q) = entries.get_mut(1).and_then(|e| e.chat.quoted.as_mut()) {
            q.deleted = true;
            q.text.clear();
        }
        let shown = screen(&alice_with_bob(entries), 80, 14);
        assert!(shown.contains("bob: (deleted)"), "{shown}");
        assert!(shown.contains("make it 12:30 (edited)"), "{shown}");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn warnings_stand_out_in_red() {
        let mut entries = chat();
        let mut warning = text(
            LATE,
            "system",
            "WARNING: the identity key of bob has changed since you first talked. Someone may be impersonating them; nothing was sent",
            4,
        );
        warning.kind = EntryKind::System;
        entries.push(warning);
        let mut joined = text("01f00d", "system", "carol joined", 5);
        joined.kind = EntryKind::System;
        entries.push(joined);
        let app = alice_with_bob(entries);
        let terminal = render(&app, 80, 14);
        let buffer = terminal.backend().buffer();
        let row = (0..buffer.area.height)
            .find(|&y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .contains("WARNING")
            })
            .expect("the warning is on screen");
        let x = (0..buffer.area.width)
            .find(|&x| buffer[(x, row)].symbol() == "W")
            .unwrap();
        assert_eq!(buffer[(x, row)].fg, Color::Red);
        assert!(buffer[(x, row)].modifier.contains(Modifier::BOLD));
        insta::assert_snapshot!(terminal.backend().to_string());
    }

    #[test]
    fn the_typing_line_names_who_is_typing() {
        let mut app = alice_with_bob(chat());
        let mut typing = text("", "system", "bob is typing…", 5);
        typing.kind = EntryKind::System;
        app.on_event(Event::Entry(Box::new(typing)), 0);
        let shown = screen(&app, 80, 14);
        assert!(shown.contains(" bob is typing…"), "{shown}");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn a_narrow_terminal_hides_the_list_and_wraps() {
        let mut entries = chat();
        entries.push(text(
            LATE,
            "bob",
            "a longer message that has to wrap over several lines of a narrow terminal",
            3,
        ));
        let mut app = alice_with_bob(entries);
        app.input = "typing something long enough to scroll the line".into();
        app.cursor = app.input.chars().count();
        let shown = screen(&app, 40, 16);
        assert!(!shown.contains("┌ chats"), "{shown}");
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn search_and_popups() {
        let mut app = alice_with_bob(chat());
        app.search = Some(Search {
            query: "lunch".into(),
            current: Some(0),
        });
        let terminal = render(&app, 80, 14);
        let buffer = terminal.backend().buffer();
        // The match (row 1, after the list) is highlighted; the line after it is not.
        assert!(buffer[(23, 1)].modifier.contains(Modifier::REVERSED));
        assert!(!buffer[(23, 3)].modifier.contains(Modifier::REVERSED));
        insta::assert_snapshot!("search", terminal.backend().to_string());
        app.search = None;
        app.popup = Some(Popup {
            title: "who can read bob (Esc closes)".into(),
            lines: vec![
                "alice (device 00112233445566778899aabbccddeeff)".into(),
                "bob (device ffeeddccbbaa99887766554433221100)".into(),
            ],
        });
        insta::assert_snapshot!("members", screen(&app, 80, 14));
    }

    #[test]
    fn scrolling_up_shows_older_lines_and_says_newer_wait_below() {
        let entries: Vec<HistoryEntry> = (0..30)
            .map(|n| text(&format!("01{n:04x}aaaa"), "bob", &format!("message {n}"), n))
            .collect();
        let mut app = alice_with_bob(entries);
        let bottom = screen(&app, 80, 14);
        assert!(bottom.contains("message 29") && !bottom.contains("message 20"));
        app.scroll = 10;
        let up = screen(&app, 80, 14);
        assert!(
            up.contains("message 19") && !up.contains("message 29"),
            "{up}"
        );
        assert!(up.contains("newer below"));
        // Far past the top: clamped to the first line.
        app.scroll = 10_000;
        assert!(screen(&app, 80, 14).contains("message 0 "));
    }

    #[test]
    fn hostile_text_cannot_reach_the_terminal() {
        let evil = "\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\u{202e}gnp.exe\rhidden";
        let mut entries = chat();
        entries.push(text(LATE, "bob", evil, 3));
        let shown = screen(&alice_with_bob(entries), 80, 14);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(!shown.contains('\u{202e}'));
        assert!(shown.contains("\u{FFFD}]52;c;ZXZpbA=="), "{shown}");
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_splits_long_words() {
        let lines = wrap(vec![Span::raw("aaa bbb ccccccccccc")], 8, 2);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["aaa bbb ", "  cccccc", "  ccccc"]);
        for line in &lines {
            assert!(line.width() <= 8);
        }
        let wide = wrap(vec![Span::raw("👍👍👍👍👍")], 5, 0);
        assert!(wide.iter().all(|l| l.width() <= 5));
    }
}
