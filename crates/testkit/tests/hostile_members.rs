//! A malicious member, a removed member and an outsider attack honest
//! clients (DESIGN.md §5). Each test is named after the attack and asserts
//! that its effect is absent: the honest clients' rosters, histories and
//! outgoing recipients are what they would be without it. The attacker is
//! [`Mallory`]: a real account driving MLS and the protocol by hand.
//! Each test body runs against one SQLite server (`NAME::sqlite`) and
//! three PostgreSQL + NATS nodes with the accounts spread across them
//! (`NAME::cluster`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use sotto_client::{Client, ConversationKind};
use sotto_core::group::{self, Inbound};
use sotto_core::identity::{MemberId, Username};
use sotto_proto::mls_framing::{ContentType, opaque_private_message};
use sotto_proto::v1::{self, ErrorCode, ServerFrame, client_frame, server_frame};
use sotto_testkit::{
    ConnView, Deployment, HostileProxy, Mallory, on_each_backend, register, texts, warnings, within,
};
use std::time::Duration;

/// (username, device id) of every member of a group, sorted.
fn roster(client: &Client, name: &str) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = client
        .members(name)
        .unwrap()
        .into_iter()
        .map(|m| (m.username, m.device_id))
        .collect();
    members.sort();
    members
}

fn serialize(message: &MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().unwrap()
}

/// Mallory's copy of the group she was just added to.
async fn joined(mallory: &mut Mallory) -> MlsGroup {
    let group_id = mallory
        .sync()
        .await
        .into_iter()
        .find_map(|i| match i {
            Inbound::Joined { group_id, .. } => Some(group_id),
            _ => None,
        })
        .expect("mallory joined a group");
    mallory.load(&group_id)
}

/// Alice, Bob and Mallory in a group "team" that Alice made, each on the
/// next node of the deployment.
struct Team {
    deployment: Deployment,
    alice: Client,
    bob: Client,
    mallory: Mallory,
    group: MlsGroup,
    _dirs: Vec<tempfile::TempDir>,
}

async fn team_with(deployment: Deployment, also: &[&str]) -> (Team, Vec<Client>) {
    let (mut alice, a) = register(&deployment.url(), "alice").await;
    let (mut bob, b) = register(&deployment.url(), "bob").await;
    let mut mallory = Mallory::register(&deployment.url(), "mallory").await;
    let mut dirs = vec![a, b];
    let mut others = Vec::new();
    for name in also {
        let (client, dir) = register(&deployment.url(), name).await;
        others.push(client);
        dirs.push(dir);
    }
    let mut members = vec!["bob".to_owned(), "mallory".to_owned()];
    members.extend(also.iter().map(|s| s.to_string()));
    alice.create_group("team", &members).await.unwrap();
    let group = joined(&mut mallory).await;
    bob.sync().await.unwrap();
    for other in &mut others {
        other.sync().await.unwrap();
    }
    let team = Team {
        deployment,
        alice,
        bob,
        mallory,
        group,
        _dirs: dirs,
    };
    (team, others)
}

async fn team(deployment: Deployment) -> Team {
    team_with(deployment, &[]).await.0
}

/// The group still works for everyone honest: Alice sends, Bob reads.
async fn still_works(alice: &mut Client, bob: &mut Client, text: &str) {
    alice.send_group("team", text).await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), [text]);
}

