//! Unit tests of the MLS operations and of the group policy.

use super::*;
use crate::identity::IdentityKey;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_proto::v1::ClaimedKeyPackage;

struct Device {
    account: Account,
    provider: OpenMlsRustCrypto,
}

fn device(name: &str) -> Device {
    Device {
        account: Account::generate(Username::parse(name).unwrap()),
        provider: OpenMlsRustCrypto::default(),
    }
}

fn claim(d: &Device) -> CheckedKeyPackage {
    let claimed = ClaimedKeyPackage {
        device: Some(d.account.signed_device()),
        key_package: new_key_package(&d.provider, &d.account, false).unwrap(),
    };
    check_key_package(
        &d.provider,
        &d.account.username,
        &d.account.identity_public(),
        &claimed,
    )
    .unwrap()
}

/// Lists exactly the given devices' keys.
struct Directory(Vec<(MemberId, [u8; 32])>);

impl Directory {
    fn of(devices: &[&Device]) -> Self {
        Self(
            devices
                .iter()
                .map(|d| (d.account.member_id(), d.account.device.public()))
                .collect(),
        )
    }
}

impl KeyDirectory for Directory {
    fn check(&self, member: &MemberId, key: &[u8]) -> KeyCheck {
        match self.0.iter().find(|(m, _)| m.username == member.username) {
            None => KeyCheck::Unknown,
            Some(_) => match self.0.iter().find(|(m, _)| m == member) {
                Some((_, k)) if k.as_slice() == key => KeyCheck::Listed,
                _ => KeyCheck::Refused("not in the log".into()),
            },
        }
    }
}

fn accept(d: &Device, group: &mut MlsGroup) {
    merge_pending(&d.provider, group).unwrap();
}

#[test]
fn create_add_talk_remove() {
    let (a, b, c) = (device("anna"), device("ben"), device("cleo"));
    let dir = Directory::of(&[&a, &b, &c]);
    let mut group = create_group(&a.provider, &a.account).unwrap();
    let pending = add_members(
        &a.provider,
        &mut group,
        &a.account.device,
        &[claim(&b), claim(&c)],
    )
    .unwrap();
    assert_eq!(pending.epoch, 0);
    assert!(pending.recipients.is_empty());
    assert_eq!(
        pending.welcome_recipients,
        vec![b.account.device_id, c.account.device_id]
    );
    accept(&a, &mut group);
    let welcome = pending.welcome.unwrap();
    for d in [&b, &c] {
        assert!(
            matches!(process(&d.provider, &welcome, &dir).unwrap(), Inbound::Joined { members, .. } if members.len() == 3)
        );
    }

    let hello = encrypt(&a.provider, &mut group, &a.account.device, b"hello").unwrap();
    for d in [&b, &c] {
        match process(&d.provider, &hello, &dir).unwrap() {
            Inbound::Application {
                plaintext, sender, ..
            } => {
                assert_eq!(plaintext, b"hello");
                assert_eq!(sender, a.account.member_id());
            }
            other => panic!("{other:?}"),
        }
    }

    let pending = remove_user(
        &a.provider,
        &mut group,
        &a.account.device,
        &c.account.username,
    )
    .unwrap();
    // The send capability is a secret towards outsiders: not in Debug.
    assert!(!pending.send_token.is_empty());
    let shown = format!("{pending:?}");
    assert!(
        !shown.contains(&format!("{:?}", pending.send_token)),
        "{shown}"
    );
    assert!(
        !shown.contains(&hex::encode(&pending.send_token)),
        "{shown}"
    );
    assert_eq!(
        pending.recipients.len(),
        3,
        "every member, the committer and the removed member included"
    );
    accept(&a, &mut group);
    match process(&c.provider, &pending.commit, &dir).unwrap() {
        Inbound::Commit { self_removed, .. } => assert!(self_removed),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(process(&b.provider, &pending.commit, &dir).unwrap(), Inbound::Commit { change, .. } if change.removed == vec![c.account.member_id()])
    );

    let secret = encrypt(&a.provider, &mut group, &a.account.device, b"after removal").unwrap();
    assert!(process(&c.provider, &secret, &dir).is_err());
    assert!(
        matches!(process(&b.provider, &secret, &dir).unwrap(), Inbound::Application { plaintext, .. } if plaintext == b"after removal")
    );
}

