//! The verification functions, each forgery failing with its own reason.

use super::*;
use crate::content::{AppContent, Body, Text};
use crate::identity::{DeviceId, DeviceKey, MemberId, Username};

const GROUP_A: &[u8] = b"group a";
const GROUP_B: &[u8] = b"group b";

struct World {
    server: SigningKey,
    bob: DeviceKey,
    bob_id: MemberId,
    carol: DeviceKey,
    carol_id: MemberId,
}

fn world() -> World {
    World {
        server: SigningKey::from_bytes(&[3; 32]),
        bob: DeviceKey::generate(),
        bob_id: MemberId {
            username: Username::parse("bob").unwrap(),
            device_id: DeviceId::random(),
        },
        carol: DeviceKey::generate(),
        carol_id: MemberId {
            username: Username::parse("carol").unwrap(),
            device_id: DeviceId::random(),
        },
    }
}

fn text(text: &str) -> AppContent {
    AppContent {
        id: vec![1; 16],
        sent_at_ms: 1_700_000_000_000,
        body: Some(Body::Text(Text { text: text.into() })),
        log_head: None,
        padding: vec![0; 40],
        franking: None,
    }
}

/// Bob sends `content` to `group`; the server accepts it at `at`; a
/// receiver checks it. Returns what the receiver keeps and the aad.
fn deliver(w: &World, group: &[u8], content: AppContent, at: u64) -> (Evidence, Vec<u8>) {
    let sealed = seal(&w.bob, group, &content, rand::random());
    let received = AppContent {
        franking: Some(sealed.franking),
        ..content
    };
    let tag = tag_from_aad(&sealed.aad).unwrap();
    let frank = Frank {
        signature: sign_frank(&w.server, &tag, group, at),
        accepted_at_ms: at,
    };
    let evidence = check_received(
        &sealed.aad,
        group,
        &received,
        &w.bob.public(),
        Some(&frank),
        Some(&w.server.verifying_key()),
    )
    .unwrap();
    (evidence, sealed.aad)
}

fn genuine(w: &World) -> AbuseReport {
    let (evidence, _) = deliver(w, GROUP_A, text("buy cheap pills"), 1000);
    report(&evidence, GROUP_A, &w.bob_id, ReportReason::Spam, "again")
}

#[test]
fn a_genuine_report_verifies_and_names_the_sender() {
    let w = world();
    let report = genuine(&w);
    assert_eq!(report.sender_username, "bob");
    assert_eq!(report.sender_device_id, w.bob_id.device_id.as_bytes());
    let verified = verify_report(&report, &w.server.verifying_key(), &w.bob.public()).unwrap();
    assert_eq!(verified.group_id, GROUP_A);
    assert_eq!(verified.accepted_at_ms, 1000);
    assert!(matches!(verified.content.body, Some(Body::Text(t)) if t.text == "buy cheap pills"));
    // Padding is not franked: the report carries no more than the content.
    assert!(verified.content.padding.is_empty());
}

#[test]
fn changed_text_fails_as_changed_content() {
    let w = world();
    let mut report = genuine(&w);
    let (_, other) = deliver(&w, GROUP_A, text("something else"), 1000);
    let _ = other;
    report.content = franked_content(GROUP_A, &text("I will hurt you")).to_vec();
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::ContentChanged)
    );
}

#[test]
fn a_changed_sender_fails_as_not_the_signer() {
    let w = world();
    let mut report = genuine(&w);
    report.sender_username = w.carol_id.username.as_str().into();
    report.sender_device_id = w.carol_id.device_id.as_bytes().to_vec();
    // The operator looks up Carol's logged device key.
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.carol.public()),
        Err(ReportRejected::SenderNotSigner)
    );
}

#[test]
fn a_changed_time_fails_as_an_invalid_frank() {
    let w = world();
    let mut report = genuine(&w);
    report.accepted_at_ms += 3_600_000;
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::FrankInvalid)
    );
}

/// Mallory copies Bob's tag from group A into her own message in group B
/// (the AAD is hers to choose), gets a genuine frank for (tag, B), and
/// reports Bob's content as sent in B.
#[test]
fn a_frank_from_another_group_fails_as_another_group() {
    let w = world();
    let mut report = genuine(&w);
    let tag: [u8; 32] = report.tag.as_slice().try_into().unwrap();
    report.frank = sign_frank(&w.server, &tag, GROUP_B, 2000).to_vec();
    report.group_id = GROUP_B.to_vec();
    report.accepted_at_ms = 2000;
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::OtherGroup)
    );
    // Claiming group A with B's frank is a frank that does not verify.
    report.group_id = GROUP_A.to_vec();
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::FrankInvalid)
    );
}

/// The server signs anything it likes, but it never sees content or salt:
/// a frank over content of its own invention names no sender, and Bob's
/// real tag cannot be matched with other content.
#[test]
fn the_server_cannot_forge_a_report_for_content_it_never_saw() {
    let w = world();
    let real = genuine(&w);
    // Its own content, salt and tag, franked, blamed on Bob.
    let salt = [5; 32];
    let content = franked_content(GROUP_A, &text("forged")).to_vec();
    let forged_tag = tag(&salt, &content);
    let mut forged = real.clone();
    forged.content = content;
    forged.salt = salt.to_vec();
    forged.tag = forged_tag.to_vec();
    forged.frank = sign_frank(&w.server, &forged_tag, GROUP_A, 1000).to_vec();
    assert_eq!(
        verify_report(&forged, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::SenderNotSigner)
    );
    // Bob's real tag and signature, other content: no salt makes it match.
    let mut forged = real;
    forged.content = franked_content(GROUP_A, &text("forged")).to_vec();
    assert_eq!(
        verify_report(&forged, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::ContentChanged)
    );
    // And another server's frank is not ours.
    let other = SigningKey::from_bytes(&[4; 32]);
    assert_eq!(
        verify_report(&genuine(&w), &other.verifying_key(), &w.bob.public()),
        Err(ReportRejected::FrankInvalid)
    );
}

