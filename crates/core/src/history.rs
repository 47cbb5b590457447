//! What a conversation's history says about events: the system lines for
//! roster changes and for joining, as pure functions of the event and of
//! who is reading, so every client (CLI, terminal, browser) words them the
//! same way.

use crate::group::RosterChange;
use crate::identity::{MemberId, Username};

/// The lines a roster change shows to `reader` (this device), naming the
/// account whose device signed the commit (`actor`, or "you").
pub fn roster_lines(reader: &MemberId, actor: &str, change: &RosterChange) -> Vec<String> {
    let mut lines = Vec::new();
    let (own_devices, others): (Vec<&MemberId>, Vec<&MemberId>) = change
        .added
        .iter()
        .partition(|m| m.username == reader.username);
    if !others.is_empty() {
        lines.push(format!("{actor} added {}", usernames(others)));
    }
    for device in own_devices {
        lines.push(format!("{actor} added your device {}", device.device_id));
    }
    for m in &change.joined {
        lines.push(format!("{} joined by invite link", m.username));
    }
    for m in &change.left {
        lines.push(format!("{} left", m.username));
    }
    for m in &change.removed {
        if m == reader {
            lines.push(format!("{actor} removed you"));
        } else if m.username == reader.username {
            lines.push(format!("{actor} removed your device {}", m.device_id));
        } else {
            lines.push(format!("{actor} removed {}", m.username));
        }
    }
    lines
}

/// The line a conversation's `ConversationInfo` shows: who started it or
/// added the reader. `group` is the group's name, `None` for a direct
/// conversation.
pub fn joined_line(reader: &Username, sender: &Username, group: Option<&str>) -> String {
    match group {
        _ if sender == reader => "this device was added to the conversation".to_owned(),
        None => format!("{sender} started a conversation"),
        Some(name) => format!("{sender} added you to {name}"),
    }
}

/// Sorted, de-duplicated account names of some members, comma-separated.
pub fn usernames<'a>(members: impl IntoIterator<Item = &'a MemberId>) -> String {
    let mut names: Vec<&str> = members.into_iter().map(|m| m.username.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::identity::DeviceId;

    fn member(name: &str, device: u8) -> MemberId {
        MemberId {
            username: Username::parse(name).unwrap(),
            device_id: DeviceId::from_slice(&[device; 16]).unwrap(),
        }
    }

    #[test]
    fn lines_name_the_actor_and_speak_to_the_reader() {
        let me = member("anna", 1);
        let change = RosterChange {
            added: vec![member("ben", 2), member("cleo", 3), member("anna", 4)],
            removed: vec![me.clone(), member("anna", 5), member("dora", 6)],
            left: vec![member("eve", 7)],
            joined: vec![member("fay", 8)],
        };
        assert_eq!(
            roster_lines(&me, "ben", &change),
            [
                "ben added ben, cleo".to_owned(),
                format!("ben added your device {}", hex::encode([4; 16])),
                "fay joined by invite link".to_owned(),
                "eve left".to_owned(),
                "ben removed you".to_owned(),
                format!("ben removed your device {}", hex::encode([5; 16])),
                "ben removed dora".to_owned(),
            ]
        );
        let ben = Username::parse("ben").unwrap();
        assert_eq!(
            joined_line(&me.username, &ben, Some("team")),
            "ben added you to team"
        );
        assert_eq!(
            joined_line(&me.username, &ben, None),
            "ben started a conversation"
        );
        assert_eq!(
            joined_line(&me.username, &me.username, None),
            "this device was added to the conversation"
        );
    }
}
