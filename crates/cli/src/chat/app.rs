//! The state of `sotto chat` and how it changes: keys typed, lines the
//! network task hands over, the clock. No terminal and no network here
//! (time comes in as an argument), so it is tested directly; `render`
//! draws it, `net` talks to the server for it.

use super::compose::{self, Compose};
use super::net::{Event, Request};
use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use sotto_client::{ConversationKind, ConversationSummary, EntryKind, HistoryEntry};

/// How long "X is typing…" shows after X's last typing indicator.
pub(crate) const TYPING_SHOWN_MS: u64 = 6_000;
/// At most one typing indicator sent this often while the user types.
pub(crate) const TYPING_RESEND_MS: u64 = 5_000;
/// Shortest message code shown (hex digits after the `01` every MIMI id
/// starts with); longer where needed to tell two messages apart.
const MIN_CODE_LEN: usize = 4;

/// A conversation: the peer's username, or a group's name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct ConversationKey {
    pub kind: ConversationKind,
    pub name: String,
}

impl ConversationKey {
    pub(crate) fn of_entry(entry: &HistoryEntry) -> Self {
        Self {
            kind: entry.conversation_kind,
            name: entry.conversation.clone(),
        }
    }

    pub(crate) fn of_summary(summary: &ConversationSummary) -> Self {
        Self {
            kind: summary.kind,
            name: summary.name.clone(),
        }
    }

    /// `bob`, or `#team` for a group.
    pub(crate) fn label(&self) -> String {
        match self.kind {
            ConversationKind::Direct => self.name.clone(),
            ConversationKind::Group => format!("#{}", self.name),
        }
    }
}

/// The connection to the server, as the status line shows it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Connection {
    Connecting,
    Online,
    /// Why, and that it keeps trying.
    Offline(String),
}

/// How loudly the status line speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Level {
    Info,
    Error,
    /// A security warning (a changed key, a refused conversation).
    Warning,
}

/// A box over the conversation (members, a safety number, help) until Esc.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Popup {
    pub title: String,
    pub lines: Vec<String>,
}

/// Searching the open conversation.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct Search {
    pub query: String,
    /// The entry shown as the current match.
    pub current: Option<usize>,
}

/// Someone typing in a conversation, shown until `until_ms`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Typing {
    pub conversation: ConversationKey,
    pub user: String,
    pub until_ms: u64,
}

/// Everything the screen shows.
#[derive(Debug)]
pub(crate) struct App {
    /// This account's username.
    pub me: String,
    pub conversations: Vec<ConversationSummary>,
    /// The conversation shown.
    pub open: Option<ConversationKey>,
    /// Its lines, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// The compose line and the cursor in it (in characters).
    pub input: String,
    pub cursor: usize,
    /// The message the next text replies to (full id).
    pub reply_to: Option<String>,
    /// Lines scrolled up from the newest.
    pub scroll: usize,
    pub search: Option<Search>,
    pub typing: Vec<Typing>,
    pub status: Option<(Level, String)>,
    pub popup: Option<Popup>,
    pub connection: Connection,
    /// Warnings about the account and lines that belong to no
    /// conversation: shown above everything until the user leaves.
    pub banner: Vec<String>,
    pub quit: bool,
    /// When this user last sent a typing indicator (and it was "typing").
    typing_sent_at: Option<u64>,
}

