//! `sotto-server moderation list|show|resolve`: the abuse-report queue.
//! Every open report is verified before it is shown (`sotto_core::franking`):
//! a forged one reads "verification failed: <reason>".

use anyhow::Context as _;
use clap::Subcommand;
use sotto_server::moderation::{self, Action, ReportView};
use sotto_server::store::AnyStore;

use crate::admin_cli::DataDir;
use crate::block_on;

#[derive(Debug, Subcommand)]
pub(crate) enum ModerationCommand {
    /// Lists reports, oldest first: number, day received, status, and for
    /// open reports whether they verify.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Verifies and shows one report: sender account and device, group,
    /// when the server accepted the message, reason, note and content.
    Show {
        /// The report's number (from `moderation list`).
        id: u64,
        #[command(flatten)]
        data: DataDir,
    },
    /// Closes a report. `--action disable-account` first disables the
    /// sender's account (only for a report that verifies), counted in the
    /// transparency report (kind `moderation-disable`, without the name).
    /// The report's content and reporter are then erased.
    Resolve {
        id: u64,
        #[arg(long, value_enum, default_value = "none")]
        action: ActionArg,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ActionArg {
    None,
    DisableAccount,
}

/// Runs a moderation command, printing its result on stdout.
pub(crate) fn moderation(command: ModerationCommand) -> anyhow::Result<()> {
    match command {
        ModerationCommand::List { data } => {
            let store = open(&data)?;
            let views = block_on(async {
                let views = moderation::list(&store).await;
                store.close().await;
                views
            })??;
            if views.is_empty() {
                println!("no reports");
            }
            for view in &views {
                println!("{}", summary(view));
            }
        }
        ModerationCommand::Show { id, data } => {
            let store = open(&data)?;
            let view = block_on(async {
                let view = moderation::show(&store, id).await;
                store.close().await;
                view
            })??;
            print!("{}", details(&view));
        }
        ModerationCommand::Resolve { id, action, data } => {
            let action = match action {
                ActionArg::None => Action::None,
                ActionArg::DisableAccount => Action::DisableAccount,
            };
            let store = open(&data)?;
            let entry = block_on(async {
                let resolved =
                    moderation::resolve(&store, id, action, crate::legal_cli::today()).await;
                store.close().await;
                resolved
            })??;
            println!("resolved report {id}: {}", action.as_str());
            if let Some(entry) = entry {
                println!(
                    "disabled the sender's account; recorded as transparency report entry {} \
                     (kind {}, without the name)",
                    entry.seq, entry.kind
                );
            }
        }
    }
    Ok(())
}

fn open(data: &DataDir) -> anyhow::Result<AnyStore> {
    block_on(AnyStore::open_existing(&data.location()))?.context("cannot open the server database")
}

fn status(view: &ReportView) -> String {
    match (&view.record.action, &view.verified) {
        (Some(action), _) => format!(
            "resolved {} ({action})",
            crate::legal_cli::date(view.record.resolved_day.unwrap_or_default())
        ),
        (None, Some(Ok(_))) => "open, verified".into(),
        (None, Some(Err(reason))) => format!("open, verification failed: {reason}"),
        (None, None) => "open".into(),
    }
}

fn summary(view: &ReportView) -> String {
    format!(
        "{}  received {}  {}",
        view.record.id,
        crate::legal_cli::date(view.record.received_day),
        status(view)
    )
}

fn details(view: &ReportView) -> String {
    let mut out = format!(
        "report {}\nreceived: {}\nstatus: {}\n",
        view.record.id,
        crate::legal_cli::date(view.record.received_day),
        status(view)
    );
    if let Some(reporter) = &view.record.reporter {
        out += &format!("reported by: {reporter}\n");
    }
    match &view.verified {
        Some(Ok(v)) => {
            out += &format!(
                "sender: {} (device {})\ngroup: {}\naccepted at: {} ms since the Unix epoch ({})\n\
                 reason: {}\nnote: {}\ncontent: {}\n",
                v.sender_username,
                hex::encode(&v.sender_device_id),
                hex::encode(&v.group_id),
                v.accepted_at_ms,
                crate::legal_cli::date(v.accepted_at_ms / 86_400_000),
                reason_name(v.reason),
                clean(&v.note),
                clean(&v.text),
            );
        }
        Some(Err(reason)) => {
            out += &format!("verification failed: {reason}\n");
            if let Some(report) = &view.report {
                // What it claims, marked as unproven.
                out += &format!(
                    "claimed sender (unproven): {} (device {})\n",
                    clean(&report.sender_username),
                    hex::encode(&report.sender_device_id)
                );
            }
        }
        None => {}
    }
    out
}

fn reason_name(reason: sotto_core::franking::ReportReason) -> &'static str {
    use sotto_core::franking::ReportReason;
    match reason {
        ReportReason::Spam => "spam",
        ReportReason::Harassment => "harassment",
        ReportReason::Illegal => "illegal",
        ReportReason::Other => "other",
        ReportReason::Unspecified => "unspecified",
    }
}

/// Reporter- and sender-chosen text cannot drive the operator's terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}