/// The last-resort KeyPackage is what keeps a device addable when its pool
/// is empty or a flood of claims is past its rate: a claimer must accept it,
/// and more than once.
#[test]
fn a_last_resort_key_package_is_accepted_by_claimers() {
    let d = device("lara");
    let claimed = ClaimedKeyPackage {
        device: Some(d.account.signed_device()),
        key_package: new_key_package(&d.provider, &d.account, true).unwrap(),
    };
    for _ in 0..2 {
        let checked = check_key_package(
            &d.provider,
            &d.account.username,
            &d.account.identity_public(),
            &claimed,
        )
        .unwrap();
        assert!(checked.key_package.last_resort());
    }
}

#[test]
fn key_package_must_match_certified_device() {
    let (b, mallory) = (device("ben"), device("mallory"));
    // Mallory's KeyPackage presented under Ben's certificate.
    let claimed = ClaimedKeyPackage {
        device: Some(b.account.signed_device()),
        key_package: new_key_package(&mallory.provider, &mallory.account, false).unwrap(),
    };
    let err = check_key_package(
        &b.provider,
        &b.account.username,
        &b.account.identity_public(),
        &claimed,
    );
    assert!(matches!(err, Err(GroupError::PeerMisbehaved(_))), "{err:?}");
    // Ben's real KeyPackage but a certificate signed by someone else.
    let other = IdentityKey::generate();
    let claimed = ClaimedKeyPackage {
        device: Some(b.account.signed_device()),
        key_package: new_key_package(&b.provider, &b.account, false).unwrap(),
    };
    assert!(
        check_key_package(&b.provider, &b.account.username, &other.public(), &claimed).is_err()
    );
    // And asking for "ben" but getting mallory's genuine device is refused.
    let claimed = ClaimedKeyPackage {
        device: Some(mallory.account.signed_device()),
        key_package: new_key_package(&mallory.provider, &mallory.account, false).unwrap(),
    };
    assert!(
        check_key_package(
            &b.provider,
            &b.account.username,
            &mallory.account.identity_public(),
            &claimed
        )
        .is_err()
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let d = device("dora");
    let dir = Directory::of(&[&d]);
    for junk in [&b""[..], b"\x00\x01", &[0xff; 64]] {
        assert!(process(&d.provider, junk, &dir).is_err());
    }
}

#[test]
fn members_missing_from_the_log_are_refused() {
    let (a, b, c, ghost) = (
        device("anna"),
        device("ben"),
        device("cleo"),
        device("ghost"),
    );
    let mut group = create_group(&a.provider, &a.account).unwrap();
    let (b_kp, c_kp) = (claim(&b), claim(&c));
    let pending = add_members(&a.provider, &mut group, &a.account.device, &[b_kp, c_kp]).unwrap();
    accept(&a, &mut group);
    let welcome = pending.welcome.unwrap();
    // Ben has not looked up anna and cleo yet: he is told to. (The real
    // client rolls back its transaction and retries after the lookup.)
    let err = process(&b.provider, &welcome, &Directory::of(&[&b])).unwrap_err();
    assert!(
        matches!(&err, GroupError::Unverified(users) if users.len() == 2),
        "{err:?}"
    );
    process(&c.provider, &welcome, &Directory::of(&[&a, &b, &c])).unwrap();

    // Anna adds a device whose key the log does not list.
    let pending =
        add_members(&a.provider, &mut group, &a.account.device, &[claim(&ghost)]).unwrap();
    accept(&a, &mut group);
    let mut lying = Directory::of(&[&a, &b, &c]);
    lying.0.push((ghost.account.member_id(), [9; 32]));
    let err = process(&c.provider, &pending.commit, &lying).unwrap_err();
    assert!(
        matches!(&err, GroupError::Ghost(reason) if reason.contains("ghost")),
        "{err:?}"
    );
}

/// Anna, Ben and Cleo in one group, everyone at epoch 1.
fn trio() -> (Device, Device, Device, Directory, MlsGroup) {
    let (a, b, c) = (device("anna"), device("ben"), device("cleo"));
    let dir = Directory::of(&[&a, &b, &c]);
    let mut group = create_group(&a.provider, &a.account).unwrap();
    let pending = add_members(
        &a.provider,
        &mut group,
        &a.account.device,
        &[claim(&b), claim(&c)],
    )
    .unwrap();
    accept(&a, &mut group);
    let welcome = pending.welcome.unwrap();
    for d in [&b, &c] {
        process(&d.provider, &welcome, &dir).unwrap();
    }
    (a, b, c, dir, group)
}

#[test]
fn a_commit_whose_author_relabels_itself_is_refused() {
    let (_a, b, c, dir, group) = trio();
    let mut ben = load(&b.provider, group.group_id().as_slice()).unwrap();
    // Ben's new leaf claims to be Cleo's device (with his own key).
    let as_cleo = LeafNodeParameters::builder()
        .with_credential_with_key(CredentialWithKey {
            credential: c.account.member_id().to_credential(),
            signature_key: b.account.device.public().to_vec().into(),
        })
        .build();
    let bundle = ben
        .self_update(&b.provider, &b.account.device, as_cleo)
        .unwrap();
    let commit = serialize(bundle.commit()).unwrap();
    let err = process(&c.provider, &commit, &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::PolicyViolation { committer, what }
            if committer.username.as_str() == "ben" && what.contains("another device")),
        "{err:?}"
    );
}