impl App {
    pub(crate) fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            conversations: Vec::new(),
            open: None,
            entries: Vec::new(),
            input: String::new(),
            cursor: 0,
            reply_to: None,
            scroll: 0,
            search: None,
            typing: Vec::new(),
            status: None,
            popup: None,
            connection: Connection::Connecting,
            banner: Vec::new(),
            quit: false,
            typing_sent_at: None,
        }
    }

    // ------------------------------------------------------------ network

    /// Takes in what the network task reports; returns what to ask it next.
    pub(crate) fn on_event(&mut self, event: Event, now_ms: u64) -> Vec<Request> {
        match event {
            Event::Connection(state) => self.connection = state,
            Event::Entry(entry) => self.on_entry(*entry, now_ms),
            Event::Conversations(list) => {
                self.conversations = list;
                if self.open.is_none()
                    && let Some(first) = self.conversations.first()
                {
                    return self.open_conversation(ConversationKey::of_summary(first));
                }
            }
            Event::History(key, entries) => {
                if self.open.as_ref() == Some(&key) {
                    self.entries = entries;
                    if let Some(search) = &mut self.search
                        && search.current.is_some_and(|i| i >= self.entries.len())
                    {
                        search.current = None;
                    }
                }
            }
            Event::Done(text) => self.status = Some((Level::Info, text)),
            Event::Failed(text) => {
                let level = if text.starts_with("WARNING") {
                    Level::Warning
                } else {
                    Level::Error
                };
                self.status = Some((level, text));
            }
            Event::Popup(popup) => self.popup = Some(popup),
            Event::Banner(lines) => {
                for line in lines {
                    if !self.banner.contains(&line) {
                        self.banner.push(line);
                    }
                }
            }
        }
        Vec::new()
    }

    /// A new or changed line: a typing indicator, a line of the open
    /// conversation (replacing the one with its id), a warning elsewhere.
    fn on_entry(&mut self, entry: HistoryEntry, now_ms: u64) {
        if let Some(user) = typing_user(&entry) {
            let conversation = ConversationKey::of_entry(&entry);
            self.typing
                .retain(|t| !(t.conversation == conversation && t.user == user));
            self.typing.push(Typing {
                conversation,
                user: user.to_owned(),
                until_ms: now_ms.saturating_add(TYPING_SHOWN_MS),
            });
            return;
        }
        if entry.conversation.is_empty() {
            // About no conversation (an undecryptable message, a lost
            // invitation): nowhere else to show it.
            if !self.banner.contains(&entry.text) {
                self.banner.push(entry.text.clone());
            }
            return;
        }
        let key = ConversationKey::of_entry(&entry);
        if entry.kind == EntryKind::Text {
            self.typing
                .retain(|t| !(t.conversation == key && t.user == entry.sender));
        }
        if self.open.as_ref() == Some(&key) {
            match self.entries.iter_mut().find(|e| e.id == entry.id) {
                Some(existing) => *existing = entry,
                None => self.entries.push(entry),
            }
        } else if entry.text.starts_with("WARNING") {
            self.status = Some((
                Level::Warning,
                format!("in {}: {}", key.label(), entry.text),
            ));
        }
    }

    /// The clock moved: typing indicators run out.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        self.typing.retain(|t| t.until_ms > now_ms);
    }

    /// Who is typing in the open conversation, in the order they started.
    pub(crate) fn typing_here(&self) -> Vec<&str> {
        self.typing
            .iter()
            .filter(|t| self.open.as_ref() == Some(&t.conversation))
            .map(|t| t.user.as_str())
            .collect()
    }

    // ------------------------------------------------------------ keys

    /// A terminal event: a key (resizes only redraw).
    pub(crate) fn on_terminal_event(&mut self, event: &TermEvent, now_ms: u64) -> Vec<Request> {
        match event {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => self.on_key(*key, now_ms),
            TermEvent::Paste(text) => {
                for c in text.chars().filter(|c| !c.is_control()) {
                    self.insert(c);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn on_key(&mut self, key: KeyEvent, now_ms: u64) -> Vec<Request> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Char('c' | 'q') if ctrl => self.quit = true,
            KeyCode::Char('n') if ctrl => return self.switch(1),
            KeyCode::Char('p') if ctrl => return self.switch(-1),
            KeyCode::Down if alt => return self.switch(1),
            KeyCode::Up if alt => return self.switch(-1),
            KeyCode::Char('f') if ctrl => self.next_match(),
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.input.chars().count(),
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
                return self.after_edit(now_ms);
            }
            KeyCode::Esc => self.escape(),
            KeyCode::Enter => {
                if self.search.is_some() {
                    self.next_match();
                } else {
                    return self.submit();
                }
            }
            KeyCode::Char(c) if !ctrl && !alt => {
                self.insert(c);
                return self.after_edit(now_ms);
            }
            KeyCode::Backspace if self.search.is_some() => self.remove_at(0),
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.remove_at(self.cursor);
                return self.after_edit(now_ms);
            }
            KeyCode::Delete => {
                self.remove_at(self.cursor);
                return self.after_edit(now_ms);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.input.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.input.chars().count(),
            KeyCode::Up => self.scroll_by(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageUp => self.scroll_by(PAGE),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(PAGE),
            _ => {}
        }
        Vec::new()
    }

    fn scroll_by(&mut self, lines: usize) {
        // Bounded here loosely; rendering clamps to the real height.
        self.scroll = self
            .scroll
            .saturating_add(lines)
            .min(self.entries.len().saturating_mul(8));
    }

    /// Esc: close the popup, or stop searching, or drop the pending reply,
    /// or go back to the newest lines.
    fn escape(&mut self) {
        if self.popup.take().is_some() {
            return;
        }
        if self.search.take().is_some() {
            self.scroll = 0;
            return;
        }
        if self.reply_to.take().is_some() {
            return;
        }
        self.scroll = 0;
        self.status = None;
    }

    fn insert(&mut self, c: char) {
        if let Some(search) = &mut self.search {
            search.query.push(c);
            search.current = None;
            self.next_match();
            return;
        }
        let at = byte_index(&self.input, self.cursor);
        self.input.insert(at, c);
        self.cursor += 1;
    }

    fn remove_at(&mut self, cursor: usize) {
        if let Some(search) = &mut self.search {
            search.query.pop();
            search.current = None;
            self.next_match();
            return;
        }
        let at = byte_index(&self.input, cursor);
        if at < self.input.len() {
            self.input.remove(at);
        }
    }

    /// After the compose line changed: tell the conversation this user is
    /// typing (at most every few seconds), or that they stopped (the line
    /// was emptied).
    fn after_edit(&mut self, now_ms: u64) -> Vec<Request> {
        let Some(open) = self.open.clone() else {
            return Vec::new();
        };
        if self.search.is_some() {
            return Vec::new();
        }
        let composing = !self.input.trim().is_empty() && !self.input.starts_with('/');
        match (composing, self.typing_sent_at) {
            (true, Some(at)) if now_ms.saturating_sub(at) < TYPING_RESEND_MS => Vec::new(),
            (true, _) => {
                self.typing_sent_at = Some(now_ms);
                vec![Request::Typing {
                    to: open,
                    typing: true,
                }]
            }
            (false, Some(_)) => {
                self.typing_sent_at = None;
                vec![Request::Typing {
                    to: open,
                    typing: false,
                }]
            }
            (false, None) => Vec::new(),
        }
    }

    /// Enter: send the line or run its command.
    fn submit(&mut self) -> Vec<Request> {
        let line = std::mem::take(&mut self.input);
        self.cursor = 0;
        match compose::parse(&line) {
            Ok(None) => Vec::new(),
            Ok(Some(command)) => match self.command(command) {
                Ok(requests) => requests,
                Err(e) => {
                    // Leave the line to fix it.
                    self.cursor = line.chars().count();
                    self.input = line;
                    self.status = Some((Level::Error, e));
                    Vec::new()
                }
            },
            Err(e) => {
                self.cursor = line.chars().count();
                self.input = line;
                self.status = Some((Level::Error, e));
                Vec::new()
            }
        }
    }

    fn command(&mut self, command: Compose) -> Result<Vec<Request>, String> {
        if let Compose::Open(key) = command {
            return Ok(self.open_conversation(key));
        }
        match command {
            Compose::Help => {
                self.popup = Some(Popup {
                    title: "help (Esc closes)".into(),
                    lines: compose::HELP.iter().map(|l| (*l).to_owned()).collect(),
                });
                return Ok(Vec::new());
            }
            Compose::Quit => {
                self.quit = true;
                return Ok(Vec::new());
            }
            Compose::Search(query) => {
                self.search = Some(Search {
                    query,
                    current: None,
                });
                self.next_match();
                return Ok(Vec::new());
            }
            _ => {}
        }
        let open = self
            .open
            .clone()
            .ok_or("no conversation is open: /open USER or /open #GROUP")?;
        let request = match command {
            Compose::Text(text) => {
                self.typing_sent_at = None;
                self.scroll = 0;
                Request::Send {
                    to: open,
                    text,
                    reply_to: self.reply_to.take(),
                }
            }
            Compose::Reply { id, text } => {
                let id = self.resolve(&id)?;
                match text {
                    None => {
                        self.reply_to = Some(id);
                        return Ok(Vec::new());
                    }
                    Some(text) => {
                        self.reply_to = None;
                        self.scroll = 0;
                        Request::Send {
                            to: open,
                            text,
                            reply_to: Some(id),
                        }
                    }
                }
            }
            Compose::React { id, emoji } => Request::React {
                id: self.resolve(&id)?,
                emoji,
            },
            Compose::Edit { id, text } => {
                let id = self.resolve_own(&id, "edit")?;
                Request::Edit { id, text }
            }
            Compose::Delete { id } => Request::Delete {
                id: self.resolve_own(&id, "delete")?,
            },
            Compose::Timer(secs) => Request::Timer { to: open, secs },
            Compose::File { path, text } => {
                self.scroll = 0;
                Request::File {
                    to: open,
                    path: path.into(),
                    text,
                }
            }
            Compose::Save { id, path } => Request::Save {
                id: self.resolve(&id)?,
                path: path.into(),
            },
            Compose::Members => Request::Members(open),
            Compose::Verify { user, mark } => {
                let user = match (user, open.kind) {
                    (Some(user), _) => user,
                    (None, ConversationKind::Direct) => open.name.clone(),
                    (None, ConversationKind::Group) => {
                        return Err("in a group, name the member: /verify USER".into());
                    }
                };
                Request::Verify { user, mark }
            }
            Compose::Open(_) | Compose::Help | Compose::Quit | Compose::Search(_) => {
                return Ok(Vec::new());
            }
        };
        self.status = None;
        Ok(vec![request])
    }

    /// Shows `key` (an existing conversation or a new one): its lines come
    /// from the network task, which also marks them read.
    pub(crate) fn open_conversation(&mut self, key: ConversationKey) -> Vec<Request> {
        self.entries.clear();
        self.scroll = 0;
        self.search = None;
        self.reply_to = None;
        self.typing_sent_at = None;
        self.open = Some(key.clone());
        vec![Request::Open(key)]
    }

    /// Opens the next (`1`) or previous (`-1`) conversation of the list.
    fn switch(&mut self, step: isize) -> Vec<Request> {
        let count = self.conversations.len();
        if count == 0 {
            return Vec::new();
        }
        let here = self
            .open
            .as_ref()
            .and_then(|open| {
                self.conversations
                    .iter()
                    .position(|c| ConversationKey::of_summary(c) == *open)
            })
            .map_or(0, |i| i as isize);
        let next = (here + step).rem_euclid(count as isize) as usize;
        match self.conversations.get(next) {
            Some(summary) => self.open_conversation(ConversationKey::of_summary(summary)),
            None => Vec::new(),
        }
    }

    // ------------------------------------------------------------ search

    /// Ctrl-F: start searching; again (or Enter), the next older match.
    fn next_match(&mut self) {
        let Some(search) = &mut self.search else {
            self.search = Some(Search::default());
            return;
        };
        let query = search.query.to_lowercase();
        if query.is_empty() {
            search.current = None;
            return;
        }
        let before = search.current.unwrap_or(self.entries.len());
        let found = self
            .entries
            .iter()
            .enumerate()
            .take(before)
            .rev()
            .chain(self.entries.iter().enumerate().rev())
            .find(|(_, e)| matches(e, &query))
            .map(|(i, _)| i);
        search.current = found;
        self.status = match found {
            Some(_) => None,
            None => Some((Level::Info, format!("no message here contains {query:?}"))),
        };
    }

    // ------------------------------------------------------------ ids

    /// How many hex digits the codes of the open conversation need to
    /// tell its messages apart.
    pub(crate) fn code_len(&self) -> usize {
        let codes: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Text)
            .map(|e| short_id(&e.id))
            .collect();
        let longest = codes.iter().map(|c| c.len()).max().unwrap_or(0);
        (MIN_CODE_LEN..longest)
            .find(|&len| {
                let mut seen: Vec<&str> = codes.iter().map(|c| prefix(c, len)).collect();
                seen.sort_unstable();
                seen.windows(2).all(|w| w.first() != w.get(1))
            })
            .unwrap_or(longest.max(MIN_CODE_LEN))
    }

    /// The full id of the message of the open conversation that `code`
    /// names (its shown code, more of its digits, or the whole id).
    pub(crate) fn resolve(&self, code: &str) -> Result<String, String> {
        self.resolve_entry(code).map(|e| e.id.clone())
    }

    fn resolve_entry(&self, code: &str) -> Result<&HistoryEntry, String> {
        let code = code.to_ascii_lowercase();
        if code.len() < 2 || !code.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{code:?} is not a message code: use the code shown before a message"
            ));
        }
        let found: Vec<&HistoryEntry> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Text)
            .filter(|e| e.id == code || short_id(&e.id).starts_with(&code))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no message {code} in this conversation")),
            _ => Err(format!(
                "{code} names several messages: type more of its digits"
            )),
        }
    }

    /// Like [`App::resolve`], for a change only the sender may make.
    fn resolve_own(&self, code: &str, what: &str) -> Result<String, String> {
        let entry = self.resolve_entry(code)?;
        if entry.sender != self.me {
            return Err(format!("you can only {what} your own messages"));
        }
        if entry.chat.deleted {
            return Err(format!(
                "that message was deleted; there is nothing to {what}"
            ));
        }
        Ok(entry.id.clone())
    }
}

