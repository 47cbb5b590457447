//! Disappearing messages: a conversation's timer, when a message sent
//! under it expires, and the coarse bucket of that expiry the sender tells
//! the server (`SendMessage.expires_at`) so that it can delete what is
//! still undelivered.
//!
//! Why tell the server at all: the exact expiry is only in the ciphertext
//! (MIMI `expires`), and a server that cannot see it keeps an undelivered
//! message for its whole retention period (30 days). The bucket costs
//! little: a conversation's messages all carry the same timer, so the
//! server learns "this group uses disappearing messages, of roughly this
//! length" (the bucket's width is a fraction of the timer), nothing about
//! any one message that its arrival time did not already say.

/// Longest timer: a year.
pub const MAX_TIMER_SECS: u64 = 365 * 24 * 60 * 60;

/// When a message sent at `sent_at_ms` under a `timer_secs` timer expires,
/// in Unix seconds (rounded up: MIMI's `expires` is whole seconds).
#[must_use]
pub fn expires_at(sent_at_ms: u64, timer_secs: u64) -> u64 {
    sent_at_ms.div_ceil(1000).saturating_add(timer_secs)
}

/// The width of the server's bucket for a timer: 10 s under a minute, a
/// minute under an hour, an hour under a day, a day beyond.
#[must_use]
pub fn bucket_width(timer_secs: u64) -> u64 {
    match timer_secs {
        0..60 => 10,
        60..3_600 => 60,
        3_600..86_400 => 3_600,
        _ => 86_400,
    }
}

/// What the server is told: the expiry rounded up to the timer's bucket
/// width, so the server never deletes a message before its time.
#[must_use]
pub fn server_bucket(expires_at: u64, timer_secs: u64) -> u64 {
    let width = bucket_width(timer_secs);
    expires_at.div_ceil(width).saturating_mul(width)
}

/// A timer as people write it: `30s`, `5m`, `1h`, `7d` (the largest unit
/// that divides it), or `off`.
#[must_use]
pub fn format_timer(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "off".into();
    }
    UNITS
        .iter()
        .find(|(unit, _)| secs.is_multiple_of(*unit))
        .map_or_else(
            || format!("{secs}s"),
            |(unit, name)| format!("{}{name}", secs / unit),
        )
}

/// The system line a timer change shows.
#[must_use]
pub fn timer_line(actor: &str, secs: u64) -> String {
    if secs == 0 {
        format!("{actor} turned off disappearing messages")
    } else {
        format!(
            "{actor} set disappearing messages to {}",
            format_timer(secs)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_and_never_early() {
        assert_eq!(expires_at(1_000_001, 5), 1_006);
        assert_eq!(expires_at(1_000_000, 5), 1_005);
        assert_eq!(server_bucket(1_007, 5), 1_010);
        assert_eq!(server_bucket(1_010, 5), 1_010);
        assert_eq!(server_bucket(3_601, 300), 3_660);
        assert_eq!(server_bucket(3_601, 7_200), 7_200);
        assert_eq!(server_bucket(1, 7 * 86_400), 86_400);
        for timer in [1, 59, 60, 3_599, 3_600, 86_400, MAX_TIMER_SECS] {
            for at in [0, 1, 12_345, 1_700_000_000] {
                let bucket = server_bucket(at, timer);
                assert!(bucket >= at && bucket - at < bucket_width(timer));
            }
        }
    }

    #[test]
    fn timers_read_as_typed() {
        assert_eq!(format_timer(0), "off");
        assert_eq!(format_timer(30), "30s");
        assert_eq!(format_timer(300), "5m");
        assert_eq!(format_timer(3_600), "1h");
        assert_eq!(format_timer(7 * 86_400), "7d");
        assert_eq!(format_timer(90), "90s");
        assert_eq!(
            timer_line("alice", 5),
            "alice set disappearing messages to 5s"
        );
        assert_eq!(timer_line("bob", 0), "bob turned off disappearing messages");
    }
}
