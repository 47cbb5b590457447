//! `sotto audit URL` over the network (issue #13 item 5): it audits the key
//! directory's append-only proofs, from the empty directory or from the
//! epoch a previous audit reached, and receives no username; a server that
//! tampers with one epoch's proof is named by epoch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::sync::{Arc, Mutex};

use sotto_client::{ClientError, Trust, audit_directory};
use sotto_proto::Message as _;
use sotto_proto::v1::{ServerFrame, client_frame, response, server_frame};
use sotto_testkit::{ConnView, HostileProxy, TestServer, register, within};

/// Names no test elsewhere uses, to look for in what the auditor received.
const DISTINCTIVE: [&str; 3] = ["quokkazanzibar", "marmalade.ferret", "xylophone_otter"];

/// A proxy that passes everything on and keeps a copy of every byte the
/// server sent.
async fn recording(server: &TestServer) -> (HostileProxy, Arc<Mutex<Vec<u8>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = HostileProxy::start(&server.url(), {
        let seen = Arc::clone(&seen);
        move |_: &ConnView, frame: ServerFrame| {
            seen.lock().unwrap().extend(frame.encode_to_vec());
            Some(frame)
        }
    })
    .await;
    (proxy, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn an_audit_checks_every_epoch_resumes_and_receives_no_username() {
    within(async {
        let server = TestServer::start().await;
        let mut accounts = Vec::new();
        for name in DISTINCTIVE {
            accounts.push(register(&server.url(), name).await);
        }
        let (proxy, seen) = recording(&server).await;
        let trust = Trust::web_roots();

        let first = audit_directory(&proxy.url(), &trust, None, None)
            .await
            .unwrap();
        assert_eq!(first.audited_from, 0);
        assert!(first.epochs >= 1);

        // More accounts, more epochs: the next audit starts where the
        // first stopped and checks only the new epochs.
        accounts.push(register(&server.url(), "newcomer").await);
        let second = audit_directory(&proxy.url(), &trust, None, Some(first.reached()))
            .await
            .unwrap();
        assert_eq!(second.audited_from, first.epochs);
        assert!(second.epochs > first.epochs);

        // Everything the server sent the auditor, as bytes: no username,
        // not even a prefix of one.
        let bytes = seen.lock().unwrap().clone();
        assert!(!bytes.is_empty());
        for name in DISTINCTIVE.iter().chain(&["newcomer"]) {
            assert!(
                !contains(&bytes, &name.as_bytes()[..6]),
                "{name} reached the auditor"
            );
        }
        // The recorder is not blind: an account's key log (whose entries
        // name the account) through it carries the name.
        let addr = proxy.url().rsplit('/').next().unwrap().parse().unwrap();
        let mut raw = sotto_testkit::wire::Client::connect(addr).await;
        raw.request(client_frame::Body::GetAccountLog(
            sotto_proto::v1::GetAccountLog {
                username: DISTINCTIVE[0].into(),
            },
        ))
        .await;
        assert!(contains(&seen.lock().unwrap(), DISTINCTIVE[0].as_bytes()));

        // A resumed audit from a root the server no longer shows for that
        // epoch is a fork.
        let forged = sotto_client::AuditedEpoch {
            epoch: first.epochs,
            root: [3; 32],
        };
        match audit_directory(&proxy.url(), &trust, None, Some(forged)).await {
            Err(ClientError::KeyLog(message)) => {
                assert!(message.contains("forked"), "{message}");
                assert!(
                    message.contains(&format!("epoch {}", first.epochs)),
                    "{message}"
                );
            }
            other => panic!("expected a fork, got {other:?}"),
        }
    })
    .await;
}

/// The server sends a proof with one flipped byte for the step from epoch
/// 2 to 3 (as a damaged or doctored stored epoch would): the audit fails
/// and names that step, even when the epochs were asked for together.
#[tokio::test]
async fn a_flipped_byte_in_one_epochs_proof_is_named() {
    within(async {
        let server = TestServer::start().await;
        let mut accounts = Vec::new();
        for i in 0..5 {
            accounts.push(register(&server.url(), &format!("member{i}")).await);
            // Each registration its own epoch.
            let mut raw = server.connect().await;
            raw.request(client_frame::Body::GetDirectoryEpoch(
                sotto_proto::v1::GetDirectoryEpoch {},
            ))
            .await;
        }
        let proxy =
            HostileProxy::start(&server.url(), |view: &ConnView, mut frame: ServerFrame| {
                if let Some(client_frame::Body::GetDirectoryAudit(asked)) = &view.request
                    && asked.from_epoch <= 2
                    && asked.to_epoch >= 3
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::DirectoryAudit(audit)) = &mut r.result
                {
                    let middle = audit.proof.len() / 2;
                    audit.proof[middle] ^= 1;
                }
                Some(frame)
            })
            .await;
        let honest = audit_directory(&server.url(), &Trust::web_roots(), None, None)
            .await
            .unwrap();
        assert!(honest.epochs >= 4, "{honest:?}");
        match audit_directory(&proxy.url(), &Trust::web_roots(), None, None).await {
            Err(ClientError::KeyLog(message)) => {
                assert!(message.contains("epoch 2 to 3"), "{message}");
            }
            other => panic!("expected the audit to fail, got {other:?}"),
        }
        // Resuming after the bad step passes: only epochs 3 onwards.
        let resumed = audit_directory(
            &proxy.url(),
            &Trust::web_roots(),
            None,
            Some(sotto_client::AuditedEpoch {
                epoch: 3,
                root: epoch_root(&server, 3).await,
            }),
        )
        .await
        .unwrap();
        assert_eq!(resumed.epochs, honest.epochs);
    })
    .await;
}

/// The root of `epoch` as the server states it.
async fn epoch_root(server: &TestServer, epoch: u64) -> [u8; 32] {
    let mut raw = server.connect().await;
    let response = raw
        .request(client_frame::Body::GetDirectoryAudit(
            sotto_proto::v1::GetDirectoryAudit {
                from_epoch: epoch,
                to_epoch: epoch + 1,
                offset: 0,
            },
        ))
        .await;
    match response.result {
        Some(response::Result::DirectoryAudit(audit)) => {
            audit.roots[0].as_slice().try_into().unwrap()
        }
        other => panic!("expected an audit, got {other:?}"),
    }
}