/// Lines scrolled by PageUp / PageDown.
const PAGE: usize = 10;

/// A message's code: its id without the `01` prefix every MIMI id has.
pub(crate) fn short_id(id: &str) -> &str {
    match id.get(..2) {
        Some("01") if id.len() > 2 => id.get(2..).unwrap_or(id),
        _ => id,
    }
}

/// The first `len` characters of an ASCII code.
pub(crate) fn prefix(code: &str, len: usize) -> &str {
    code.get(..len.min(code.len())).unwrap_or(code)
}

/// Whether a line matches a (lowercased) search.
fn matches(entry: &HistoryEntry, query: &str) -> bool {
    !entry.chat.deleted
        && (entry.text.to_lowercase().contains(query)
            || entry.sender.to_lowercase().contains(query))
}

/// The user a typing line is about (it is shown, never stored: no id).
fn typing_user(entry: &HistoryEntry) -> Option<&str> {
    if !entry.id.is_empty() || entry.kind != EntryKind::System {
        return None;
    }
    entry.text.strip_suffix(" is typing…")
}

/// The byte offset of character `chars` in `text`.
fn byte_index(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(at, _)| at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sotto_client::ChatState;

    pub(crate) fn text(id: &str, sender: &str, body: &str, minute: u64) -> HistoryEntry {
        HistoryEntry {
            id: id.into(),
            conversation: "bob".into(),
            conversation_kind: ConversationKind::Direct,
            sender: sender.into(),
            kind: EntryKind::Text,
            text: body.into(),
            // 2026-01-01 09:00 UTC plus `minute`.
            sent_at: 1_767_258_000_000 + minute * 60_000,
            chat: ChatState::default(),
        }
    }

    pub(crate) fn summary(kind: ConversationKind, name: &str, unread: u64) -> ConversationSummary {
        ConversationSummary {
            kind,
            name: name.into(),
            unread,
            last_at: 0,
            timer_secs: 0,
        }
    }

    pub(crate) fn bob() -> ConversationKey {
        ConversationKey {
            kind: ConversationKind::Direct,
            name: "bob".into(),
        }
    }

    /// Alice's screen with the conversation with bob open.
    pub(crate) fn alice_with_bob(entries: Vec<HistoryEntry>) -> App {
        let mut app = App::new("alice");
        let opened = app.on_event(
            Event::Conversations(vec![
                summary(ConversationKind::Direct, "bob", 0),
                summary(ConversationKind::Group, "team", 3),
            ]),
            0,
        );
        assert_eq!(opened, vec![Request::Open(bob())]);
        app.on_event(Event::History(bob(), entries), 0);
        app.connection = Connection::Online;
        app
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn type_line(app: &mut App, line: &str, now: u64) -> Vec<Request> {
        let mut requests = Vec::new();
        for c in line.chars() {
            requests.extend(app.on_key(key(KeyCode::Char(c)), now));
        }
        requests.extend(app.on_key(key(KeyCode::Enter), now));
        requests
    }

    const A: &str = "01aaaa1111";
    const B: &str = "01bbbb2222";
    const B2: &str = "01bbbc3333";

    #[test]
    fn codes_grow_until_they_tell_messages_apart() {
        let app = alice_with_bob(vec![text(A, "bob", "hi", 0)]);
        assert_eq!(app.code_len(), 4);
        let app = alice_with_bob(vec![
            text(A, "bob", "hi", 0),
            text(B, "alice", "yo", 1),
            text(B2, "alice", "yo", 2),
        ]);
        assert_eq!(app.code_len(), 4);
        let app = alice_with_bob(vec![
            text("01bbbb2222", "bob", "a", 0),
            text("01bbbb2223", "bob", "b", 1),
        ]);
        assert_eq!(app.code_len(), 8);
        assert_eq!(app.resolve("bbbb2223").unwrap(), "01bbbb2223");
        assert!(app.resolve("bbbb").unwrap_err().contains("several"));
        assert!(app.resolve("cccc").unwrap_err().contains("no message"));
        assert!(app.resolve("zz; rm").is_err());
    }

    #[test]
    fn commands_become_requests_for_the_open_conversation() {
        let mut app = alice_with_bob(vec![text(A, "bob", "hi", 0), text(B, "alice", "yo", 1)]);
        assert_eq!(
            type_line(&mut app, "/reply aaaa sure", 0),
            vec![Request::Send {
                to: bob(),
                text: "sure".into(),
                reply_to: Some(A.into())
            }]
        );
        assert_eq!(
            type_line(&mut app, "/react AAAA 👍", 0),
            vec![Request::React {
                id: A.into(),
                emoji: "👍".into()
            }]
        );
        assert_eq!(
            type_line(&mut app, "/edit bbbb better", 0),
            vec![Request::Edit {
                id: B.into(),
                text: "better".into()
            }]
        );
        assert_eq!(
            type_line(&mut app, "/delete bbbb", 0),
            vec![Request::Delete { id: B.into() }]
        );
        assert_eq!(
            type_line(&mut app, "/timer 1h", 0),
            vec![Request::Timer {
                to: bob(),
                secs: 3600
            }]
        );
        assert_eq!(
            type_line(&mut app, "/members", 0),
            vec![Request::Members(bob())]
        );
        assert_eq!(
            type_line(&mut app, "/verify", 0),
            vec![Request::Verify {
                user: "bob".into(),
                mark: false
            }]
        );
    }

    #[test]
    fn only_own_messages_can_be_edited_or_deleted() {
        let mut app = alice_with_bob(vec![text(A, "bob", "hi", 0)]);
        assert!(type_line(&mut app, "/edit aaaa not yours", 0).is_empty());
        assert_eq!(
            app.status,
            Some((Level::Error, "you can only edit your own messages".into()))
        );
        // The line stays, to fix it.
        assert_eq!(app.input, "/edit aaaa not yours");
        app.on_key(ctrl('u'), 0);
        assert!(type_line(&mut app, "/delete aaaa", 0).is_empty());
        assert!(app.input.starts_with("/delete"));
    }

    #[test]
    fn a_reply_without_text_waits_for_the_next_line() {
        let mut app = alice_with_bob(vec![text(A, "bob", "hi", 0)]);
        assert!(type_line(&mut app, "/reply aaaa", 0).is_empty());
        assert_eq!(app.reply_to.as_deref(), Some(A));
        let sent = type_line(&mut app, "later", 10_000);
        assert!(matches!(
            sent.last(),
            Some(Request::Send { reply_to: Some(id), .. }) if id == A
        ));
        assert_eq!(app.reply_to, None);
        // Esc drops a pending reply.
        type_line(&mut app, "/reply aaaa", 0);
        app.on_key(key(KeyCode::Esc), 0);
        assert_eq!(app.reply_to, None);
    }

    #[test]
    fn typing_is_announced_at_most_every_few_seconds_and_withdrawn() {
        let mut app = alice_with_bob(Vec::new());
        let typing = |r: &Vec<Request>| {
            r.iter()
                .filter_map(|r| match r {
                    Request::Typing { typing, .. } => Some(*typing),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(typing(&app.on_key(key(KeyCode::Char('h')), 1_000)), [true]);
        assert!(typing(&app.on_key(key(KeyCode::Char('i')), 2_000)).is_empty());
        assert_eq!(
            typing(&app.on_key(key(KeyCode::Char('!')), 1_000 + TYPING_RESEND_MS)),
            [true]
        );
        app.on_key(ctrl('u'), 7_000);
        assert!(app.input.is_empty());
        assert_eq!(app.typing_sent_at, None);
        // Commands are not typing.
        assert!(typing(&app.on_key(key(KeyCode::Char('/')), 20_000)).is_empty());
    }

    #[test]
    fn someone_typing_shows_until_they_send_or_it_runs_out() {
        let mut app = alice_with_bob(Vec::new());
        let mut line = text("", "system", "bob is typing…", 0);
        line.kind = EntryKind::System;
        app.on_event(Event::Entry(Box::new(line.clone())), 1_000);
        assert_eq!(app.typing_here(), ["bob"]);
        app.tick(1_000 + TYPING_SHOWN_MS - 1);
        assert_eq!(app.typing_here(), ["bob"]);
        app.tick(1_000 + TYPING_SHOWN_MS);
        assert!(app.typing_here().is_empty());
        app.on_event(Event::Entry(Box::new(line)), 10_000);
        app.on_event(Event::Entry(Box::new(text(A, "bob", "done", 1))), 10_001);
        assert!(app.typing_here().is_empty());
        // Not stored as a line either.
        assert_eq!(app.entries.len(), 1);
    }

    #[test]
    fn live_lines_replace_their_earlier_version_and_stay_in_their_conversation() {
        let mut app = alice_with_bob(vec![text(A, "bob", "hi", 0)]);
        let mut edited = text(A, "bob", "hello", 0);
        edited.chat.edited = true;
        app.on_event(Event::Entry(Box::new(edited.clone())), 0);
        assert_eq!(app.entries, vec![edited]);
        let mut elsewhere = text(B, "carol", "psst", 1);
        elsewhere.conversation = "carol".into();
        app.on_event(Event::Entry(Box::new(elsewhere)), 0);
        assert_eq!(app.entries.len(), 1);
        let mut warning = text(
            B2,
            "system",
            "WARNING: the identity key of carol has changed",
            1,
        );
        warning.conversation = "carol".into();
        warning.kind = EntryKind::System;
        app.on_event(Event::Entry(Box::new(warning)), 0);
        assert!(matches!(&app.status, Some((Level::Warning, t)) if t.contains("carol")));
    }

    #[test]
    fn switching_conversations_opens_the_next_and_wraps() {
        let mut app = alice_with_bob(vec![text(A, "bob", "hi", 0)]);
        let team = ConversationKey {
            kind: ConversationKind::Group,
            name: "team".into(),
        };
        assert_eq!(app.on_key(ctrl('n'), 0), vec![Request::Open(team.clone())]);
        assert!(app.entries.is_empty());
        // History of another conversation arriving late is not shown here.
        app.on_event(Event::History(bob(), vec![text(A, "bob", "hi", 0)]), 0);
        assert!(app.entries.is_empty());
        assert_eq!(app.on_key(ctrl('n'), 0), vec![Request::Open(bob())]);
        assert_eq!(app.on_key(ctrl('p'), 0), vec![Request::Open(team)]);
    }

    #[test]
    fn search_finds_older_matches_in_turn() {
        let mut app = alice_with_bob(vec![
            text(A, "bob", "lunch at noon?", 0),
            text(B, "alice", "sure", 1),
            text(B2, "bob", "LUNCH moved", 2),
        ]);
        app.on_key(ctrl('f'), 0);
        for c in "lunch".chars() {
            app.on_key(key(KeyCode::Char(c)), 0);
        }
        assert_eq!(app.search.as_ref().unwrap().current, Some(2));
        app.on_key(key(KeyCode::Enter), 0);
        assert_eq!(app.search.as_ref().unwrap().current, Some(0));
        app.on_key(key(KeyCode::Enter), 0);
        assert_eq!(app.search.as_ref().unwrap().current, Some(2));
        // Nothing typed while searching is sent or announced.
        assert!(app.input.is_empty());
        app.on_key(key(KeyCode::Esc), 0);
        assert!(app.search.is_none());
    }

    #[test]
    fn editing_the_line_handles_multibyte_characters() {
        let mut app = alice_with_bob(Vec::new());
        for c in "héllo".chars() {
            app.on_key(key(KeyCode::Char(c)), 0);
        }
        app.on_key(key(KeyCode::Left), 0);
        app.on_key(key(KeyCode::Left), 0);
        app.on_key(key(KeyCode::Left), 0);
        app.on_key(key(KeyCode::Backspace), 0);
        assert_eq!(app.input, "hllo");
        app.on_key(key(KeyCode::Delete), 0);
        assert_eq!(app.input, "hlo");
        app.on_key(key(KeyCode::End), 0);
        app.on_key(key(KeyCode::Char('👍')), 0);
        assert_eq!(app.input, "hlo👍");
    }
}