#[test]
fn only_a_members_own_leave_is_kept_as_a_proposal() {
    let (_a, b, c, dir, group) = trio();
    let group_id = group.group_id().to_vec();
    let mut ben = load(&b.provider, &group_id).unwrap();
    let cleo_leaf = ben
        .members()
        .find(|m| m.credential == c.account.member_id().to_credential())
        .unwrap()
        .index;
    let (remove_cleo, _) = ben
        .propose_remove_member(&b.provider, &b.account.device, cleo_leaf)
        .unwrap();
    let err = process(&c.provider, &serialize(&remove_cleo).unwrap(), &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::ProposalRefused { member, .. } if member.username.as_str() == "ben"),
        "{err:?}"
    );
    let cleo = load(&c.provider, &group_id).unwrap();
    assert_eq!(cleo.pending_proposals().count(), 0);

    let leaving = leave(&b.provider, &mut ben, &b.account.device).unwrap();
    match process(&c.provider, &leaving, &dir).unwrap() {
        Inbound::Proposal { leaving, .. } => {
            assert_eq!(leaving, Some(b.account.member_id()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_servers_framing_reader_agrees_with_openmls() {
    use sotto_proto::mls_framing::{ContentType, Framing};
    let (a, b, _c, _dir, mut group) = trio();
    let hello = encrypt(&a.provider, &mut group, &a.account.device, b"hi").unwrap();
    let framed = |bytes: &[u8]| Framing::parse(bytes).unwrap();
    let group_id = group.group_id().to_vec();
    assert_eq!(
        framed(&hello),
        Framing::Group {
            group_id: group_id.clone(),
            epoch: 1,
            content_type: ContentType::Application,
            encrypted: true
        }
    );
    let pending = update_keys(&a.provider, &mut group, &a.account.device).unwrap();
    assert!(matches!(
        framed(&pending.commit),
        Framing::Group { epoch: 1, content_type: ContentType::Commit, ref group_id, .. } if *group_id == group.group_id().to_vec()
    ));
    let mut ben = load(&b.provider, &group_id).unwrap();
    let leaving = leave(&b.provider, &mut ben, &b.account.device).unwrap();
    assert!(matches!(
        framed(&leaving),
        Framing::Group {
            content_type: ContentType::Proposal,
            ..
        }
    ));
    let d = device("dora");
    let mut fresh = create_group(&a.provider, &a.account).unwrap();
    let added = add_members(&a.provider, &mut fresh, &a.account.device, &[claim(&d)]).unwrap();
    assert_eq!(framed(&added.welcome.unwrap()), Framing::Welcome);
    assert!(matches!(
        framed(&new_key_package(&d.provider, &d.account, false).unwrap()),
        Framing::KeyPackage
    ));
}

#[test]
fn commits_and_welcomes_are_padded_so_their_size_hides_the_group_size() {
    // Sizes are powers of two, so they tell a group's size only to within a
    // factor of two: adding two or three members to a group of one (3 or 4
    // members), or four to six (5 to 7), looks the same.
    let mut sizes = Vec::new();
    for others in [2, 3, 4, 5, 6] {
        let a = device("anna");
        let joiners: Vec<Device> = (0..others).map(|i| device(&format!("member{i}"))).collect();
        let mut group = create_group(&a.provider, &a.account).unwrap();
        let claimed: Vec<CheckedKeyPackage> = joiners.iter().map(claim).collect();
        let pending = add_members(&a.provider, &mut group, &a.account.device, &claimed).unwrap();
        let welcome = pending.welcome.clone().unwrap();
        assert!(welcome.len().is_power_of_two(), "{}", welcome.len());
        assert!(
            pending.commit.len().is_power_of_two(),
            "{}",
            pending.commit.len()
        );
        accept(&a, &mut group);
        // The padded Welcome still joins.
        let mut devices: Vec<&Device> = joiners.iter().collect();
        devices.push(&a);
        let dir = Directory::of(&devices);
        assert!(matches!(
            process(&joiners[0].provider, &welcome, &dir).unwrap(),
            Inbound::Joined { .. }
        ));
        sizes.push((welcome.len(), pending.commit.len()));
    }
    let (welcomes, commits): (Vec<usize>, Vec<usize>) = sizes.iter().copied().unzip();
    // Measured: Welcomes 2048 for 3–4 members, 4096 for 5–7; commits 2048
    // for 3–5, 4096 for 6–7.
    assert!(
        welcomes[0] == welcomes[1] && welcomes[2..].iter().all(|w| *w == welcomes[2]),
        "{sizes:?}"
    );
    assert!(
        commits[..3].iter().all(|c| *c == commits[0]) && commits[3] == commits[4],
        "{sizes:?}"
    );
}

#[test]
fn only_zeros_may_follow_a_message() {
    let a = device("anna");
    let key_package = new_key_package(&a.provider, &a.account, false).unwrap();
    assert!(deserialize_padded(&[key_package.as_slice(), &[0; 64]].concat()).is_ok());
    assert!(deserialize_padded(&[key_package.as_slice(), &[0, 0, 7]].concat()).is_err());
    assert_eq!(pad_to_bucket(vec![1; 300]).len(), 512);
    assert_eq!(pad_to_bucket(vec![1; 10]).len(), 256);
    let too_big = sotto_proto::MAX_PAYLOAD_BYTES + 1;
    assert_eq!(pad_to_bucket(vec![1; too_big]).len(), too_big);
}

#[test]
fn application_plaintext_never_prints() {
    let inbound = Inbound::Application {
        group_id: vec![1],
        sender: device("alice").account.member_id(),
        plaintext: b"meet at the usual place".to_vec(),
        aad: Vec::new(),
        sender_key: Vec::new(),
        sender_is_admin: false,
        read_only: false,
    };
    let printed = format!("{inbound:?}");
    assert!(!printed.contains("usual"), "{printed}");
    assert!(printed.contains("plaintext_len: 23"), "{printed}");
}

/// Anna, Ben and Cleo in a group with admins that Anna created.
fn admin_trio(read_only: bool) -> (Device, Device, Device, Directory, MlsGroup) {
    let (a, b, c) = (device("anna"), device("ben"), device("cleo"));
    let dir = Directory::of(&[&a, &b, &c]);
    let mut group = create_group_with_admins(&a.provider, &a.account, read_only).unwrap();
    let pending = add_members(
        &a.provider,
        &mut group,
        &a.account.device,
        &[claim(&b), claim(&c)],
    )
    .unwrap();
    accept(&a, &mut group);
    let welcome = pending.welcome.unwrap();
    for d in [&b, &c] {
        process(&d.provider, &welcome, &dir).unwrap();
    }
    (a, b, c, dir, group)
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

#[test]
fn in_a_group_with_admins_only_an_admin_removes_or_changes_admins() {
    let (a, b, c, dir, mut group) = admin_trio(false);
    let group_id = group.group_id().to_vec();
    let mut ben = load(&b.provider, &group_id).unwrap();
    assert_eq!(
        admin_policy(&ben).unwrap(),
        Some(AdminPolicy::new(user("anna")))
    );

    // Ben (not an admin) removes Cleo: refused by Anna and Cleo.
    let pending = remove_user(&b.provider, &mut ben, &b.account.device, &user("cleo")).unwrap();
    for d in [&a, &c] {
        let err = process(&d.provider, &pending.commit, &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::PolicyViolation { committer, what }
                if committer.username.as_str() == "ben" && what.contains("only an admin")),
            "{err:?}"
        );
    }
    clear_pending(&b.provider, &mut ben).unwrap();

    // Ben makes himself an admin (set_admin_policy refuses, so by hand).
    let (commit, _, _) = ben
        .update_group_context_extensions(
            &b.provider,
            AdminPolicy::new(user("ben")).extensions().unwrap(),
            &b.account.device,
        )
        .unwrap();
    let commit = serialize(&commit).unwrap();
    for d in [&a, &c] {
        let err = process(&d.provider, &commit, &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("only an admin")),
            "{err:?}"
        );
    }
    clear_pending(&b.provider, &mut ben).unwrap();
    assert!(
        set_admin_policy(
            &b.provider,
            &mut ben,
            &b.account.device,
            &user("ben"),
            &AdminPolicy::new(user("ben"))
        )
        .is_err()
    );

    // Anna makes Ben an admin and sets the group read-only: accepted.
    let policy = AdminPolicy {
        read_only: true,
        ..AdminPolicy::new(user("anna")).with_admin(user("ben"), true)
    };
    let pending = set_admin_policy(
        &a.provider,
        &mut group,
        &a.account.device,
        &user("anna"),
        &policy,
    )
    .unwrap();
    accept(&a, &mut group);
    for d in [&b, &c] {
        assert!(matches!(
            process(&d.provider, &pending.commit, &dir).unwrap(),
            Inbound::Commit { .. }
        ));
        let g = load(&d.provider, &group_id).unwrap();
        assert_eq!(admin_policy(&g).unwrap(), Some(policy.clone()));
    }

    // Read-only: Cleo's post arrives marked as a non-admin's in a
    // read-only group; Ben's as an admin's.
    let mut cleo = load(&c.provider, &group_id).unwrap();
    let post = encrypt(&c.provider, &mut cleo, &c.account.device, b"hi").unwrap();
    assert!(matches!(
        process(&a.provider, &post, &dir).unwrap(),
        Inbound::Application {
            sender_is_admin: false,
            read_only: true,
            ..
        }
    ));
    let mut ben = load(&b.provider, &group_id).unwrap();
    let post = encrypt(&b.provider, &mut ben, &b.account.device, b"news").unwrap();
    assert!(matches!(
        process(&a.provider, &post, &dir).unwrap(),
        Inbound::Application {
            sender_is_admin: true,
            read_only: true,
            ..
        }
    ));

    // An admin removes Cleo: accepted.
    let pending = remove_user(&b.provider, &mut ben, &b.account.device, &user("cleo")).unwrap();
    assert!(matches!(
        process(&a.provider, &pending.commit, &dir).unwrap(),
        Inbound::Commit { .. }
    ));
}

#[test]
fn an_admin_cannot_smuggle_other_context_changes_or_strangers() {
    let (a, b, _c, dir, mut group) = admin_trio(false);
    // An admin list naming a non-member.
    let (commit, _, _) = group
        .update_group_context_extensions(
            &a.provider,
            AdminPolicy::new(user("anna"))
                .with_admin(user("zed"), true)
                .extensions()
                .unwrap(),
            &a.account.device,
        )
        .unwrap();
    let err = process(&b.provider, &serialize(&commit).unwrap(), &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("not a member")),
        "{err:?}"
    );
    clear_pending(&a.provider, &mut group).unwrap();
    // Dropping the admin extension altogether.
    let (commit, _, _) = group
        .update_group_context_extensions(&a.provider, Extensions::default(), &a.account.device)
        .unwrap();
    let err = process(&b.provider, &serialize(&commit).unwrap(), &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("removes the group's admins")),
        "{err:?}"
    );
}

#[test]
fn a_flat_group_never_gains_admins() {
    let (a, b, _c, dir, mut group) = trio();
    assert_eq!(admin_policy(&group).unwrap(), None);
    let extensions = AdminPolicy::new(user("anna")).extensions().unwrap();
    let (commit, _, _) = group
        .update_group_context_extensions(&a.provider, extensions, &a.account.device)
        .unwrap();
    let err = process(&b.provider, &serialize(&commit).unwrap(), &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("does not use")),
        "{err:?}"
    );
}