on_each_backend! {
    /// Hole 1. Mallory builds a group holding Alice, Bob and a second account
    /// of hers (Zed), drops her own leaf so that each of Alice and Bob sees the
    /// other as the "first other member", gives it the smallest possible group
    /// id and calls it a direct conversation. Alice's and Bob's 1:1 messages
    /// must not go there.
    async fn a_third_party_cannot_sit_inside_a_direct_conversation(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let mut mallory = Mallory::register(&deployment.url(), "mallory").await;
            let mut zed = Mallory::register(&deployment.url(), "zed").await;
            alice.send_direct("bob", "hi bob").await.unwrap();
            assert_eq!(texts(&bob.sync().await.unwrap()), ["hi bob"]);

            let mut key_packages = mallory.claim("alice").await;
            key_packages.extend(mallory.claim("bob").await);
            key_packages.extend(mallory.claim("zed").await);
            let mut trap = mallory.create_group(&[0; 16]);
            mallory.add(&mut trap, &key_packages).await.unwrap();
            let mut trap = joined(&mut zed).await;
            let pending = group::remove_user(
                &zed.provider,
                &mut trap,
                &zed.account.device,
                &Username::parse("mallory").unwrap(),
            )
            .unwrap();
            zed.submit(&mut trap, pending).await.unwrap();
            zed.say(&mut trap, Mallory::direct_info()).await.unwrap();

            for client in [&mut alice, &mut bob] {
                let got = client.sync().await.unwrap();
                let warned = warnings(&got);
                assert!(
                    warned.iter().any(|w| w.contains("zed")),
                    "the warning names the extra member: {got:?}"
                );
            }
            // Their conversation still holds just the two of them, and their
            // messages go there.
            for (client, peer) in [(&alice, "bob"), (&bob, "alice")] {
                let members = client
                    .conversation_members(ConversationKind::Direct, peer)
                    .unwrap();
                assert!(
                    members
                        .iter()
                        .all(|m| m.username == "alice" || m.username == "bob"),
                    "{members:?}"
                );
            }
            alice.send_direct("bob", "for bob only").await.unwrap();
            assert_eq!(texts(&bob.sync().await.unwrap()), ["for bob only"]);
            bob.send_direct("alice", "for alice only").await.unwrap();
            assert_eq!(texts(&alice.sync().await.unwrap()), ["for alice only"]);
            let seen_by_zed = zed.sync().await;
            assert!(
                !seen_by_zed
                    .iter()
                    .any(|i| matches!(i, Inbound::Application { .. })),
                "{seen_by_zed:?}"
            );
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 1, from the inside: Mallory and Alice have a direct conversation;
    /// Mallory adds a third account to it. Alice refuses it, naming the newcomer,
    /// and sends nothing more there.
    async fn a_direct_conversation_that_gains_a_third_account_is_refused(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let mut mallory = Mallory::register(&deployment.url(), "mallory").await;
            let _zed = Mallory::register(&deployment.url(), "zed").await;
            let alice_key_packages = mallory.claim("alice").await;
            let mut direct = mallory.create_group(&[6; 16]);
            mallory.add(&mut direct, &alice_key_packages).await.unwrap();
            mallory
                .say(&mut direct, Mallory::direct_info())
                .await
                .unwrap();
            mallory
                .say(&mut direct, Mallory::text("just us"))
                .await
                .unwrap();
            assert_eq!(texts(&alice.sync().await.unwrap()), ["just us"]);

            let zed = mallory.claim("zed").await;
            mallory.add(&mut direct, &zed).await.unwrap();
            let got = alice.sync().await.unwrap();
            let warned = warnings(&got);
            assert!(
                warned.iter().any(|w| w.contains("also holds zed")),
                "{got:?}"
            );
            // Alice's next message starts a new two-person group: never the one
            // Zed is in.
            alice
                .send_direct("mallory", "still private?")
                .await
                .unwrap();
            let members = alice
                .conversation_members(ConversationKind::Direct, "mallory")
                .unwrap();
            assert!(members.iter().all(|m| m.username != "zed"), "{members:?}");
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 2a. Mallory proposes an Update that relabels her leaf as Bob's
    /// device. Honest clients never commit it, and drop it with a warning.
    async fn a_member_cannot_relabel_herself_as_another_member(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let before = roster(&t.alice, "team");
            let as_bob = MemberId {
                username: Username::parse("bob").unwrap(),
                device_id: t.bob.device_id(),
            };
            let parameters = LeafNodeParameters::builder()
                .with_credential_with_key(CredentialWithKey {
                    credential: as_bob.to_credential(),
                    signature_key: t.mallory.account.device.public().to_vec().into(),
                })
                .build();
            let (proposal, _) = t
                .group
                .propose_self_update(&t.mallory.provider, &t.mallory.account.device, parameters)
                .unwrap();
            t.mallory
                .send_payload(&t.group, serialize(&proposal))
                .await
                .unwrap();

            let got = t.alice.sync().await.unwrap();
            assert!(
                warnings(&got)
                    .iter()
                    .any(|w| w.contains("mallory") && w.contains("does not allow")),
                "{got:?}"
            );
            t.bob.sync().await.unwrap();
            still_works(&mut t.alice, &mut t.bob, "nothing changed").await;
            assert_eq!(roster(&t.alice, "team"), before);
            assert_eq!(roster(&t.bob, "team"), before);
            let seen = t.mallory.sync().await;
            assert!(
                !seen.iter().any(|i| matches!(i, Inbound::Commit { .. })),
                "an honest client committed Mallory's proposal: {seen:?}"
            );
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 2b. Mallory proposes to remove Carol, hoping Bob's client commits
    /// it ("bob removed carol"). Nobody does; Carol stays and keeps reading.
    async fn a_member_cannot_have_someone_else_remove_a_third(deployment) {
        within(async {
            let (mut t, mut others) = team_with(deployment, &["carol"]).await;
            let mut carol = others.pop().unwrap();
            let carol_leaf = Mallory::leaf_of(&t.group, "carol");
            let (proposal, _) = t
                .group
                .propose_remove_member(&t.mallory.provider, &t.mallory.account.device, carol_leaf)
                .unwrap();
            t.mallory
                .send_payload(&t.group, serialize(&proposal))
                .await
                .unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(
                warnings(&got).iter().any(|w| w.contains("mallory")),
                "{got:?}"
            );
            t.alice.sync().await.unwrap();
            carol.sync().await.unwrap();
            t.alice.send_group("team", "carol is here").await.unwrap();
            assert_eq!(texts(&carol.sync().await.unwrap()), ["carol is here"]);
            for client in [&t.alice, &t.bob, &carol] {
                let history = client.history(ConversationKind::Group, "team").unwrap();
                assert!(
                    history.iter().all(|e| !e.text.contains("removed carol")),
                    "{history:?}"
                );
                assert!(roster(client, "team").iter().any(|(u, _)| u == "carol"));
            }
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 2c. Mallory proposes adding a device. An honest commit of it would
    /// carry a Welcome nobody addressed, refused by the server, breaking every
    /// later sync and send. Nobody commits it; the group keeps working.
    async fn a_proposed_add_does_not_wedge_the_group(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let (_eve, _e) = register(&t.deployment.url(), "eve").await;
            let eve = t.mallory.claim("eve").await;
            let (proposal, _) = t
                .group
                .propose_add_member(
                    &t.mallory.provider,
                    &t.mallory.account.device,
                    &eve[0].key_package,
                )
                .unwrap();
            t.mallory
                .send_payload(&t.group, serialize(&proposal))
                .await
                .unwrap();
            t.alice.sync().await.unwrap();
            t.bob.sync().await.unwrap();
            still_works(&mut t.alice, &mut t.bob, "still fine").await;
            still_works(&mut t.bob, &mut t.alice, "here too").await;
            assert!(roster(&t.alice, "team").iter().all(|(u, _)| u != "eve"));
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 2 (the wedged target). Mallory proposes removing Bob. Bob's client
    /// used to try to commit its own removal, which openmls refuses, and then
    /// failed every send and sync. Now the proposal is dropped.
    async fn a_remove_proposal_aimed_at_a_device_does_not_wedge_it(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let bob_leaf = Mallory::leaf_of(&t.group, "bob");
            let (proposal, _) = t
                .group
                .propose_remove_member(&t.mallory.provider, &t.mallory.account.device, bob_leaf)
                .unwrap();
            t.mallory
                .send_payload(&t.group, serialize(&proposal))
                .await
                .unwrap();
            t.bob.sync().await.unwrap();
            t.alice.sync().await.unwrap();
            still_works(&mut t.bob, &mut t.alice, "bob can still send").await;
            still_works(&mut t.alice, &mut t.bob, "and read").await;
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 2d. Mallory proposes a change to the group context (its
    /// extensions). Refused like any proposal but a member's own leave.
    async fn a_group_context_proposal_is_refused(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let (proposal, _) = t
                .group
                .propose_group_context_extensions(
                    &t.mallory.provider,
                    Extensions::default(),
                    &t.mallory.account.device,
                )
                .unwrap();
            t.mallory
                .send_payload(&t.group, serialize(&proposal))
                .await
                .unwrap();
            let got = t.alice.sync().await.unwrap();
            assert!(
                warnings(&got).iter().any(|w| w.contains("mallory")),
                "{got:?}"
            );
            t.bob.sync().await.unwrap();
            still_works(&mut t.alice, &mut t.bob, "unchanged").await;
        })
        .await;
    }
}

on_each_backend! {
    /// Mallory commits, herself, a change Sotto does not allow (the group
    /// context's extensions). That is authenticated evidence of a misbehaving
    /// member: every honest client refuses the conversation, and the warning
    /// names her, not anyone else.
    async fn a_commit_that_breaks_the_policy_is_refused_and_names_its_committer(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let (commit, _, _) = t
                .group
                .update_group_context_extensions(
                    &t.mallory.provider,
                    Extensions::default(),
                    &t.mallory.account.device,
                )
                .unwrap();
            t.mallory.submit_built(&mut t.group, commit).await.unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                let warned = warnings(&got);
                assert!(
                    warned
                        .iter()
                        .any(|w| w.contains("mallory") && w.contains("does not allow")),
                    "{got:?}"
                );
                assert!(client.groups().unwrap().is_empty());
            }
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 3. A member (or a former member within the grace period) sends a
    /// message framed for a later epoch, or for another group: the server
    /// refuses both, and nothing changes on any client.
    async fn forged_framing_is_refused_and_changes_nothing(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let group_id = t.group.group_id().to_vec();
            let epoch = t.group.epoch().as_u64();
            let future =
                opaque_private_message(&group_id, epoch + 1, ContentType::Application, &[7; 64]);
            let err = t.mallory.send_payload(&t.group, future).await.unwrap_err();
            assert_eq!(
                err.server_code(),
                Some(ErrorCode::MismatchedFraming),
                "{err}"
            );

            // Mallory's own group, and a message framed for the team in it.
            let mut own = t.mallory.create_group(&[1; 16]);
            let bob = t.mallory.claim("bob").await;
            t.mallory.add(&mut own, &bob).await.unwrap();
            let for_team = t
                .mallory
                .encrypt(&mut t.group, Mallory::text("via another group"));
            let send = v1::SendMessage {
                message_id: vec![5; 16],
                group_id: own.group_id().to_vec(),
                recipients: vec![t.bob.device_id().as_bytes().to_vec()],
                payload: for_team,
                send_token: t.mallory.capability(&own),
                more_recipients: false,
                expires_at: 0,
                ephemeral: false,
            };
            let err = t
                .mallory
                .request(client_frame::Body::SendMessage(send))
                .await
                .unwrap_err();
            assert_eq!(
                err.server_code(),
                Some(ErrorCode::MismatchedFraming),
                "{err}"
            );

            let got = t.bob.sync().await.unwrap();
            assert!(texts(&got).is_empty(), "{got:?}");
            assert!(t.bob.groups().unwrap().contains(&"team".to_owned()));
            still_works(&mut t.alice, &mut t.bob, "team intact").await;
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 3 (the outsider). A connection that never registered creates a
    /// group (which needs no capability) and tries to reach Bob through it:
    /// the creating commit cannot name recipients, a message framed for Bob's
    /// group is refused, and one framed for the outsider's own group changes
    /// nothing on Bob's client.
    async fn an_outsider_cannot_deliver_anything_that_matters(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let mut outsider = t.mallory.outsider().await;
            let bob_device = t.bob.device_id().as_bytes().to_vec();
            let own_group = vec![3; 16];
            let capability = vec![4; 32];
            let create = |recipients: Vec<Vec<u8>>| v1::SubmitCommit {
                message_id: rand_id(),
                group_id: own_group.clone(),
                epoch: 0,
                recipients,
                commit: opaque_private_message(&own_group, 0, ContentType::Commit, b"c"),
                next_token_hash: group::token_hash(&capability),
                ..Default::default()
            };
            let err = outsider
                .request(client_frame::Body::SubmitCommit(create(vec![
                    bob_device.clone(),
                ])))
                .await
                .unwrap_err();
            assert_eq!(err.server_code(), Some(ErrorCode::InvalidRequest), "{err}");
            outsider
                .request(client_frame::Body::SubmitCommit(create(Vec::new())))
                .await
                .unwrap();
            let team_id = t.group.group_id().to_vec();
            let epoch = t.group.epoch().as_u64();
            let send = |payload: Vec<u8>| {
                client_frame::Body::SendMessage(v1::SendMessage {
                    message_id: rand_id(),
                    group_id: own_group.clone(),
                    recipients: vec![bob_device.clone()],
                    payload,
                    send_token: capability.clone(),
                    more_recipients: false,
                    expires_at: 0,
                    ephemeral: false,
                })
            };
            let err = outsider
                .request(send(opaque_private_message(
                    &team_id,
                    epoch + 1,
                    ContentType::Application,
                    &[0; 64],
                )))
                .await
                .unwrap_err();
            assert_eq!(
                err.server_code(),
                Some(ErrorCode::MismatchedFraming),
                "{err}"
            );
            outsider
                .request(send(opaque_private_message(
                    &own_group,
                    1,
                    ContentType::Application,
                    &[0; 64],
                )))
                .await
                .unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(got.is_empty(), "{got:?}");
            assert!(t.bob.device_warnings().unwrap().is_empty());
            still_works(&mut t.alice, &mut t.bob, "unmoved").await;
        })
        .await;
    }
}

fn rand_id() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

on_each_backend! {
    /// Hole 4. Alice removes Mallory. Mallory keeps the old epoch's capability:
    /// what she sends right after the commit is queued (the grace period is for
    /// messages sent just before a commit), but clients that merged her removal
    /// drop it; after the grace period the server refuses her.
    async fn a_removed_member_cannot_keep_posting(
        deployment,
        |c| c.previous_epoch_grace = Duration::from_millis(1500)
    ) {
        within(async {
            let (mut t, _) = team_with(deployment, &[]).await;
            t.alice.remove_member("team", "mallory").await.unwrap();
            // Mallory has not processed her removal: she still sends in the
            // epoch she knows, with its capability.
            t.mallory
                .say(&mut t.group, Mallory::text("still here"))
                .await
                .unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(texts(&got).is_empty(), "{got:?}");
            assert!(
                got.iter().any(|e| e.text == "alice removed mallory"),
                "{got:?}"
            );
            assert_eq!(
                t.bob
                    .dropped_from_former_members(ConversationKind::Group, "team")
                    .unwrap(),
                1
            );
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let err = t
                .mallory
                .say(&mut t.group, Mallory::text("and now?"))
                .await
                .unwrap_err();
            assert_eq!(err.server_code(), Some(ErrorCode::NotAuthorized), "{err}");
            assert!(texts(&t.bob.sync().await.unwrap()).is_empty());
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 5. A delivery that cannot be processed (well framed, with the
    /// group's capability, but garbage inside) is acknowledged with a warning,
    /// and the messages behind it are delivered.
    async fn a_poison_delivery_is_skipped_with_a_warning(deployment) {
        within(async {
            let mut t = team(deployment).await;
            let group_id = t.group.group_id().to_vec();
            let epoch = t.group.epoch().as_u64();
            let garbage =
                opaque_private_message(&group_id, epoch, ContentType::Application, &[0xee; 300]);
            t.mallory.send_payload(&t.group, garbage).await.unwrap();
            t.alice
                .send_group("team", "behind the poison")
                .await
                .unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(
                warnings(&got)
                    .iter()
                    .any(|w| w.contains("could not be processed")),
                "{got:?}"
            );
            assert_eq!(texts(&got), ["behind the poison"]);
            // Acknowledged: it does not come again.
            t.bob.disconnect().await;
            assert!(t.bob.sync().await.unwrap().is_empty());
        })
        .await;
    }
}

on_each_backend! {
    /// Hole 5 (a lookup that keeps failing). Mallory adds Bob to a group, and
    /// every lookup of her account fails on the network (here: a path that
    /// cuts the connection). Bob retries with backoff; after a bounded number
    /// of attempts the Welcome is skipped with a warning, and what is queued
    /// behind it is delivered.
    async fn a_lookup_that_keeps_failing_is_retried_a_bounded_number_of_times(deployment) {
        within(async {
            let proxy = HostileProxy::start(&deployment.url(), |conn: &ConnView, frame: ServerFrame| {
                let about_mallory = match &conn.request {
                    Some(client_frame::Body::GetAccountLog(g)) => g.username == "mallory",
                    Some(client_frame::Body::ClaimKeyPackages(c)) => c.username == "mallory",
                    _ => false,
                };
                let is_response = matches!(frame.body, Some(server_frame::Body::Response(_)));
                (!(about_mallory && is_response)).then_some(frame)
            })
            .await;
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&proxy.url(), "bob").await;
            let mut mallory = Mallory::register(&deployment.url(), "mallory").await;
            let bob_key_packages = mallory.claim("bob").await;
            let mut trap = mallory.create_group(&[2; 16]);
            mallory.add(&mut trap, &bob_key_packages).await.unwrap();
            alice
                .send_direct("bob", "behind the welcome")
                .await
                .unwrap();

            for attempt in 1..sotto_client_max_attempts() {
                let err = bob.sync().await.unwrap_err();
                assert!(err.is_transient(), "attempt {attempt}: {err}");
                bob.disconnect().await;
            }
            let got = bob.sync().await.unwrap();
            assert!(
                warnings(&got)
                    .iter()
                    .any(|w| w.contains("gave up looking up mallory")),
                "{got:?}"
            );
            assert_eq!(texts(&got), ["behind the welcome"]);
            assert!(!bob.device_warnings().unwrap().is_empty());
        })
        .await;
    }
}

/// The bound the client applies ([`sotto_client`]'s `MAX_DELIVERY_ATTEMPTS`).
fn sotto_client_max_attempts() -> u32 {
    sotto_client::MAX_DELIVERY_ATTEMPTS
}

on_each_backend! {
    /// Mallory sends an attachment whose URL names another host and whose
    /// declared size is the largest there is, named `../../.profile`. Bob's
    /// client lists it under its last name component, and saving it asks
    /// Bob's own server only (which has no such blob): no
    /// request to Mallory's host, no allocation sized by her claim, nothing
    /// written.
    async fn a_forged_attachment_cannot_send_bob_elsewhere_or_exhaust_him(deployment) {
        use sotto_core::mimi::{self, ChatAction, ExternalPart, SottoUris};
        within(async {
            let Team {
                mut alice,
                mut bob,
                mut mallory,
                mut group,
                deployment: _deployment,
                _dirs,
            } = team(deployment).await;
            let group_id = group.group_id().as_slice().to_vec();
            let file = ExternalPart {
                content_type: "video/mp4".into(),
                url: format!(
                    "https://mallory.invalid/blobs/{}#{}",
                    "0f".repeat(16),
                    "ab".repeat(32)
                ),
                size: u64::MAX,
                enc_alg: ExternalPart::AES_128_GCM,
                key: vec![7; 16],
                nonce: vec![7; 12],
                hash_alg: ExternalPart::SHA256,
                content_hash: vec![7; 32],
                filename: "../../.profile".into(),
                expires: 0,
                aad: Vec::new(),
                description: String::new(),
            };
            let action = ChatAction::Attachment {
                file: Box::new(file),
                text: None,
                reply_to: None,
            };
            let uris = SottoUris::new("mallory.invalid", "mallory", &group_id);
            let bytes = mimi::encode(&action.to_content(&uris, [3; mimi::SALT_LEN])).unwrap();
            mallory
                .say(&mut group, sotto_core::content::Body::Mimi(bytes))
                .await
                .unwrap();

            let received = bob.sync().await.unwrap();
            let line = received
                .iter()
                .find(|e| e.chat.attachment.is_some())
                .unwrap_or_else(|| panic!("the attachment is listed: {received:#?}"));
            let shown = &line.chat.attachment.as_ref().unwrap().name;
            assert_eq!(shown, ".profile", "the name keeps no directories");
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("saved");
            let err = bob
                .save_attachment(&line.id, &out, &mut |_, _| {})
                .await
                .unwrap_err();
            // The 404 came from Bob's own blob store: mallory.invalid does not
            // resolve, so asking it would have failed as a network error.
            assert!(err.to_string().contains("no longer has"), "{err}");
            assert!(!out.exists(), "nothing is written");
            still_works(&mut alice, &mut bob, "still here").await;
        })
        .await;
    }
}

on_each_backend! {
    /// Message franking (issue #18). Mallory sends chat texts franked wrongly:
    /// without a tag, with a tag over other content, and with a correct tag
    /// whose sender signature is not hers. Bob's client shows each (franking
    /// protects reports, not delivery), marks it unreportable with the reason,
    /// and nothing crashes; an honest message stays reportable.
    async fn badly_franked_messages_are_shown_but_cannot_be_reported(deployment) {
        use sotto_core::content::AppContent;
        use sotto_core::franking;
        use sotto_core::identity::DeviceKey;
        within(async {
            let mut t = team(deployment).await;
            let group_id = t.group.group_id().to_vec();
            let content = |body| AppContent {
                id: rand_id(),
                sent_at_ms: 1,
                body: Some(body),
                log_head: None,
                padding: Vec::new(),
                franking: None,
            };

            // No tag at all (and no salt): what a client without franking sends.
            let (body, untagged) = t.mallory.mimi_text(&t.group, "untagged");
            let payload = t
                .mallory
                .encrypt_content(&mut t.group, &content(body), Vec::new());
            t.mallory.send_payload(&t.group, payload).await.unwrap();

            // A tag over other content than she sends.
            let (body, mismatched) = t.mallory.mimi_text(&t.group, "tagged wrongly");
            let (other, _) = t.mallory.mimi_text(&t.group, "what the tag covers");
            let sealed = franking::seal(
                &t.mallory.account.device,
                &group_id,
                &content(other),
                [1; 32],
            );
            let lying = AppContent {
                franking: Some(sealed.franking),
                ..content(body)
            };
            let payload = t.mallory.encrypt_content(&mut t.group, &lying, sealed.aad);
            t.mallory.send_payload(&t.group, payload).await.unwrap();

            // A correct tag signed by another key than her device's.
            let (body, unsigned) = t.mallory.mimi_text(&t.group, "signed by nobody");
            let plain = content(body);
            let sealed = franking::seal(&DeviceKey::generate(), &group_id, &plain, [2; 32]);
            let forged = AppContent {
                franking: Some(sealed.franking),
                ..plain
            };
            let payload = t.mallory.encrypt_content(&mut t.group, &forged, sealed.aad);
            t.mallory.send_payload(&t.group, payload).await.unwrap();

            let got = t.bob.sync().await.unwrap();
            let shown = texts(&got);
            for text in ["untagged", "tagged wrongly", "signed by nobody"] {
                assert!(
                    shown.iter().any(|s| s == text),
                    "{text} not shown: {shown:?}"
                );
            }
            for (id, why) in [
                (&untagged, "no-tag"),
                (&mismatched, "tag-mismatch"),
                (&unsigned, "bad-sender-signature"),
            ] {
                let err = t
                    .bob
                    .report(id, franking::ReportReason::Spam, "")
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains(why), "{id}: {err}");
            }

            // Alice's honest message is reportable.
            t.alice.send_group("team", "honest").await.unwrap();
            let got = t.bob.sync().await.unwrap();
            let honest = got.iter().find(|e| e.text == "honest").expect("honest");
            t.bob
                .report(&honest.id, franking::ReportReason::Other, "just checking")
                .await
                .unwrap();
        })
        .await;
    }
}

// ------------------------------------------------------------ admins
//
// A group with admins (`sotto group create --admins`): Alice is its admin;
// Mallory, a plain member, runs a modified client that does what only an
// admin may. Every honest client refuses it.

/// Alice (admin), Bob and Mallory in a group "team" with admins.
async fn admin_team(deployment: Deployment, read_only: bool) -> Team {
    let (mut alice, a) = register(&deployment.url(), "alice").await;
    let (mut bob, b) = register(&deployment.url(), "bob").await;
    let mut mallory = Mallory::register(&deployment.url(), "mallory").await;
    alice
        .create_group_with_admins("team", &["bob".into(), "mallory".into()], read_only)
        .await
        .unwrap();
    let group = joined(&mut mallory).await;
    bob.sync().await.unwrap();
    let admins = group::admin_policy(&group).unwrap().unwrap();
    assert_eq!(admins.admins, [Username::parse("alice").unwrap()]);
    Team {
        deployment,
        alice,
        bob,
        mallory,
        group,
        _dirs: vec![a, b],
    }
}

/// Every honest client warned that Mallory did what only an admin may,
/// naming her.
async fn every_client_refused(t: &mut Team, what: &str) {
    for client in [&mut t.alice, &mut t.bob] {
        let got = client.sync().await.unwrap();
        assert!(
            warnings(&got)
                .iter()
                .any(|w| w.contains("mallory") && w.contains(what)),
            "{got:?}"
        );
    }
}

on_each_backend! {
    async fn a_non_admin_cannot_remove_a_member(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let before = roster(&t.bob, "team");
            // An honest client of a non-admin does not even try.
            let err = t.bob.remove_member("team", "mallory").await.unwrap_err();
            assert!(err.to_string().contains("only an admin"), "{err}");

            let pending = group::remove_user(
                &t.mallory.provider,
                &mut t.group,
                &t.mallory.account.device,
                &Username::parse("bob").unwrap(),
            )
            .unwrap();
            t.mallory.submit(&mut t.group, pending).await.unwrap();
            every_client_refused(&mut t, "only an admin").await;
            // Bob was not removed anywhere: the commit was never merged, and
            // the conversation stopped (as for any commit that breaks the
            // group policy: the server moved on to an epoch nobody honest
            // accepts).
            assert_eq!(before.len(), 3);
            for client in [&t.alice, &t.bob] {
                let history = client.history(ConversationKind::Group, "team").unwrap();
                assert!(
                    history.iter().all(|e| !e.text.contains("removed bob")),
                    "{history:?}"
                );
                assert!(client.groups().unwrap().is_empty());
            }
        })
        .await;
    }
}

on_each_backend! {
    async fn a_non_admin_cannot_change_the_admin_list(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let policy = group::AdminPolicy::new(Username::parse("mallory").unwrap());
            let (commit, _, _) = t
                .group
                .update_group_context_extensions(
                    &t.mallory.provider,
                    policy.extensions().unwrap(),
                    &t.mallory.account.device,
                )
                .unwrap();
            t.mallory.submit_built(&mut t.group, commit).await.unwrap();
            every_client_refused(&mut t, "only an admin").await;
            for client in [&t.alice, &t.bob] {
                assert!(client.groups().unwrap().is_empty());
            }
        })
        .await;
    }
}

on_each_backend! {
    /// Mallory deletes Bob's message "for everyone": ignored everywhere.
    /// Alice, an admin, deletes it: gone everywhere.
    async fn only_an_admin_deletes_someone_elses_message(deployment) {
        use sotto_core::mimi::{self, ChatAction, MessageId, SottoUris};
        within(async {
            let mut t = admin_team(deployment, false).await;
            let sent = t.bob.send_group("team", "bob's words").await.unwrap();
            assert_eq!(texts(&t.alice.sync().await.unwrap()), ["bob's words"]);
            t.mallory.sync().await;
            let group_id = t.group.group_id().as_slice().to_vec();
            let target = MessageId::from_hex(&sent.id).unwrap();
            let uris = SottoUris::new("mallory.invalid", "mallory", &group_id);
            let bytes =
                mimi::encode(&ChatAction::Retract { target }.to_content(&uris, [5; mimi::SALT_LEN]))
                    .unwrap();
            t.mallory
                .say(&mut t.group, sotto_core::content::Body::Mimi(bytes))
                .await
                .unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                client.sync().await.unwrap();
                let history = client.history(ConversationKind::Group, "team").unwrap();
                let line = history.iter().find(|e| e.id == sent.id).unwrap();
                assert!(!line.chat.deleted, "{line:?}");
                assert_eq!(line.text, "bob's words");
            }
            // Bob (not an admin) cannot delete Alice's message either, from an
            // honest client.
            let alices = t.alice.send_group("team", "alice's words").await.unwrap();
            t.bob.sync().await.unwrap();
            let err = t.bob.delete(&alices.id).await.unwrap_err();
            assert!(err.to_string().contains("only alice"), "{err}");

            // The admin deletes Bob's message for everyone.
            let deleted = t.alice.delete(&sent.id).await.unwrap();
            assert!(deleted.chat.deleted);
            t.bob.sync().await.unwrap();
            let history = t.bob.history(ConversationKind::Group, "team").unwrap();
            let line = history.iter().find(|e| e.id == sent.id).unwrap();
            assert!(line.chat.deleted, "{line:?}");
            assert!(!line.text.contains("bob's words"));
        })
        .await;
    }
}

on_each_backend! {
    async fn a_non_admin_cannot_post_in_a_read_only_group(deployment) {
        within(async {
            let mut t = admin_team(deployment, true).await;
            let admins = t.bob.group_admins("team").unwrap().unwrap();
            assert!(admins.read_only);
            // Bob's honest client refuses to post.
            let err = t.bob.send_group("team", "may I?").await.unwrap_err();
            assert!(err.to_string().contains("read-only"), "{err}");
            // Mallory's modified one posts anyway: every client drops it.
            t.mallory
                .say(&mut t.group, Mallory::text("buy my stuff"))
                .await
                .unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(texts(&got).is_empty(), "{got:?}");
                assert!(
                    warnings(&got)
                        .iter()
                        .any(|w| w.contains("mallory") && w.contains("not an admin")),
                    "{got:?}"
                );
                let history = client.history(ConversationKind::Group, "team").unwrap();
                assert!(history.iter().all(|e| !e.text.contains("buy my stuff")));
            }
            // The admin's announcements still arrive, and the group lives on.
            still_works(&mut t.alice, &mut t.bob, "announcement").await;
            // The admin opens the group; Bob may post again.
            t.alice.set_read_only("team", false).await.unwrap();
            t.bob.sync().await.unwrap();
            still_works(&mut t.bob, &mut t.alice, "thanks").await;
        })
        .await;
    }
}

on_each_backend! {
    /// The admin makes Bob an admin, who then removes a member. Nobody is
    /// warned about anything; the last admin cannot step down.
    async fn an_admin_removes_members_and_appoints_admins(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            t.alice.set_admin("team", "bob", true).await.unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(warnings(&got).is_empty(), "{got:?}");
            let members = t.bob.members("team").unwrap();
            assert!(members.iter().any(|m| m.username == "bob" && m.admin));
            assert!(members.iter().any(|m| m.username == "mallory" && !m.admin));
            t.bob.remove_member("team", "mallory").await.unwrap();
            let got = t.alice.sync().await.unwrap();
            assert!(warnings(&got).is_empty(), "{got:?}");
            assert!(roster(&t.alice, "team").iter().all(|(u, _)| u != "mallory"));
            still_works(&mut t.alice, &mut t.bob, "just us").await;
            t.alice.set_admin("team", "bob", false).await.unwrap();
            t.bob.sync().await.unwrap();
            let err = t.alice.set_admin("team", "alice", false).await.unwrap_err();
            assert!(err.to_string().contains("at least one"), "{err}");
        })
        .await;
    }
}

