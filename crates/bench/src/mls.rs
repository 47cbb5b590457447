//! W7 fixtures: a group of `size` members built with `sotto_core::group`
//! over openmls' `OpenMlsRustCrypto` provider (in-memory storage), with one
//! creator (who commits and encrypts) and one joined member (who decrypts).

use anyhow::{Context as _, anyhow};
use sotto_core::group::{self, CheckedKeyPackage, Inbound, KeyCheck, KeyDirectory};
use sotto_core::identity::{Account, MemberId, Username};
use sotto_core::openmls::prelude::MlsGroup;
use sotto_core::openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_proto::v1::ClaimedKeyPackage;

/// One device with its own provider (keys and MLS state).
#[derive(Debug)]
pub struct Device {
    pub account: Account,
    pub provider: OpenMlsRustCrypto,
}

impl Device {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            account: Account::generate(
                Username::parse(name).map_err(|e| anyhow!("username {name}: {e:?}"))?,
            ),
            provider: OpenMlsRustCrypto::default(),
        })
    }

    /// A fresh KeyPackage of this device, checked as a client would.
    pub fn key_package(&self, last_resort: bool) -> anyhow::Result<CheckedKeyPackage> {
        key_package_of(&self.account, &self.provider, last_resort)
    }
}

fn key_package_of(
    account: &Account,
    provider: &OpenMlsRustCrypto,
    last_resort: bool,
) -> anyhow::Result<CheckedKeyPackage> {
    let claimed = ClaimedKeyPackage {
        device: Some(account.signed_device()),
        key_package: group::new_key_package(provider, account, last_resort)
            .map_err(|e| anyhow!("key package: {e:?}"))?,
    };
    group::check_key_package(
        provider,
        &account.username,
        &account.identity_public(),
        &claimed,
    )
    .map_err(|e| anyhow!("check key package: {e:?}"))
}

/// Accepts every key: the benches measure MLS, not the transparency log.
#[derive(Debug, Clone, Copy)]
pub struct AllowAll;

impl KeyDirectory for AllowAll {
    fn check(&self, _member: &MemberId, _signature_key: &[u8]) -> KeyCheck {
        KeyCheck::Listed
    }
}

/// A group of `size` members: `creator` and `member` are real devices, the
/// others exist only as leaves.
#[derive(Debug)]
pub struct Fixture {
    pub size: usize,
    pub creator: Device,
    pub group: MlsGroup,
    pub member: Device,
    /// Bytes of the commit that added everyone, and of its Welcome.
    pub add_all_commit_bytes: usize,
    pub add_all_welcome_bytes: usize,
    joiners: usize,
}

impl Fixture {
    /// Builds the group (size >= 2).
    pub fn build(size: usize) -> anyhow::Result<Self> {
        let size = size.max(2);
        let creator = Device::new("creator")?;
        let member = Device::new("member")?;
        let mut group = group::create_group(&creator.provider, &creator.account)
            .map_err(|e| anyhow!("create group: {e:?}"))?;
        let shared = OpenMlsRustCrypto::default();
        let mut kps = vec![member.key_package(false)?];
        for i in 0..size.saturating_sub(2) {
            let account = Account::generate(
                Username::parse(&format!("mem{i}")).map_err(|e| anyhow!("username: {e:?}"))?,
            );
            kps.push(key_package_of(&account, &shared, false)?);
        }
        let pending =
            group::add_members(&creator.provider, &mut group, &creator.account.device, &kps)
                .map_err(|e| anyhow!("add members: {e:?}"))?;
        group::merge_pending(&creator.provider, &mut group).map_err(|e| anyhow!("merge: {e:?}"))?;
        let welcome = pending.welcome.context("add produced no Welcome")?;
        match group::process(&member.provider, &welcome, &AllowAll)
            .map_err(|e| anyhow!("join: {e:?}"))?
        {
            Inbound::Joined { .. } => {}
            other => return Err(anyhow!("expected a join, got {other:?}")),
        }
        Ok(Self {
            size,
            creator,
            group,
            member,
            add_all_commit_bytes: pending.commit.len(),
            add_all_welcome_bytes: welcome.len(),
            joiners: 0,
        })
    }