/// Anna (the admin of `admin_trio`) opens an invite link; every member
/// merges it. Returns the link.
fn open_invite_link(
    a: &Device,
    group: &mut MlsGroup,
    others: &[&Device],
    dir: &Directory,
) -> InviteLink {
    let link = InviteLink::from_random([0x11; 16], [0x22; 32]);
    let policy = AdminPolicy {
        invite: Some(link.clone()),
        ..admin_policy(group).unwrap().unwrap()
    };
    let pending = set_admin_policy(
        &a.provider,
        group,
        &a.account.device,
        &user("anna"),
        &policy,
    )
    .unwrap();
    accept(a, group);
    for d in others {
        process(&d.provider, &pending.commit, dir).unwrap();
    }
    link
}

/// An external commit built with openmls directly from a GroupInfo (what a
/// modified client could send without Sotto's own checks).
fn raw_external_commit(d: &Device, group: &MlsGroup, publisher: &Device) -> Vec<u8> {
    use openmls::prelude::tls_codec::DeserializeBytes as _;
    let bytes = serialize(
        &group
            .export_group_info(publisher.provider.crypto(), &publisher.account.device, true)
            .unwrap(),
    )
    .unwrap();
    let MlsMessageBodyIn::GroupInfo(info) = MlsMessageIn::tls_deserialize_exact_bytes(&bytes)
        .unwrap()
        .extract()
    else {
        panic!("a GroupInfo");
    };
    external_commit(&d.provider, &d.account, info, String::new())
        .unwrap()
        .1
        .commit
}

