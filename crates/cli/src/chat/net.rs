//! The network side of `sotto chat`: one thread that owns the [`Client`],
//! stays connected like `sotto listen`, and in between does what the
//! screen asks (send, react, edit, ...). It runs on its own thread and
//! runtime, so processing a delivery (MLS, SQLite) never holds up drawing;
//! the two sides talk over channels only.

use super::app::{Connection, ConversationKey, Popup};
use sotto_client::{Client, ClientError, ConversationSummary, HistoryEntry};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How often the open conversation is read again while nothing arrives:
/// receipts (ticks) change history without a new line.
const REFRESH: Duration = Duration::from_secs(5);
/// Longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the screen asks of the network side.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Request {
    /// Show this conversation: send its history (marking it read).
    Open(ConversationKey),
    Send {
        to: ConversationKey,
        text: String,
        reply_to: Option<String>,
    },
    React {
        id: String,
        emoji: String,
    },
    Edit {
        id: String,
        text: String,
    },
    Delete {
        id: String,
    },
    Timer {
        to: ConversationKey,
        secs: u64,
    },
    File {
        to: ConversationKey,
        path: std::path::PathBuf,
        text: Option<String>,
    },
    Save {
        id: String,
        path: std::path::PathBuf,
    },
    Typing {
        to: ConversationKey,
        typing: bool,
    },
    Members(ConversationKey),
    Verify {
        user: String,
        mark: bool,
    },
}

/// What the network side reports.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Event {
    Connection(Connection),
    /// A new or changed line (also typing indicators and warnings).
    Entry(Box<HistoryEntry>),
    Conversations(Vec<ConversationSummary>),
    /// The whole history of a conversation, as stored now.
    History(ConversationKey, Vec<HistoryEntry>),
    /// A request succeeded: what to say.
    Done(String),
    /// A request failed: why.
    Failed(String),
    Popup(Popup),
    /// Warnings about the account, shown above everything.
    Banner(Vec<String>),
}

/// The channels to the network thread. Dropping `requests` stops it.
#[derive(Debug)]
pub(crate) struct Network {
    pub requests: mpsc::UnboundedSender<Request>,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Closed when the thread has disconnected and ended.
    pub done: std::sync::mpsc::Receiver<()>,
}

/// Starts the network thread with `client`.
pub(crate) fn spawn(client: Client) -> std::io::Result<Network> {
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sotto-chat-network".into())
        .spawn(move || {
            runtime.block_on(run(client, requests_rx, events_tx));
            drop(done_tx);
        })?;
    Ok(Network {
        requests,
        events,
        done,
    })
}

/// Why `listen_until` stopped waiting.
enum Wake {
    Request(Option<Request>),
    Refresh,
    Changed,
}

async fn run(
    mut client: Client,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<Event>,
) {
    let send = |event| {
        let _ = events.send(event);
    };
    if let Ok(alerts) = client.account_warnings(false)
        && !alerts.is_empty()
    {
        send(Event::Banner(alerts.into_iter().map(|a| a.text).collect()));
    }
    let mut open: Option<ConversationKey> = None;
    reload(&client, open.as_ref(), &send);
    let changed = Notify::new();
    let mut online = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        if !online {
            send(Event::Connection(Connection::Connecting));
            match client.sync().await {
                Ok(entries) => {
                    online = true;
                    backoff = Duration::from_secs(1);
                    send(Event::Connection(Connection::Online));
                    for entry in entries {
                        send(Event::Entry(Box::new(entry)));
                    }
                }
                Err(e) => {
                    send(Event::Connection(Connection::Offline(e.to_string())));
                    tokio::select! {
                        request = requests.recv() => match request {
                            Some(request) => handle(&mut client, request, &mut open, &send).await,
                            None => break,
                        },
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    reload(&client, open.as_ref(), &send);
                    continue;
                }
            }
            reload(&client, open.as_ref(), &send);
        }
        let on_entry = |entry: &HistoryEntry| {
            send(Event::Entry(Box::new(entry.clone())));
            changed.notify_one();
        };
        let until = async {
            tokio::select! {
                request = requests.recv() => Wake::Request(request),
                () = tokio::time::sleep(REFRESH) => Wake::Refresh,
                () = changed.notified() => Wake::Changed,
            }
        };
        match client.listen_until(on_entry, until).await {
            Ok(Wake::Request(None)) => break,
            Ok(Wake::Request(Some(request))) => {
                handle(&mut client, request, &mut open, &send).await;
            }
            Ok(Wake::Refresh | Wake::Changed) => {}
            Err(e) => {
                online = false;
                send(Event::Connection(Connection::Offline(e.to_string())));
            }
        }
        reload(&client, open.as_ref(), &send);
    }
    client.disconnect().await;
}

