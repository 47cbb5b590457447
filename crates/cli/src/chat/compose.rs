//! The compose line: a text to send, or a `/command`. Parsed here, apart
//! from the terminal and the network, so every command is unit-tested.

use super::app::ConversationKey;
use sotto_client::ConversationKind;

/// What a compose line asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Compose {
    /// A text to the open conversation (a leading `//` sends one `/`).
    Text(String),
    /// `/reply ID [TEXT]`: with a text, send it as a reply; without, the
    /// next text sent replies to ID.
    Reply { id: String, text: Option<String> },
    /// `/react ID EMOJI` (the same emoji again takes it back).
    React { id: String, emoji: String },
    /// `/edit ID TEXT`.
    Edit { id: String, text: String },
    /// `/delete ID`.
    Delete { id: String },
    /// `/timer DURATION|off`: seconds, 0 for off.
    Timer(u64),
    /// `/file PATH [TEXT]`: send a file, encrypted, with an optional text.
    File { path: String, text: Option<String> },
    /// `/save ID PATH`: download message ID's attachment to PATH.
    Save { id: String, path: String },
    /// `/members`.
    Members,
    /// `/verify [USER] [--mark]`: the safety number with USER (the peer of
    /// a direct conversation by default); `--mark` after comparing it.
    Verify { user: Option<String>, mark: bool },
    /// `/open USER` or `/open #GROUP`: show (or start) that conversation.
    Open(ConversationKey),
    /// `/search TEXT`: like Ctrl-F.
    Search(String),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// The `/help` text: every command and key.
pub(crate) const HELP: &[&str] = &[
    "Enter sends the line; a line starting with / is a command (// sends a /).",
    "/reply ID [TEXT]     reply to a message (without TEXT: the next line replies)",
    "/react ID EMOJI      react; the same emoji again takes it back",
    "/edit ID TEXT        change a message you sent, for everyone",
    "/delete ID           delete a message you sent, for everyone",
    "/timer 30s|5m|1h|7d|off   disappearing messages for this conversation",
    "/file PATH [TEXT]    send a file (encrypted; no spaces in PATH)",
    "/save ID PATH        save the attachment of message ID to PATH",
    "/members             who can read this conversation",
    "/verify [USER] [--mark]   the safety number; --mark once compared",
    "/open USER, /open #GROUP  show or start a conversation",
    "/search TEXT, Ctrl-F search this conversation (Enter: older, Esc: stop)",
    "/quit, Ctrl-C        leave",
    "ID: the short code shown before each message (or more of its digits).",
    "Ctrl-N / Ctrl-P (Alt-Down / Alt-Up): next / previous conversation",
    "Up / Down, PageUp / PageDown: scroll; Esc: back to the newest",
];

/// Parses a compose line; `Ok(None)` for a blank one.
pub(crate) fn parse(line: &str) -> Result<Option<Compose>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Some(Compose::Text(line.to_owned())));
    };
    if command.starts_with('/') {
        return Ok(Some(Compose::Text(command.to_owned())));
    }
    let (name, rest) = split_word(command);
    let parsed = match name {
        "reply" | "r" => {
            let (id, text) = split_word(rest);
            let id = need(id, "/reply ID [TEXT]")?;
            let text = (!text.trim().is_empty()).then(|| text.to_owned());
            Compose::Reply { id, text }
        }
        "react" => {
            let (id, emoji) = split_word(rest);
            let id = need(id, "/react ID EMOJI")?;
            let emoji = need(emoji.trim(), "/react ID EMOJI")?;
            Compose::React { id, emoji }
        }
        "edit" => {
            let (id, text) = split_word(rest);
            let id = need(id, "/edit ID TEXT")?;
            if text.trim().is_empty() {
                return Err("usage: /edit ID TEXT".into());
            }
            Compose::Edit {
                id,
                text: text.to_owned(),
            }
        }
        "delete" => {
            let (id, extra) = split_word(rest);
            if !extra.trim().is_empty() {
                return Err("usage: /delete ID".into());
            }
            Compose::Delete {
                id: need(id, "/delete ID")?,
            }
        }
        "timer" => {
            let duration = need(rest.trim(), "/timer DURATION|off (like 30s, 5m, 1h, 7d)")?;
            Compose::Timer(crate::args::parse_timer(&duration)?)
        }
        "file" => {
            let (path, text) = split_word(rest);
            let path = need(path, "/file PATH [TEXT]")?;
            let text = (!text.trim().is_empty()).then(|| text.to_owned());
            Compose::File { path, text }
        }
        "save" => {
            let (id, path) = split_word(rest);
            let id = need(id, "/save ID PATH")?;
            let path = need(path.trim(), "/save ID PATH")?;
            Compose::Save { id, path }
        }
        "members" => Compose::Members,
        "verify" => {
            let mut user = None;
            let mut mark = false;
            for word in rest.split_whitespace() {
                match word {
                    "--mark" => mark = true,
                    w if user.is_none() => user = Some(w.to_owned()),
                    _ => return Err("usage: /verify [USER] [--mark]".into()),
                }
            }
            Compose::Verify { user, mark }
        }
        "open" => {
            let name = need(rest.trim(), "/open USER or /open #GROUP")?;
            Compose::Open(match name.strip_prefix('#') {
                Some(group) if !group.is_empty() => ConversationKey {
                    kind: ConversationKind::Group,
                    name: group.to_owned(),
                },
                Some(_) => return Err("usage: /open USER or /open #GROUP".into()),
                None => ConversationKey {
                    kind: ConversationKind::Direct,
                    name,
                },
            })
        }
        "search" => Compose::Search(need(rest.trim(), "/search TEXT")?),
        "help" | "?" => Compose::Help,
        "quit" | "q" | "exit" => Compose::Quit,
        other => return Err(format!("unknown command /{other}; /help lists them")),
    };
    Ok(Some(parsed))
}