// ------------------------------------------------------------ invite links
//
// A public group's invite link (docs/PUBLIC_GROUPS.md): Alice, its admin,
// opens one; anyone with it joins by an external commit, in plain sight;
// the server's operator can close it. Eve is an outsider with a modified
// client.

/// The operator runs `sotto-server invite-link close` on the deployment's
/// store: how many links it closed. Also checks the transparency report
/// counts the closure.
async fn operator_closes_invite_links(deployment: &Deployment, group_id: &[u8]) -> u64 {
    use sotto_server::store::{AnyStore, GroupId, LegalStore as _, StoreLocation};
    let location = match deployment.cluster() {
        Some(cluster) => StoreLocation::Postgres(cluster.db().url().to_owned()),
        None => StoreLocation::Sqlite(deployment.single().unwrap().data_dir().to_path_buf()),
    };
    let store = AnyStore::open_existing(&location).await.unwrap();
    let group_id = GroupId::from_slice(group_id).unwrap();
    let (closed, entry) =
        sotto_server::legal::close_invite_links(&store, &group_id, "abuse-7", 20_000)
            .await
            .unwrap();
    assert_eq!(entry.kind, "invite-link-close");
    let reported = store.report_entries().await.unwrap();
    assert_eq!(
        reported
            .iter()
            .filter(|r| r.kind == "invite-link-close")
            .count(),
        1
    );
    // Closing again closes nothing and records nothing.
    assert!(
        sotto_server::legal::close_invite_links(&store, &group_id, "again", 20_000)
            .await
            .is_err()
    );
    store.close().await;
    closed
}