/// Sends the open conversation's history (which marks it read) and the
/// conversation list with its unread counts.
fn reload(client: &Client, open: Option<&ConversationKey>, send: &impl Fn(Event)) {
    if let Some(key) = open {
        // A conversation not started yet has no history: show it empty.
        let entries = client.history(key.kind, &key.name).unwrap_or_default();
        send(Event::History(key.clone(), entries));
    }
    match client.conversations() {
        Ok(list) => send(Event::Conversations(list)),
        Err(e) => send(Event::Failed(e.to_string())),
    }
}

/// Does one request, reporting what came of it.
async fn handle(
    client: &mut Client,
    request: Request,
    open: &mut Option<ConversationKey>,
    send: &impl Fn(Event),
) {
    let result: Result<Option<(HistoryEntry, &str)>, ClientError> = match request {
        Request::Open(key) => {
            *open = Some(key);
            Ok(None)
        }
        Request::Send { to, text, reply_to } => {
            let sent = match to.kind {
                sotto_client::ConversationKind::Direct => {
                    client
                        .reply_direct(&to.name, &text, reply_to.as_deref())
                        .await
                }
                sotto_client::ConversationKind::Group => {
                    client
                        .reply_group(&to.name, &text, reply_to.as_deref())
                        .await
                }
            };
            sent.map(|entry| Some((entry, "sent")))
        }
        Request::React { id, emoji } => client
            .react(&id, &emoji)
            .await
            .map(|entry| Some((entry, "reaction sent"))),
        Request::Edit { id, text } => client
            .edit(&id, &text)
            .await
            .map(|entry| Some((entry, "edited for everyone"))),
        Request::Delete { id } => client
            .delete(&id)
            .await
            .map(|entry| Some((entry, "deleted for everyone"))),
        Request::Timer { to, secs } => client
            .set_timer(to.kind, &to.name, secs)
            .await
            .map(|entry| Some((entry, "timer changed"))),
        Request::File { to, path, text } => client
            .send_file(to.kind, &to.name, &path, text.as_deref(), &mut |_, _| {})
            .await
            .map(|sent| Some((sent.entry, "file sent"))),
        Request::Save { id, path } => client
            .save_attachment(&id, &path, &mut |_, _| {})
            .await
            .map(|size| {
                send(Event::Done(format!(
                    "saved {size} bytes to {}",
                    path.display()
                )));
                None
            }),
        Request::Typing { to, typing } => {
            // Best effort: a lost typing indicator is not worth a word.
            let _ = client.send_typing(to.kind, &to.name, typing).await;
            Ok(None)
        }
        Request::Members(to) => client
            .conversation_members(to.kind, &to.name)
            .map(|members| {
                send(Event::Popup(Popup {
                    title: format!("who can read {} (Esc closes)", to.label()),
                    lines: members
                        .iter()
                        .map(|m| {
                            let role = if m.admin { " admin" } else { "" };
                            format!("{} (device {}){role}", m.username, m.device_id)
                        })
                        .collect(),
                }));
                None
            }),
        Request::Verify { user, mark } => {
            let number = if mark {
                client.mark_verified(&user).await.map(|n| (n, true))
            } else {
                client.safety_number(&user, false).await
            };
            number.map(|(number, verified)| {
                let status = if verified { "verified" } else { "not verified" };
                let mut lines = vec![
                    format!("safety number with {user} ({status}):"),
                    String::new(),
                    format!("  {}", number.grouped()),
                    String::new(),
                ];
                if !verified {
                    lines.push(format!(
                        "Compare it with {user}'s screen; if it matches: /verify {user} --mark"
                    ));
                }
                send(Event::Popup(Popup {
                    title: format!("verify {user} (Esc closes)"),
                    lines,
                }));
                None
            })
        }
    };
    match result {
        Ok(Some((entry, done))) => {
            send(Event::Entry(Box::new(entry)));
            send(Event::Done(done.to_owned()));
        }
        Ok(None) => {}
        Err(e) => send(Event::Failed(e.to_string())),
    }
}
