//! Chat content end to end (issue #14, first slice): texts, replies,
//! reactions, edits and deletes as MIMI content between two users (one of
//! them with two devices) and in a group of three, through a real server
//! in-process; and a malicious member who tries to edit, delete or take
//! back what others sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use prost::Message as _;
use sotto_client::{Client, ConversationKind, EntryKind, HistoryEntry};
use sotto_core::content::{AppContent, Body};
use sotto_core::group::Inbound;
use sotto_core::mimi::{self, ChatAction, MessageId, SottoUris};
use sotto_testkit::mallory::Mallory;
use sotto_testkit::{TestServer, link, register, warnings, within};
use std::collections::BTreeMap;
use std::path::Path;

const DIRECT: ConversationKind = ConversationKind::Direct;
const GROUP: ConversationKind = ConversationKind::Group;

/// The line with this id among `entries`, as the last of them left it (a
/// sync returns a changed message again for every change).
fn by_id<'a>(entries: &'a [HistoryEntry], id: &str) -> &'a HistoryEntry {
    entries
        .iter()
        .rev()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no line {id} in {entries:#?}"))
}

fn line(client: &Client, kind: ConversationKind, name: &str, id: &str) -> HistoryEntry {
    by_id(&client.history(kind, name).unwrap(), id).clone()
}

fn reactions(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(emoji, who)| {
            (
                emoji.to_string(),
                who.iter().map(|w| w.to_string()).collect(),
            )
        })
        .collect()
}