fn parse_link(link: &str) -> group::InviteLink {
    group::InviteLink::parse_url(link).unwrap().1
}

on_each_backend! {
    /// Carol, who is in no group with anyone, joins by the link: every
    /// member sees "carol joined by invite link", and she reads what is
    /// sent from then on, not before. Only an admin opens a link.
    async fn an_invite_link_admits_a_new_member_who_reads_only_new_messages(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            t.alice.send_group("team", "before carol").await.unwrap();
            t.bob.sync().await.unwrap();
            let err = t.bob.create_invite_link("team").await.unwrap_err();
            assert!(err.to_string().contains("only an admin"), "{err}");
            let link = t.alice.create_invite_link("team").await.unwrap();
            assert!(link.starts_with("sotto+invite://"), "{link}");
            assert_eq!(t.alice.create_invite_link("team").await.unwrap(), link);

            let (mut carol, _c) = register(&t.deployment.url(), "carol").await;
            let (name, lines) = carol.join_invite_link(&link).await.unwrap();
            assert_eq!(name, "team");
            assert!(
                lines.iter().any(|l| l.text == "you joined team by invite link"),
                "{lines:?}"
            );
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(warnings(&got).is_empty(), "{got:?}");
                assert!(
                    got.iter().any(|e| e.text == "carol joined by invite link"),
                    "{got:?}"
                );
                assert!(roster(client, "team").iter().any(|(u, _)| u == "carol"));
            }
            assert_eq!(roster(&carol, "team"), roster(&t.alice, "team"));
            // New messages only.
            still_works(&mut t.alice, &mut carol, "welcome, carol").await;
            let history = carol.history(ConversationKind::Group, "team").unwrap();
            assert!(
                history.iter().all(|e| !e.text.contains("before carol")),
                "{history:?}"
            );
            // A full member: she posts and commits like anyone.
            carol.send_group("team", "hi all").await.unwrap();
            assert_eq!(
                texts(&t.bob.sync().await.unwrap()),
                ["welcome, carol", "hi all"]
            );
            carol.update_keys("team").await.unwrap();
            still_works(&mut t.bob, &mut carol, "still in sync").await;
        })
        .await;
    }
}