    /// Encrypts an application message from the creator.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        group::encrypt(
            &self.creator.provider,
            &mut self.group,
            &self.creator.account.device,
            plaintext,
        )
        .map_err(|e| anyhow!("encrypt: {e:?}"))
    }

    /// Decrypts (processes) a creator's message at the joined member.
    pub fn decrypt(&self, ciphertext: &[u8]) -> anyhow::Result<usize> {
        match group::process(&self.member.provider, ciphertext, &AllowAll)
            .map_err(|e| anyhow!("decrypt: {e:?}"))?
        {
            Inbound::Application { plaintext, .. } => Ok(plaintext.len()),
            other => Err(anyhow!("expected an application message, got {other:?}")),
        }
    }

    /// A self-update commit (fresh leaf key), then cleared so the group
    /// stays as it was. Returns the commit's size.
    pub fn commit_update(&mut self) -> anyhow::Result<usize> {
        let pending = group::update_keys(
            &self.creator.provider,
            &mut self.group,
            &self.creator.account.device,
        )
        .map_err(|e| anyhow!("update: {e:?}"))?;
        self.clear()?;
        Ok(pending.commit.len())
    }

    /// A commit adding one device, then cleared. Returns (commit, welcome)
    /// sizes.
    pub fn commit_add(&mut self, kp: &CheckedKeyPackage) -> anyhow::Result<(usize, usize)> {
        let pending = self.add_one(kp)?;
        self.clear()?;
        Ok((pending.commit.len(), pending.welcome.map_or(0, |w| w.len())))
    }

    /// A commit adding one device, merged at the creator (the group grows
    /// by one). Returns the commit as sent, for the joined member to
    /// process.
    pub fn commit_add_merged(&mut self, kp: &CheckedKeyPackage) -> anyhow::Result<Vec<u8>> {
        let pending = self.add_one(kp)?;
        group::merge_pending(&self.creator.provider, &mut self.group)
            .map_err(|e| anyhow!("merge: {e:?}"))?;
        self.size = self.size.saturating_add(1);
        Ok(pending.commit)
    }

    /// `epochs` self-update commits by the creator, merged there and
    /// processed by the joined member: afterwards the member keeps the
    /// message secrets (and, in openmls, the member list) of that many
    /// past epochs, as a member of a living group does.
    pub fn advance_epochs(&mut self, epochs: usize) -> anyhow::Result<()> {
        for _ in 0..epochs {
            let pending = group::update_keys(
                &self.creator.provider,
                &mut self.group,
                &self.creator.account.device,
            )
            .map_err(|e| anyhow!("update: {e:?}"))?;
            group::merge_pending(&self.creator.provider, &mut self.group)
                .map_err(|e| anyhow!("merge: {e:?}"))?;
            self.receive_commit(&pending.commit)?;
        }
        Ok(())
    }

    /// Processes a creator's commit at the joined member.
    pub fn receive_commit(&self, commit: &[u8]) -> anyhow::Result<()> {
        match group::process(&self.member.provider, commit, &AllowAll)
            .map_err(|e| anyhow!("process commit: {e:?}"))?
        {
            Inbound::Commit { .. } => Ok(()),
            other => Err(anyhow!("expected a commit, got {other:?}")),
        }
    }

    /// Decrypts creator's messages at the joined member as one batch (one
    /// [`group::LoadedGroups`], as the client's receive does within one
    /// transaction).
    pub fn decrypt_batch(&self, ciphertexts: &[Vec<u8>]) -> anyhow::Result<usize> {
        let mut loaded = group::LoadedGroups::default();
        let mut total = 0;
        for ct in ciphertexts {
            match group::process_loaded(&self.member.provider, &mut loaded, ct, &AllowAll)
                .map_err(|e| anyhow!("decrypt: {e:?}"))?
            {
                Inbound::Application { plaintext, .. } => total += plaintext.len(),
                other => return Err(anyhow!("expected an application message, got {other:?}")),
            }
        }
        Ok(total)
    }

    /// A commit removing the joined member, then cleared. Returns its size.
    pub fn commit_remove(&mut self) -> anyhow::Result<usize> {
        let pending = group::remove_devices(
            &self.creator.provider,
            &mut self.group,
            &self.creator.account.device,
            &[self.member.account.device_id],
        )
        .map_err(|e| anyhow!("remove: {e:?}"))?
        .context("member not in group")?;
        self.clear()?;
        Ok(pending.commit.len())
    }

    /// A new device and the Welcome that would add it (the commit is
    /// cleared, so the group is unchanged): the input of a join.
    pub fn welcome_for_new_device(&mut self) -> anyhow::Result<(Device, Vec<u8>)> {
        self.joiners = self.joiners.saturating_add(1);
        let joiner = Device::new(&format!("joiner{}", self.joiners))?;
        let kp = joiner.key_package(false)?;
        let pending = self.add_one(&kp)?;
        self.clear()?;
        let welcome = pending.welcome.context("add produced no Welcome")?;
        Ok((joiner, welcome))
    }

    fn add_one(&mut self, kp: &CheckedKeyPackage) -> anyhow::Result<group::PendingCommit> {
        group::add_members(
            &self.creator.provider,
            &mut self.group,
            &self.creator.account.device,
            std::slice::from_ref(kp),
        )
        .map_err(|e| anyhow!("add: {e:?}"))
    }

    fn clear(&mut self) -> anyhow::Result<()> {
        group::clear_pending(&self.creator.provider, &mut self.group)
            .map_err(|e| anyhow!("clear pending: {e:?}"))
    }
}

/// Joins a group from a Welcome.
pub fn join(joiner: &Device, welcome: &[u8]) -> anyhow::Result<()> {
    match group::process(&joiner.provider, welcome, &AllowAll)
        .map_err(|e| anyhow!("join: {e:?}"))?
    {
        Inbound::Joined { .. } => Ok(()),
        other => Err(anyhow!("expected a join, got {other:?}")),
    }
}

/// Wire sizes of the operations for one group size.
#[derive(Debug, Clone, Default)]
pub struct WireSizes {
    pub size: usize,
    pub app_message: usize,
    pub update_commit: usize,
    pub add_commit: usize,
    pub add_welcome: usize,
    pub remove_commit: usize,
}

/// Measures the wire sizes for a group of `size` (100-byte plaintext).
pub fn wire_sizes(size: usize) -> anyhow::Result<WireSizes> {
    let mut f = Fixture::build(size)?;
    let ct = f.encrypt(&[7u8; 100])?;
    f.decrypt(&ct)?;
    let update_commit = f.commit_update()?;
    let kp = Device::new("extra")?.key_package(false)?;
    let (add_commit, add_welcome) = f.commit_add(&kp)?;
    let remove_commit = f.commit_remove()?;
    Ok(WireSizes {
        size,
        app_message: ct.len(),
        update_commit,
        add_commit,
        add_welcome,
        remove_commit,
    })
}
