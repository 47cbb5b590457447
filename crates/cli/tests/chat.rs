//! `sotto chat` end to end: the real binary in a tmux pane (keys sent
//! with send-keys, the screen read with capture-pane) against the real
//! server, talking with a CLI peer. Skipped, saying why, without tmux.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod common;

use common::ok;
use sotto_testkit::ServerProcess;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long anything may take to show up.
const DEADLINE: Duration = Duration::from_secs(45);
/// Between two looks at a screen or a mailbox.
const POLL: Duration = Duration::from_millis(100);

/// A tmux server of this test's own (its own socket), with one session
/// running one command; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (after saying why) when tmux cannot be run here.
    fn start(command: &str, width: u16, height: u16) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIPPED: tmux is not installed; `sotto chat` was not tested end to end");
            return None;
        }
        let tmux = Self {
            socket: format!("sotto-chat-test-{}", std::process::id()),
        };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-s", "chat", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .args(["-u", "-f", "/dev/null", "-L", &self.socket])
            .env("LANG", "C.UTF-8")
            .env_remove("TMUX");
        command
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.send(&["-l", text]);
    }

    /// Presses a key by its tmux name (`Enter`, `C-c`).
    fn press(&self, key: &str) {
        self.send(&[key]);
    }

    fn send(&self, keys: &[&str]) {
        let out = self
            .command()
            .args(["send-keys", "-t", "chat"])
            .args(keys)
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success(), "send-keys {keys:?} failed");
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "chat"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}; it shows:\n{screen}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Whether the session (and so the program in it) is gone.
    fn ended(&self) -> bool {
        !self
            .command()
            .args(["has-session", "-t", "chat"])
            .output()
            .expect("tmux has-session")
            .status
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// Polls `sotto sync --json` of `profile` until a text `text` arrives;
/// returns that line.
fn receive(profile: &Path, text: &str) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = ok(profile, &["sync", "--json"]);
        if let Some(line) = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|m| m["type"] == "text" && m["text"] == text)
        {
            return line;
        }
        assert!(Instant::now() < deadline, "{text:?} never arrived");
        std::thread::sleep(POLL);
    }
}

#[test]
fn alice_chats_in_the_terminal_ui_with_bob_on_the_cli() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);

    let command = format!(
        "env -u SOTTO_PROFILE '{}' --profile '{}' chat",
        env!("CARGO_BIN_EXE_sotto"),
        alice.path().display()
    );
    let Some(tmux) = Tmux::start(&command, 100, 30) else {
        return;
    };
    tmux.wait_for("online");

    // Alice starts the conversation and writes from the compose line.
    tmux.type_text("/open bob");
    tmux.press("Enter");
    tmux.type_text("hello from the terminal");
    tmux.press("Enter");
    tmux.wait_for("alice: hello from the terminal");

    // Bob's CLI receives it...
    let hello = receive(bob.path(), "hello from the terminal");
    assert_eq!(hello["sender"], "alice");
    let id = hello["id"].as_str().unwrap();

    // ...replies to it and reacts; Alice's screen shows both without a
    // key pressed.
    ok(
        bob.path(),
        &["send", "alice", "--reply-to", id, "hi from the cli"],
    );
    let screen = tmux.wait_for("bob: hi from the cli");
    assert!(
        screen.contains("┃ alice: hello from the terminal"),
        "the reply does not quote the message:\n{screen}"
    );
    ok(bob.path(), &["react", id, "👍"]);
    tmux.wait_for("👍 1 bob");

    // Ctrl-C leaves, and the program ends.
    tmux.press("C-c");
    let deadline = Instant::now() + DEADLINE;
    while !tmux.ended() {
        assert!(Instant::now() < deadline, "sotto chat did not exit");
        std::thread::sleep(POLL);
    }
}