on_each_backend! {
    /// After `sotto-server invite-link close`, the server refuses the link:
    /// an honest joiner is told so, and an external commit Eve built while
    /// it was open is refused too. Nobody joins; the group goes on.
    async fn once_the_operator_closes_an_invite_link_it_admits_no_one(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let link = t.alice.create_invite_link("team").await.unwrap();
            t.bob.sync().await.unwrap();
            let parsed = parse_link(&link);
            let mut eve = Mallory::register(&t.deployment.url(), "eve").await;
            let info = eve.fetch_group_info(&parsed.id()).await.unwrap();
            let early = eve.build_join(&parsed, &info);

            let group_id = t.group.group_id().as_slice().to_vec();
            assert_eq!(operator_closes_invite_links(&t.deployment, &group_id).await, 1);

            let err = eve.submit_join(&parsed.id(), &early).await.unwrap_err();
            assert!(
                matches!(&err, sotto_client::ClientError::Server(e)
                    if e.code == ErrorCode::InviteLinkClosed as i32),
                "{err}"
            );
            let err = eve.fetch_group_info(&parsed.id()).await.unwrap_err();
            assert!(err.to_string().contains("closed by the server's operator"), "{err}");
            let (mut dave, _d) = register(&t.deployment.url(), "dave").await;
            let err = dave.join_invite_link(&link).await.unwrap_err();
            assert!(err.to_string().contains("closed by the server's operator"), "{err}");
            assert!(dave.groups().unwrap().is_empty());

            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(warnings(&got).is_empty(), "{got:?}");
                assert!(got.iter().all(|e| !e.text.contains("joined")), "{got:?}");
                assert_eq!(roster(client, "team").len(), 3);
            }
            still_works(&mut t.alice, &mut t.bob, "still here").await;
            // The group gets no link back: publishing is refused too.
            let err = t.alice.create_invite_link("team").await.unwrap_err();
            assert!(err.to_string().contains("closed by the server's operator"), "{err}");
        })
        .await;
    }
}