/// The first word and the rest (its leading blanks removed).
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

fn need(word: &str, usage: &str) -> Result<String, String> {
    if word.is_empty() {
        Err(format!("usage: {usage}"))
    } else {
        Ok(word.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Compose {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn texts_and_escaped_slashes() {
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(ok("hello /there"), Compose::Text("hello /there".into()));
        assert_eq!(ok("//shrug"), Compose::Text("/shrug".into()));
    }

    #[test]
    fn files() {
        assert_eq!(
            ok("/file /tmp/cat.jpg look at this"),
            Compose::File {
                path: "/tmp/cat.jpg".into(),
                text: Some("look at this".into())
            }
        );
        assert_eq!(
            ok("/file cat.jpg"),
            Compose::File {
                path: "cat.jpg".into(),
                text: None
            }
        );
        assert_eq!(
            ok("/save ab12 out.jpg"),
            Compose::Save {
                id: "ab12".into(),
                path: "out.jpg".into()
            }
        );
        assert!(parse("/file").is_err());
        assert!(parse("/save ab12").is_err());
    }

    #[test]
    fn every_command() {
        assert_eq!(
            ok("/reply ab12 sure thing"),
            Compose::Reply {
                id: "ab12".into(),
                text: Some("sure thing".into())
            }
        );
        assert_eq!(
            ok("/reply ab12"),
            Compose::Reply {
                id: "ab12".into(),
                text: None
            }
        );
        assert_eq!(
            ok("/react ab12 👍"),
            Compose::React {
                id: "ab12".into(),
                emoji: "👍".into()
            }
        );
        assert_eq!(
            ok("/edit ab12 fixed  text"),
            Compose::Edit {
                id: "ab12".into(),
                text: "fixed  text".into()
            }
        );
        assert_eq!(ok("/delete ab12"), Compose::Delete { id: "ab12".into() });
        assert_eq!(ok("/timer 5m"), Compose::Timer(300));
        assert_eq!(ok("/timer off"), Compose::Timer(0));
        assert_eq!(ok("/members"), Compose::Members);
        assert_eq!(
            ok("/verify"),
            Compose::Verify {
                user: None,
                mark: false
            }
        );
        assert_eq!(
            ok("/verify carol --mark"),
            Compose::Verify {
                user: Some("carol".into()),
                mark: true
            }
        );
        assert_eq!(
            ok("/open #team"),
            Compose::Open(ConversationKey {
                kind: ConversationKind::Group,
                name: "team".into()
            })
        );
        assert_eq!(
            ok("/open bob"),
            Compose::Open(ConversationKey {
                kind: ConversationKind::Direct,
                name: "bob".into()
            })
        );
        assert_eq!(ok("/search lunch"), Compose::Search("lunch".into()));
        assert_eq!(ok("/quit"), Compose::Quit);
    }

    #[test]
    fn malformed_commands_say_how() {
        for bad in [
            "/react ab12",
            "/react",
            "/edit ab12",
            "/delete",
            "/delete ab12 cd34",
            "/timer",
            "/timer 0",
            "/timer soon",
            "/verify a b",
            "/open #",
            "/frobnicate",
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
    }
}
