//! `sotto-server invite-link close`: the operator closes every invite link
//! of a public group (docs/PUBLIC_GROUPS.md). The server then refuses to
//! hand out the group's GroupInfo and refuses joiners' external commits;
//! the closure is counted in the signed transparency report.

use anyhow::Context as _;
use clap::Subcommand;
use sotto_server::legal;
use sotto_server::store::{AnyStore, GroupId};

use crate::admin_cli::DataDir;
use crate::block_on;

#[derive(Debug, Subcommand)]
pub(crate) enum InviteLinkCommand {
    /// Closes every invite link of a group: nobody joins by them any more,
    /// no new link of the group is accepted, and their stored (sealed)
    /// GroupInfos are erased. Counted in the transparency report (kind
    /// `invite-link-close`, without the group).
    #[command(after_help = "Example: sotto-server invite-link close 9f1c…e2 --request-id abuse-7")]
    Close {
        /// The group's id, in hex (from an abuse report, or a member).
        #[arg(value_name = "GROUP_ID_HEX")]
        group_id: String,
        /// Your reference for the action (published in the report).
        #[arg(long, value_name = "ID", default_value = "operator")]
        request_id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Runs an invite-link command, printing what it did on stdout.
pub(crate) fn invite_link(command: InviteLinkCommand) -> anyhow::Result<()> {
    let InviteLinkCommand::Close {
        group_id,
        request_id,
        data,
    } = command;
    let group_id = hex::decode(group_id.trim())
        .ok()
        .and_then(|bytes| GroupId::from_slice(&bytes))
        .context("GROUP_ID_HEX must be a group id in hex")?;
    let today = crate::legal_cli::today();
    let store = block_on(AnyStore::open_existing(&data.location()))?
        .context("cannot open the server database")?;
    let (closed, entry) = block_on(async {
        let closed = legal::close_invite_links(&store, &group_id, &request_id, today).await;
        store.close().await;
        closed
    })??;
    println!("closed {closed} invite link(s) of group {group_id}");
    println!(
        "recorded as transparency report entry {} (kind {}, without the group)",
        entry.seq, entry.kind
    );
    Ok(())
}