#[test]
fn oversized_and_truncated_fields_are_refused_clearly() {
    let w = world();
    let mut report = genuine(&w);
    report.note = "x".repeat(MAX_NOTE_BYTES + 1);
    assert!(matches!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::TooLarge(_))
    ));
    let mut report = genuine(&w);
    report.content = vec![0; MAX_REPORT_CONTENT_BYTES + 1];
    assert_eq!(
        check_report_size(&report),
        Err(ReportRejected::TooLarge("content"))
    );
    let mut report = genuine(&w);
    report.frank.truncate(10);
    assert_eq!(
        verify_report(&report, &w.server.verifying_key(), &w.bob.public()),
        Err(ReportRejected::Malformed("frank"))
    );
}

/// A malicious member's message with a wrong or missing tag, salt or
/// signature is detected by the receiver, never a panic.
#[test]
fn a_receiver_marks_badly_franked_messages_unreportable() {
    let w = world();
    let content = text("hello");
    let sealed = seal(&w.bob, GROUP_A, &content, [1; 32]);
    let good_tag = tag_from_aad(&sealed.aad).unwrap();
    let frank = Frank {
        signature: sign_frank(&w.server, &good_tag, GROUP_A, 10),
        accepted_at_ms: 10,
    };
    let key = w.server.verifying_key();
    let received = AppContent {
        franking: Some(sealed.franking.clone()),
        ..content.clone()
    };
    let check = |aad: &[u8], content: &AppContent, sender: &[u8; 32], frank: Option<&Frank>| {
        check_received(aad, GROUP_A, content, sender, frank, Some(&key)).map(|_| ())
    };
    assert_eq!(
        check(&sealed.aad, &received, &w.bob.public(), Some(&frank)),
        Ok(())
    );
    assert_eq!(
        check(&[], &received, &w.bob.public(), Some(&frank)),
        Err(Unreportable::NoTag)
    );
    assert_eq!(
        check(
            &[AAD_VERSION, 1, 2],
            &received,
            &w.bob.public(),
            Some(&frank)
        ),
        Err(Unreportable::NoTag)
    );
    assert_eq!(
        check(&aad(&[9; 32]), &received, &w.bob.public(), Some(&frank)),
        Err(Unreportable::TagMismatch)
    );
    assert_eq!(
        check(&sealed.aad, &content, &w.bob.public(), Some(&frank)),
        Err(Unreportable::NoSalt)
    );
    // A tag over other content than what was sent.
    let lying = seal(&w.bob, GROUP_A, &text("other"), [1; 32]);
    assert_eq!(
        check(&lying.aad, &received, &w.bob.public(), Some(&frank)),
        Err(Unreportable::TagMismatch)
    );
    // Signed by someone else than the MLS sender.
    assert_eq!(
        check(&sealed.aad, &received, &w.carol.public(), Some(&frank)),
        Err(Unreportable::BadSenderSignature)
    );
    assert_eq!(
        check(&sealed.aad, &received, &w.bob.public(), None),
        Err(Unreportable::NoFrank)
    );
    let late = Frank {
        accepted_at_ms: 11,
        ..frank.clone()
    };
    assert_eq!(
        check(&sealed.aad, &received, &w.bob.public(), Some(&late)),
        Err(Unreportable::BadFrank)
    );
    // Franked for another group.
    assert_eq!(
        check_received(
            &sealed.aad,
            GROUP_B,
            &received,
            &w.bob.public(),
            Some(&frank),
            Some(&key)
        )
        .map(|_| ()),
        Err(Unreportable::TagMismatch)
    );
    assert_eq!(
        check_received(
            &sealed.aad,
            GROUP_A,
            &received,
            &w.bob.public(),
            Some(&frank),
            None
        )
        .map(|_| ()),
        Err(Unreportable::NoFrankingKey)
    );
}

#[test]
fn the_franking_key_is_vouched_for_by_the_log_key() {
    let log = SigningKey::from_bytes(&[1; 32]);
    let franking = SigningKey::from_bytes(&[2; 32]);
    let key = franking.verifying_key().to_bytes().to_vec();
    let vouched = sotto_proto::v1::FrankingKey {
        log_signature: log.sign(&franking_key_transcript(&key)).to_bytes().to_vec(),
        key,
    };
    assert_eq!(
        verify_franking_key(&log.verifying_key(), &vouched),
        Some(franking.verifying_key())
    );
    let other_log = SigningKey::from_bytes(&[9; 32]);
    assert_eq!(
        verify_franking_key(&other_log.verifying_key(), &vouched),
        None
    );
}

/// Salts are per message: the same text twice gives two tags.
#[test]
fn fresh_salts_give_fresh_tags() {
    let w = world();
    let a = seal(&w.bob, GROUP_A, &text("hi"), [1; 32]);
    let b = seal(&w.bob, GROUP_A, &text("hi"), [2; 32]);
    assert_ne!(a.aad, b.aad);
}
