//! `sotto-server legal …`: the court-order export, the transparency report
//! of such requests, and the warrant canary (see `sotto_server::legal` and
//! docs/SERVER_DATA.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sotto_server::legal::{self, LegalError, Report, SignedDocument};
use sotto_server::store::{AnyStore, UnixDay, day_of};

#[derive(Debug, Subcommand)]
pub(crate) enum LegalCommand {
    /// Exports exactly what the server holds about one or more accounts
    /// (docs/SERVER_DATA.md, column "legal export") as a JSON document signed
    /// with the server's legal key, and records the request in the signed
    /// transparency report. Exits 1, recording nothing, if an account does
    /// not exist.
    #[command(
        after_help = "Example: sotto-server legal export alice --request-id 2025-17 --out alice.json\n\
                      The request id is published in the transparency report: use your own\n\
                      reference, not a sealed case number."
    )]
    Export {
        /// The account(s) the order names.
        #[arg(required = true, value_name = "USERNAME")]
        usernames: Vec<String>,
        /// Your reference for the order (published in the report).
        #[arg(long, value_name = "ID")]
        request_id: String,
        #[command(flatten)]
        data: crate::admin_cli::DataDir,
        /// Where to write the signed export (mode 0600); default stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verifies the stored transparency report (hash chain and signatures)
    /// and prints it. Exits 1 naming the first bad entry.
    #[command(after_help = "Example: sotto-server legal report --json > report.json")]
    Report {
        #[command(flatten)]
        data: crate::admin_cli::DataDir,
        /// Print the signed JSON report (for publishing) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Verifies a report written by `legal report --json`, offline. Exits 1
    /// naming the first bad entry.
    #[command(after_help = "Example: sotto-server legal verify-report report.json --key HEX")]
    VerifyReport {
        /// The report file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The legal key you expect (64 hex digits), e.g. from an earlier
        /// report; without it the key in the file is used.
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
    },
    /// Signs and stores a dated warrant-canary statement; the running server
    /// serves the newest at GET /canary.
    #[command(
        after_help = "Example: sotto-server legal canary --statement \"No secret orders received.\""
    )]
    Canary {
        /// The statement.
        #[arg(long, value_name = "TEXT")]
        statement: String,
        #[command(flatten)]
        data: crate::admin_cli::DataDir,
    },
}

/// Runs a legal command; errors go to stderr and exit 1.
pub(crate) fn run(command: LegalCommand) -> ExitCode {
    let result = crate::block_on(async {
        match command {
            LegalCommand::Export {
                usernames,
                request_id,
                data,
                out,
            } => export(&data, &usernames, &request_id, out).await,
            LegalCommand::Report { data, json } => report(&data, json).await,
            LegalCommand::VerifyReport { file, key } => verify_report(&file, key.as_deref()),
            LegalCommand::Canary { statement, data } => canary(&data, &statement).await,
        }
    })
    .unwrap_or_else(|e| Err(format!("cannot start a runtime: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Today's day number, from the system clock.
pub(crate) fn today() -> UnixDay {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    day_of(seconds)
}

/// `YYYY-MM-DD` of a day since the Unix epoch (proleptic Gregorian).
pub(crate) fn date(day: UnixDay) -> String {
    // Howard Hinnant's civil_from_days, on non-negative days.
    let z = i64::try_from(day).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Opens the existing database (the legal commands never create one).
async fn open(data: &crate::admin_cli::DataDir) -> Result<AnyStore, String> {
    AnyStore::open_existing(&data.location())
        .await
        .map_err(|e| e.to_string())
}

async fn export(
    data: &crate::admin_cli::DataDir,
    usernames: &[String],
    request_id: &str,
    out: Option<PathBuf>,
) -> Result<(), String> {
    let store = open(data).await?;
    let target = out.clone();
    let write = move |signed: &SignedDocument| -> std::io::Result<()> {
        let mut text = pretty(&signed.to_json());
        text.push('\n');
        match &target {
            Some(path) => write_private(path, text.as_bytes()),
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()
            }
        }
    };
    let exported = legal::export_accounts(&store, usernames, request_id, today(), write).await;
    store.close().await;
    let out = out.as_deref();
    let (signed, entry) = exported.map_err(|e| match e {
        LegalError::Output(e) => format!(
            "cannot write {}: {e}; nothing was recorded",
            out.map_or_else(|| "to stdout".to_owned(), |p| p.display().to_string())
        ),
        other => other.to_string(),
    })?;
    eprintln!(
        "exported {} account(s) for request {:?}{}",
        usernames.len(),
        request_id,
        out.map_or_else(String::new, |p| format!(" to {}", p.display()))
    );
    eprintln!(
        "recorded as transparency report entry {} (hash {})",
        entry.seq,
        hex::encode(entry.hash)
    );
    eprintln!("signed by legal key {}", hex::encode(signed.key));
    Ok(())
}

/// Writes a file only its owner can read (it holds personal data).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn report(data: &crate::admin_cli::DataDir, as_json: bool) -> Result<(), String> {
    let store = open(data).await?;
    let reported = legal::report(&store, today()).await;
    store.close().await;
    let (report, signed) = reported.map_err(|e| e.to_string())?;
    if as_json {
        println!("{}", pretty(&signed.to_json()));
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "transparency report: {} request(s); hash chain and signatures verified",
        report.entries.len()
    );
    println!("legal key: {}", hex::encode(report.key));
    println!("head:      {}", hex::encode(report.head()));
    if report.entries.is_empty() {
        return;
    }
    println!();
    println!(
        "{:>5}  {:<10}  {:<8}  {:>8}  request id",
        "seq", "date", "kind", "accounts"
    );
    for entry in &report.entries {
        println!(
            "{:>5}  {:<10}  {:<8}  {:>8}  {}",
            entry.seq,
            date(entry.day),
            entry.kind,
            entry.accounts,
            entry.request_id
        );
    }
}

fn verify_report(file: &Path, key: Option<&str>) -> Result<(), String> {
    let expected = key
        .map(|k| {
            let bytes = hex::decode(k.trim()).map_err(|_| "--key is not hex".to_owned())?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| "--key must be 32 bytes (64 hex digits)".to_owned())
        })
        .transpose()?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "report verification failed: {} is not JSON: {e}",
            file.display()
        )
    })?;
    let report = legal::verify_report(&value, expected.as_ref())
        .map_err(|e| format!("report verification failed: {e}"))?;
    println!(
        "report verified: {} request(s), head {}, legal key {}",
        report.entries.len(),
        hex::encode(report.head()),
        hex::encode(report.key)
    );
    Ok(())
}

async fn canary(data: &crate::admin_cli::DataDir, statement: &str) -> Result<(), String> {
    let store = open(data).await?;
    let published = legal::publish_canary(&store, statement, today()).await;
    store.close().await;
    let canary = published.map_err(|e| e.to_string())?;
    println!(
        "canary signed for day {} ({}); served at GET /canary",
        canary.day,
        date(canary.day)
    );
    println!("legal key: {}", hex::encode(canary.key));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
    }
}
