//! `sotto chat`: a terminal UI that stays connected.
//!
//! Three parts that only talk over channels:
//! - [`net`]: a thread that owns the client, listens like `sotto listen`
//!   and does what the screen asks in between;
//! - [`app`]: the state and how keys and network events change it (no
//!   I/O; unit-tested), with [`compose`] parsing the compose line;
//! - [`render`]: draws the state (snapshot-tested with ratatui's
//!   `TestBackend`).
//!
//! This loop ties them: terminal events from a reader thread, network
//! events, and a clock tick, each followed by a redraw.

mod app;
mod compose;
mod net;
mod render;

use anyhow::{Context as _, Result};
use ratatui::crossterm::event;
use sotto_client::Client;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the screen is redrawn with nothing happening (typing
/// indicators run out).
const TICK: Duration = Duration::from_secs(1);
/// How long leaving waits for the network thread to disconnect.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Runs the terminal UI until the user leaves.
pub(crate) async fn run(client: Client) -> Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("`sotto chat` needs a terminal; use `sotto listen` to print messages");
    }
    let me = client.username().to_string();
    let network = net::spawn(client).context("cannot start the network thread")?;
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = ui_loop(&mut terminal, &me, network.requests, network.events).await;
    ratatui::restore();
    // The request channel is closed: the network thread disconnects.
    let _ = network.done.recv_timeout(SHUTDOWN_WAIT);
    result
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    me: &str,
    requests: mpsc::UnboundedSender<net::Request>,
    mut events: mpsc::UnboundedReceiver<net::Event>,
) -> Result<()> {
    let mut input = terminal_events();
    let mut app = app::App::new(me);
    let mut tick = tokio::time::interval(TICK);
    let mut network_gone = false;
    loop {
        terminal.draw(|frame| render::draw(frame, &app))?;
        let asked = tokio::select! {
            Some(event) = input.recv() => app.on_terminal_event(&event, now_ms()),
            event = events.recv(), if !network_gone => match event {
                Some(event) => app.on_event(event, now_ms()),
                None => {
                    network_gone = true;
                    app.connection = app::Connection::Offline("the network thread stopped".into());
                    Vec::new()
                }
            },
            _ = tick.tick() => {
                app.tick(now_ms());
                Vec::new()
            }
        };
        for request in asked {
            let _ = requests.send(request);
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Terminal events (keys, pastes, resizes), read on a thread of their own:
/// crossterm's reading blocks.
fn terminal_events() -> mpsc::UnboundedReceiver<event::Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where log lines go during `sotto chat`: they would tear up the
/// screen on stderr, so into `log` if given, nowhere otherwise.
pub(crate) fn log_writer(
    log: Option<&std::path::Path>,
) -> Result<tracing_subscriber::fmt::writer::BoxMakeWriter> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    Ok(match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::sink),
    })
}