on_each_backend! {
    /// A link with a wrong secret, and a GroupInfo Mallory (a member)
    /// overwrote with garbage: the join fails clearly, and nothing is
    /// joined. The next member's commit publishes a good one again.
    async fn a_tampered_group_info_or_a_wrong_secret_fails_clearly(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let link = t.alice.create_invite_link("team").await.unwrap();
            let (mut dave, _d) = register(&t.deployment.url(), "dave").await;
            let mut wrong = link.clone();
            let last = wrong.pop().unwrap();
            wrong.push(if last == '0' { '1' } else { '0' });
            let err = dave.join_invite_link(&wrong).await.unwrap_err();
            assert!(err.to_string().contains("does not open"), "{err}");
            assert!(dave.groups().unwrap().is_empty());

            t.mallory.sync().await;
            let group_id = t.group.group_id().as_slice().to_vec();
            t.group = t.mallory.load(&group_id);
            let publish = v1::PublishGroupInfo {
                group_id: group_id.clone(),
                link_id: parse_link(&link).id().to_vec(),
                epoch: t.group.epoch().as_u64(),
                sealed_group_info: vec![0x42; 300],
                send_token: t.mallory.capability(&t.group),
            };
            t.mallory
                .request(client_frame::Body::PublishGroupInfo(publish))
                .await
                .unwrap();
            let err = dave.join_invite_link(&link).await.unwrap_err();
            assert!(err.to_string().contains("does not open"), "{err}");
            assert!(dave.groups().unwrap().is_empty());

            t.alice.update_keys("team").await.unwrap();
            dave.join_invite_link(&link).await.unwrap();
            let got = t.bob.sync().await.unwrap();
            assert!(got.iter().any(|e| e.text == "dave joined by invite link"), "{got:?}");
            still_works(&mut t.bob, &mut dave, "hello dave").await;
        })
        .await;
    }
}