#[test]
fn an_invite_link_admits_a_logged_joiner_who_reads_only_new_messages() {
    let (a, b, c, _, mut group) = admin_trio(false);
    let d = device("dora");
    let dir = Directory::of(&[&a, &b, &c, &d]);
    let link = open_invite_link(&a, &mut group, &[&b, &c], &dir);
    let before = encrypt(&a.provider, &mut group, &a.account.device, b"before").unwrap();
    let sealed = sealed_group_info(&a.provider, &group, &a.account.device, "club", [5; 12])
        .unwrap()
        .unwrap();
    assert_eq!(sealed.link_id, link.id());
    let join = join_by_link(
        &d.provider,
        &d.account,
        &link,
        sealed.epoch,
        &sealed.sealed,
        &dir,
    )
    .unwrap();
    assert_eq!(join.name, "club");
    assert_eq!(join.epoch, group.epoch().as_u64());
    assert_eq!(join.recipients.len(), 3);
    assert!(!join.recipients.contains(&d.account.device_id));
    for member in [&a, &b, &c] {
        match process(&member.provider, &join.commit, &dir).unwrap() {
            Inbound::Commit { sender, change, .. } => {
                assert_eq!(sender, d.account.member_id());
                assert_eq!(change.joined, vec![d.account.member_id()]);
            }
            other => panic!("{other:?}"),
        }
    }
    // The joiner reads what is sent after it joined, not what came before.
    let mut anna = load(&a.provider, &join.group_id).unwrap();
    let after = encrypt(&a.provider, &mut anna, &a.account.device, b"after").unwrap();
    match process(&d.provider, &after, &dir).unwrap() {
        Inbound::Application { plaintext, .. } => assert_eq!(plaintext, b"after"),
        other => panic!("{other:?}"),
    }
    assert!(process(&d.provider, &before, &dir).is_err());
    // Members and joiner share the send capability of the new epoch.
    let dora = load(&d.provider, &join.group_id).unwrap();
    assert_eq!(
        token_hash(&send_token(&a.provider, &anna).unwrap()),
        join.next_token_hash
    );
    assert_eq!(
        send_token(&d.provider, &dora).unwrap(),
        send_token(&a.provider, &anna).unwrap()
    );
}