/// How many rows of the profile database still hold `text` anywhere in a
/// message or one of its versions.
fn rows_holding(profile: &Path, text: &str) -> i64 {
    let db = rusqlite::Connection::open(profile.join("sotto.db")).unwrap();
    let pattern = format!("%{text}%");
    let in_messages: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE body LIKE ?1",
            [&pattern],
            |r| r.get(0),
        )
        .unwrap();
    let in_versions: i64 = db
        .query_row(
            "SELECT count(*) FROM message_versions WHERE body LIKE ?1",
            [&pattern],
            |r| r.get(0),
        )
        .unwrap();
    in_messages + in_versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_reply_react_edit_and_delete() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, alice_dir) = register(&server.url(), "alice").await;
        let (mut phone, phone_dir) = link(&mut alice).await;
        let (mut bob, bob_dir) = register(&server.url(), "bob").await;

        let sent = alice.send_direct("bob", "lunch at noon?").await.unwrap();
        assert_eq!(sent.id.len(), 64, "a MIMI message id: {sent:?}");
        assert!(sent.id.starts_with("01"));
        let id = sent.id.clone();
        let received = bob.sync().await.unwrap();
        let seen = by_id(&received, &id);
        assert_eq!(
            (seen.sender.as_str(), seen.text.as_str()),
            ("alice", "lunch at noon?")
        );
        // Alice's other device derives the same id.
        let on_phone = phone.sync().await.unwrap();
        assert_eq!(by_id(&on_phone, &id).text, "lunch at noon?");

        // A reply shows the message it quotes.
        let reply = bob
            .reply_direct("alice", "noon is good", Some(&id))
            .await
            .unwrap();
        assert_eq!(reply.chat.reply_to.as_deref(), Some(id.as_str()));
        let received = alice.sync().await.unwrap();
        let seen = by_id(&received, &reply.id);
        assert_eq!(seen.text, "noon is good");
        assert_eq!(seen.chat.reply_to.as_deref(), Some(id.as_str()));
        let quoted = seen.chat.quoted.as_ref().expect("the reply quotes");
        assert_eq!(
            (quoted.sender.as_str(), quoted.text.as_str()),
            ("alice", "lunch at noon?")
        );

        // Reactions aggregate per emoji; the same one again takes it back.
        bob.react(&id, "👍").await.unwrap();
        alice.sync().await.unwrap();
        let mine = alice.react(&id, "👍").await.unwrap();
        assert_eq!(mine.chat.reactions, reactions(&[("👍", &["alice", "bob"])]));
        bob.sync().await.unwrap();
        assert_eq!(
            line(&bob, DIRECT, "alice", &id).chat.reactions,
            reactions(&[("👍", &["alice", "bob"])])
        );
        let undone = bob.react(&id, "👍").await.unwrap();
        assert_eq!(undone.chat.reactions, reactions(&[("👍", &["alice"])]));
        bob.react(&id, "🎉").await.unwrap();
        bob.react(&id, "❤").await.unwrap();
        let received = alice.sync().await.unwrap();
        assert_eq!(
            by_id(&received, &id).chat.reactions,
            reactions(&[("❤", &["bob"]), ("👍", &["alice"])]),
            "one reaction per account: the last one counts"
        );

        // An edit changes the message on every device; history keeps versions.
        let edited = alice.edit(&id, "lunch at one?").await.unwrap();
        assert!(edited.chat.edited);
        for (client, kind, peer) in [(&mut bob, DIRECT, "alice"), (&mut phone, DIRECT, "bob")] {
            let received = client.sync().await.unwrap();
            let seen = by_id(&received, &id);
            assert_eq!(seen.text, "lunch at one?");
            assert!(seen.chat.edited);
            let now = line(client, kind, peer, &id);
            let versions: Vec<&str> = now.chat.versions.iter().map(|v| v.text.as_str()).collect();
            assert_eq!(versions, ["lunch at noon?", "lunch at one?"]);
            assert_eq!(now.chat.versions[0].id, id);
        }
        let json = serde_json::to_value(line(&bob, DIRECT, "alice", &id)).unwrap();
        assert_eq!(json["edited"], true);
        assert_eq!(json["deleted"], false);
        assert_eq!(json["reply_to"], serde_json::Value::Null);
        assert_eq!(json["reactions"]["❤"], serde_json::json!(["bob"]));
        assert_eq!(json["versions"].as_array().unwrap().len(), 2);

        // Only the sender may edit or delete.
        assert!(bob.edit(&id, "free pizza").await.is_err());
        assert!(bob.delete(&id).await.is_err());

        // Delete for everyone: the text is gone from every device's database.
        let deleted = alice.delete(&id).await.unwrap();
        assert!(deleted.chat.deleted);
        assert_eq!(deleted.text, "");
        for client in [&mut bob, &mut phone] {
            let received = client.sync().await.unwrap();
            let seen = by_id(&received, &id);
            assert!(seen.chat.deleted);
            assert_eq!(seen.text, "");
            assert!(seen.chat.reactions.is_empty());
            assert!(seen.chat.versions.is_empty());
        }
        for dir in [&alice_dir, &phone_dir, &bob_dir] {
            assert_eq!(rows_holding(dir.path(), "lunch at"), 0);
        }
        // The reply now quotes a deleted message.
        let reply_now = line(&bob, DIRECT, "alice", &reply.id);
        let quoted = reply_now.chat.quoted.unwrap();
        assert!(quoted.deleted);
        assert_eq!(quoted.text, "");
        // Nothing can be done to a deleted message.
        assert!(alice.edit(&id, "back").await.is_err());
        assert!(bob.react(&id, "👍").await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_sees_every_change() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        let (mut carol, _c) = register(&server.url(), "carol").await;
        alice
            .create_group("trio", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        bob.sync().await.unwrap();
        carol.sync().await.unwrap();

        let id = alice
            .send_group("trio", "release on friday")
            .await
            .unwrap()
            .id;
        for client in [&mut bob, &mut carol] {
            let received = client.sync().await.unwrap();
            assert_eq!(by_id(&received, &id).text, "release on friday");
        }
        let reply = carol
            .reply_group("trio", "I'll write the notes", Some(&id))
            .await
            .unwrap();
        bob.react(&id, "🚀").await.unwrap();
        carol.sync().await.unwrap();
        carol.react(&id, "🚀").await.unwrap();
        alice.react(&reply.id, "🙏").await.unwrap();

        for (client, who) in [
            (&mut alice, "alice"),
            (&mut bob, "bob"),
            (&mut carol, "carol"),
        ] {
            client.sync().await.unwrap();
            let message = line(client, GROUP, "trio", &id);
            assert_eq!(
                message.chat.reactions,
                reactions(&[("🚀", &["bob", "carol"])]),
                "{who}"
            );
            let answer = line(client, GROUP, "trio", &reply.id);
            assert_eq!(answer.chat.reply_to.as_deref(), Some(id.as_str()), "{who}");
            assert_eq!(
                answer.chat.quoted.unwrap().text,
                "release on friday",
                "{who}"
            );
            assert_eq!(
                answer.chat.reactions,
                reactions(&[("🙏", &["alice"])]),
                "{who}"
            );
        }

        alice.edit(&id, "release on monday").await.unwrap();
        for client in [&mut bob, &mut carol] {
            let seen = by_id(&client.sync().await.unwrap(), &id).clone();
            assert_eq!(seen.text, "release on monday");
            assert!(seen.chat.edited);
            // Reactions stay on an edited message.
            assert_eq!(seen.chat.reactions, reactions(&[("🚀", &["bob", "carol"])]));
            let reply_now = line(client, GROUP, "trio", &reply.id);
            assert_eq!(reply_now.chat.quoted.unwrap().text, "release on monday");
        }

        alice.delete(&id).await.unwrap();
        for client in [&mut bob, &mut carol] {
            let seen = by_id(&client.sync().await.unwrap(), &id).clone();
            assert!(seen.chat.deleted);
            assert_eq!(seen.text, "");
        }
        // Every member's history agrees line by line.
        let view = |c: &Client| -> Vec<(String, String, String, bool, bool)> {
            c.history(GROUP, "trio")
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EntryKind::Text)
                .map(|e| (e.id, e.sender, e.text, e.chat.edited, e.chat.deleted))
                .collect()
        };
        assert_eq!(view(&alice), view(&bob));
        assert_eq!(view(&bob), view(&carol));
    })
    .await;
}