on_each_backend! {
    /// Mallory (a member, not an admin) binds a link id of her own to the
    /// group (the server checks only her capability) and hands Eve the
    /// GroupInfo: the server accepts Eve's external commit, but the group's
    /// policy names no open link, so every member refuses it.
    async fn members_refuse_an_external_commit_to_a_group_without_an_open_link(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let group_id = t.group.group_id().as_slice().to_vec();
            let fake = [9u8; 16];
            let publish = v1::PublishGroupInfo {
                group_id: group_id.clone(),
                link_id: fake.to_vec(),
                epoch: t.group.epoch().as_u64(),
                sealed_group_info: vec![1; 64],
                send_token: t.mallory.capability(&t.group),
            };
            t.mallory
                .request(client_frame::Body::PublishGroupInfo(publish))
                .await
                .unwrap();
            let info = t
                .group
                .export_group_info(t.mallory.provider.crypto(), &t.mallory.account.device, true)
                .unwrap();
            let mut eve = Mallory::register(&t.deployment.url(), "eve").await;
            let join = eve.external_commit(&info);
            eve.submit_join(&fake, &join).await.unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(
                    warnings(&got)
                        .iter()
                        .any(|w| w.contains("eve") && w.contains("no open invite link")),
                    "{got:?}"
                );
                assert!(got.iter().all(|e| !e.text.contains("joined")), "{got:?}");
                // The conversation stopped (as for any refused commit),
                // without eve in it.
                assert!(client.members("team").is_err() || roster(client, "team").iter().all(|(u, _)| u != "eve"));
            }
        })
        .await;
    }
}