#[test]
fn a_tampered_or_wrongly_keyed_group_info_does_not_open() {
    let (a, b, c, _, mut group) = admin_trio(false);
    let d = device("dora");
    let dir = Directory::of(&[&a, &b, &c, &d]);
    let link = open_invite_link(&a, &mut group, &[&b, &c], &dir);
    let sealed = sealed_group_info(&a.provider, &group, &a.account.device, "club", [5; 12])
        .unwrap()
        .unwrap();
    let mut tampered = sealed.sealed.clone();
    if let Some(byte) = tampered.get_mut(40) {
        *byte ^= 1;
    }
    let wrong = InviteLink::from_random(link.id(), [0x33; 32]);
    for (link, bytes, epoch) in [
        (&link, &tampered, sealed.epoch),
        (&wrong, &sealed.sealed, sealed.epoch),
        (&link, &sealed.sealed, sealed.epoch + 1),
    ] {
        let err = join_by_link(&d.provider, &d.account, link, epoch, bytes, &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::PeerMisbehaved(what) if what.contains("does not open")),
            "{err:?}"
        );
    }
}

#[test]
fn a_joiner_refuses_a_group_whose_members_the_log_does_not_list() {
    let (a, b, c, dir, mut group) = admin_trio(false);
    let d = device("dora");
    let link = open_invite_link(&a, &mut group, &[&b, &c], &dir);
    let sealed = sealed_group_info(&a.provider, &group, &a.account.device, "club", [5; 12])
        .unwrap()
        .unwrap();
    // Cleo's key is not the one the joiner's log lists.
    let other_cleo = device("cleo");
    let joiner_dir = Directory::of(&[&a, &b, &other_cleo, &d]);
    let err = join_by_link(
        &d.provider,
        &d.account,
        &link,
        sealed.epoch,
        &sealed.sealed,
        &joiner_dir,
    )
    .unwrap_err();
    assert!(matches!(err, GroupError::Ghost(_)), "{err:?}");
}