/// Mallory, a member of Alice's group, reads Alice's message (and its id)
/// and tries to edit it, delete it, speak as Alice, take back Alice's
/// reaction and count her own reaction twice. Bob's copy does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_change_what_another_sent() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        let mut mallory = Mallory::register(&server.url(), "mallory").await;
        alice
            .create_group("team", &["bob".into(), "mallory".into()])
            .await
            .unwrap();
        let group_id = mallory
            .sync()
            .await
            .into_iter()
            .find_map(|i| match i {
                Inbound::Joined { group_id, .. } => Some(group_id),
                _ => None,
            })
            .expect("mallory joined");
        bob.sync().await.unwrap();

        let id = alice.send_group("team", "pay bob 10").await.unwrap().id;
        let reaction = alice.react(&id, "✅").await.unwrap();
        assert_eq!(reaction.chat.reactions, reactions(&[("✅", &["alice"])]));
        bob.sync().await.unwrap();

        // What Mallory sees: Alice's two messages, their URIs and ids.
        let mut alice_ids = Vec::new();
        let mut alice_uris = None;
        for inbound in mallory.sync().await {
            let Inbound::Application { plaintext, .. } = inbound else {
                continue;
            };
            let app = AppContent::decode(plaintext.as_slice()).unwrap();
            let Some(Body::Mimi(bytes)) = app.body else {
                continue;
            };
            let content = mimi::decode(&bytes).unwrap();
            let uris = SottoUris::check(&content.extensions, "alice", &group_id).unwrap();
            alice_ids.push(MessageId::derive(
                &uris.sender,
                &uris.room,
                &bytes,
                &content.salt,
            ));
            alice_uris = Some(uris);
        }
        let [message, alice_reaction] = alice_ids[..] else {
            panic!("mallory saw {alice_ids:?}")
        };
        assert_eq!(message.to_hex(), id);
        let alice_uris = alice_uris.unwrap();
        // Her copy of the group, as her storage holds it now.
        let mut group = mallory.load(&group_id);
        let as_mallory = SottoUris {
            sender: alice_uris.sender.replace("/u/alice", "/u/mallory"),
            room: alice_uris.room.clone(),
        };
        let mut say = async |uris: &SottoUris, action: ChatAction| -> MessageId {
            let content = action.to_content(uris, rand::random());
            let bytes = mimi::encode(&content).unwrap();
            mallory
                .say(&mut group, Body::Mimi(bytes.clone()))
                .await
                .unwrap();
            MessageId::derive(&uris.sender, &uris.room, &bytes, &content.salt)
        };

        // Edits and deletes of Alice's message, and of her reaction, in
        // Mallory's own name: ignored.
        say(
            &as_mallory,
            ChatAction::Edit {
                target: message,
                text: "pay mallory 1000".into(),
            },
        )
        .await;
        say(&as_mallory, ChatAction::Retract { target: message }).await;
        say(
            &as_mallory,
            ChatAction::Retract {
                target: alice_reaction,
            },
        )
        .await;
        // Two reactions: one counts.
        say(
            &as_mallory,
            ChatAction::React {
                target: message,
                emoji: "👎".into(),
                replaces: None,
            },
        )
        .await;
        say(
            &as_mallory,
            ChatAction::React {
                target: message,
                emoji: "🔥".into(),
                replaces: None,
            },
        )
        .await;
        let received = bob.sync().await.unwrap();
        assert!(warnings(&received).is_empty(), "{received:#?}");
        let seen = line(&bob, GROUP, "team", &id);
        assert_eq!(seen.text, "pay bob 10");
        assert!(!seen.chat.edited && !seen.chat.deleted);
        assert_eq!(
            seen.chat.reactions,
            reactions(&[("✅", &["alice"]), ("🔥", &["mallory"])])
        );

        // An edit that claims to come from Alice: refused with a warning,
        // since MLS says Mallory sent it (the id would not be Mallory's).
        say(
            &alice_uris,
            ChatAction::Edit {
                target: message,
                text: "pay mallory 1000".into(),
            },
        )
        .await;
        // And one naming another room.
        let elsewhere = SottoUris {
            sender: as_mallory.sender.clone(),
            room: format!("{}00", as_mallory.room),
        };
        say(
            &elsewhere,
            ChatAction::Text {
                text: "hi".into(),
                reply_to: None,
            },
        )
        .await;
        let received = bob.sync().await.unwrap();
        assert_eq!(warnings(&received).len(), 2, "{received:#?}");
        let seen = line(&bob, GROUP, "team", &id);
        assert_eq!(seen.text, "pay bob 10");
        assert!(!seen.chat.edited);
        // Alice's own device agrees.
        alice.sync().await.unwrap();
        assert_eq!(line(&alice, GROUP, "team", &id).text, "pay bob 10");

        // Her own message she may edit, but only by naming its first
        // version; an edit of a message nobody has changes nothing.
        let text = |t: &str| ChatAction::Text {
            text: t.into(),
            reply_to: None,
        };
        let own = say(&as_mallory, text("v1")).await;
        let first_edit = say(
            &as_mallory,
            ChatAction::Edit {
                target: own,
                text: "v2".into(),
            },
        )
        .await;
        say(
            &as_mallory,
            ChatAction::Edit {
                target: first_edit,
                text: "v3".into(),
            },
        )
        .await;
        let nowhere = MessageId::from_slice(&[1; 32]).unwrap();
        say(
            &as_mallory,
            ChatAction::Edit {
                target: nowhere,
                text: "v4".into(),
            },
        )
        .await;
        let received = bob.sync().await.unwrap();
        assert!(warnings(&received).is_empty(), "{received:#?}");
        let mine = line(&bob, GROUP, "team", &own.to_hex());
        assert_eq!(mine.text, "v2");
        assert_eq!(mine.chat.versions.len(), 2);
    })
    .await;
}