on_each_backend! {
    /// Eve joins by a real link with a device the key log does not list
    /// for her (a server could plant one): every member refuses it as a
    /// ghost, naming her.
    async fn a_joiner_whose_device_is_not_in_the_key_log_is_refused(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let link = t.alice.create_invite_link("team").await.unwrap();
            t.bob.sync().await.unwrap();
            let mut eve = Mallory::register(&t.deployment.url(), "eve").await;
            eve.account = sotto_core::identity::Account::generate(Username::parse("eve").unwrap());
            eve.join_by_link(&parse_link(&link)).await.unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(
                    warnings(&got).iter().any(|w| w.contains("eve")),
                    "{got:?}"
                );
                assert!(got.iter().all(|e| !e.text.contains("joined")), "{got:?}");
                // The conversation stopped (as for any refused commit),
                // without eve in it.
                assert!(client.members("team").is_err() || roster(client, "team").iter().all(|(u, _)| u != "eve"));
            }
        })
        .await;
    }
}

on_each_backend! {
    /// Alice (an admin) closes the link herself: a join built before is for
    /// an old epoch, which the server refuses; a GroupInfo Mallory leaks
    /// lets Eve build a current one, which the server accepts (its row is
    /// still open) but every member refuses: the policy names no link.
    async fn after_an_admin_closes_the_link_members_refuse_joiners_by_it(deployment) {
        within(async {
            let mut t = admin_team(deployment, false).await;
            let link = t.alice.create_invite_link("team").await.unwrap();
            let parsed = parse_link(&link);
            let mut eve = Mallory::register(&t.deployment.url(), "eve").await;
            let info = eve.fetch_group_info(&parsed.id()).await.unwrap();
            let early = eve.build_join(&parsed, &info);
            let err = t.bob.close_invite_link("team").await.unwrap_err();
            assert!(err.to_string().contains("only an admin"), "{err}");
            assert!(t.alice.close_invite_link("team").await.unwrap());
            assert!(!t.alice.close_invite_link("team").await.unwrap());

            let err = eve.submit_join(&parsed.id(), &early).await.unwrap_err();
            assert!(
                matches!(&err, sotto_client::ClientError::Server(e)
                    if e.code == ErrorCode::StaleEpoch as i32),
                "{err}"
            );
            let (mut dave, _d) = register(&t.deployment.url(), "dave").await;
            let err = dave.join_invite_link(&link).await.unwrap_err();
            assert!(err.to_string().contains("out of date"), "{err}");

            t.mallory.sync().await;
            let group_id = t.group.group_id().as_slice().to_vec();
            t.group = t.mallory.load(&group_id);
            let leaked = t
                .group
                .export_group_info(t.mallory.provider.crypto(), &t.mallory.account.device, true)
                .unwrap();
            let mut zed = Mallory::register(&t.deployment.url(), "zed").await;
            let join = zed.external_commit(&leaked);
            zed.submit_join(&parsed.id(), &join).await.unwrap();
            for client in [&mut t.alice, &mut t.bob] {
                let got = client.sync().await.unwrap();
                assert!(
                    warnings(&got)
                        .iter()
                        .any(|w| w.contains("zed") && w.contains("no open invite link")),
                    "{got:?}"
                );
                // The conversation stopped (as for any refused commit),
                // without zed in it.
                assert!(client.members("team").is_err() || roster(client, "team").iter().all(|(u, _)| u != "zed"));
            }
        })
        .await;
    }
}