#[test]
fn members_refuse_a_joiner_whose_key_the_log_does_not_list() {
    let (a, b, c, dir, mut group) = admin_trio(false);
    let d = device("dora");
    let link = open_invite_link(&a, &mut group, &[&b, &c], &dir);
    let sealed = sealed_group_info(&a.provider, &group, &a.account.device, "club", [5; 12])
        .unwrap()
        .unwrap();
    let joiner_dir = Directory::of(&[&a, &b, &c, &d]);
    let join = join_by_link(
        &d.provider,
        &d.account,
        &link,
        sealed.epoch,
        &sealed.sealed,
        &joiner_dir,
    )
    .unwrap();
    // Not looked up yet: the members look the account up first.
    let err = process(&b.provider, &join.commit, &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::Unverified(users) if users == &[user("dora")]),
        "{err:?}"
    );
    // The log lists another device for dora: a ghost.
    let real_dora = device("dora");
    let logged = Directory::of(&[&a, &b, &c, &real_dora]);
    let err = process(&b.provider, &join.commit, &logged).unwrap_err();
    assert!(matches!(err, GroupError::Ghost(_)), "{err:?}");
}

#[test]
fn an_external_commit_to_a_group_without_an_open_link_is_refused() {
    // A flat group and a group with admins but no link: a GroupInfo leaked
    // by a member lets an outsider build an external commit, which every
    // member refuses.
    for with_admins in [false, true] {
        let (a, b, c, _, group) = if with_admins {
            admin_trio(false)
        } else {
            trio()
        };
        let d = device("dora");
        let dir = Directory::of(&[&a, &b, &c, &d]);
        let commit = raw_external_commit(&d, &group, &a);
        for member in [&a, &b, &c] {
            let err = process(&member.provider, &commit, &dir).unwrap_err();
            assert!(
                matches!(&err, GroupError::PolicyViolation { committer, what }
                    if committer.username.as_str() == "dora" && what.contains("no open invite link")),
                "{err:?}"
            );
        }
    }
    // An admin closes the link: a GroupInfo published while it was open
    // no longer admits anyone.
    let (a, b, c, _, mut group) = admin_trio(false);
    let d = device("dora");
    let dir = Directory::of(&[&a, &b, &c, &d]);
    open_invite_link(&a, &mut group, &[&b, &c], &dir);
    let policy = AdminPolicy {
        invite: None,
        ..admin_policy(&group).unwrap().unwrap()
    };
    let pending = set_admin_policy(
        &a.provider,
        &mut group,
        &a.account.device,
        &user("anna"),
        &policy,
    )
    .unwrap();
    accept(&a, &mut group);
    for member in [&b, &c] {
        process(&member.provider, &pending.commit, &dir).unwrap();
    }
    let commit = raw_external_commit(&d, &group, &a);
    let err = process(&b.provider, &commit, &dir).unwrap_err();
    assert!(
        matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("no open invite link")),
        "{err:?}"
    );
}