/// What `sotto chat` builds on: `listen_until` delivers live lines, returns
/// with the connection usable when asked, and `conversations` counts what
/// the user has not been shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_can_pause_to_send_and_unread_counts_follow_history() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        alice.send_direct("bob", "one").await.unwrap();
        alice.send_direct("bob", "two").await.unwrap();
        bob.sync().await.unwrap();
        let list = bob.conversations().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].kind, list[0].name.as_str()), (DIRECT, "alice"));
        assert_eq!(list[0].unread, 2);
        assert!(list[0].last_at > 0);
        // Listing marks nothing read; showing the history does.
        assert_eq!(bob.conversations().unwrap()[0].unread, 2);
        bob.history(DIRECT, "alice").unwrap();
        assert_eq!(bob.conversations().unwrap()[0].unread, 0);
        // Bob's own messages never count.
        bob.send_direct("alice", "hi").await.unwrap();
        assert_eq!(bob.conversations().unwrap()[0].unread, 0);

        // Alice listens until told to stop; a message from Bob arrives
        // live, then the stop signal returns its value.
        let (stop, stopped) = tokio::sync::oneshot::channel::<&str>();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let listening = tokio::spawn(async move {
            let returned = alice
                .listen_until(
                    |entry| {
                        let _ = seen_tx.send(entry.text.clone());
                    },
                    async { stopped.await.unwrap() },
                )
                .await
                .unwrap();
            (alice, returned)
        });
        bob.send_direct("alice", "live").await.unwrap();
        while seen.recv().await.unwrap() != "live" {}
        stop.send("paused").unwrap();
        let (mut alice, returned) = listening.await.unwrap();
        assert_eq!(returned, "paused");
        // The connection is still usable: Alice answers without reconnecting
        // trouble, and Bob gets it.
        alice.send_direct("bob", "back").await.unwrap();
        let got = bob.sync().await.unwrap();
        assert!(got.iter().any(|e| e.text == "back"), "{got:#?}");
    })
    .await;
}