#[test]
fn only_an_admin_opens_an_invite_link() {
    let (a, b, c, dir, group) = admin_trio(false);
    let mut ben = load(&b.provider, group.group_id().as_slice()).unwrap();
    let policy = AdminPolicy {
        invite: Some(InviteLink::from_random([1; 16], [2; 32])),
        ..admin_policy(&ben).unwrap().unwrap()
    };
    let (commit, _, _) = ben
        .update_group_context_extensions(
            &b.provider,
            policy.extensions().unwrap(),
            &b.account.device,
        )
        .unwrap();
    for d in [&a, &c] {
        let err = process(&d.provider, &serialize(&commit).unwrap(), &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::PolicyViolation { what, .. } if what.contains("only an admin")),
            "{err:?}"
        );
    }
}

/// `process_loaded` keeps a group only while processing succeeds: a
/// failure drops the kept copy (storage may hold part of the change, which
/// the caller rolls back), so the next message loads the group again.
#[test]
fn a_kept_group_is_dropped_when_processing_fails() {
    let (a, b) = (device("anna"), device("ben"));
    let dir = Directory::of(&[&a, &b]);
    let mut group = create_group(&a.provider, &a.account).unwrap();
    let pending = add_members(&a.provider, &mut group, &a.account.device, &[claim(&b)]).unwrap();
    accept(&a, &mut group);
    process(&b.provider, &pending.welcome.unwrap(), &dir).unwrap();
    let id = group.group_id().to_vec();

    let mut loaded = LoadedGroups::default();
    let first = encrypt(&a.provider, &mut group, &a.account.device, b"one").unwrap();
    assert!(matches!(
        process_loaded(&b.provider, &mut loaded, &first, &dir).unwrap(),
        Inbound::Application { plaintext, .. } if plaintext == b"one"
    ));
    assert_eq!(loaded.len(), 1);
    // The kept copy is what storage holds.
    let kept = loaded.get(&id).unwrap();
    assert_eq!(kept.epoch(), load(&b.provider, &id).unwrap().epoch());

    // A replay fails (its generation is consumed): the copy is dropped.
    assert!(process_loaded(&b.provider, &mut loaded, &first, &dir).is_err());
    assert!(loaded.is_empty());

    let second = encrypt(&a.provider, &mut group, &a.account.device, b"two").unwrap();
    assert!(matches!(
        process_loaded(&b.provider, &mut loaded, &second, &dir).unwrap(),
        Inbound::Application { plaintext, .. } if plaintext == b"two"
    ));
    loaded.clear();
    assert!(loaded.is_empty());
}
