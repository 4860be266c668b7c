//! Topics: building, sanitising, parsing, validating and matching them.
//!
//! Every signalbox event lives on `{prefix}/{env}/{system}/{entity...}/{event}`
//! (e.g. `signalbox/prod/git/kernel/commit`). Directly under the prefix sit the
//! reserved namespaces that the tools themselves use:
//!
//! | topic                              | what                                  |
//! |------------------------------------|---------------------------------------|
//! | `{prefix}/_health/{listener}`      | retained health report, also the LWT  |
//! | `{prefix}/_failed/{listener}/{id}` | retained failure record               |
//! | `{prefix}/_replay/{listener}`      | replay requests to one listener       |
//! | `{prefix}/_audit`                  | operator actions (ack, replay, clear) |
//! | `{prefix}/_ping`                   | discovery request                     |
//! | `{prefix}/_roster`                 | retained list of listeners / daemons  |
//!
//! This module owns the rules of MQTT topic names and filters (MQTT 3.1.1
//! §4.7, MQTT 5 §4.7 and §4.8.2 for `$share`), so that no other part of
//! signalbox parses a topic by hand.

/// The longest topic name or filter MQTT can carry, in bytes (its length is
/// a two-byte prefix on the wire).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The longest single level [`sanitize_segment`] produces, in bytes.
/// Generous for any system, entity or event name while keeping one runaway
/// value (a whole mail subject, a path) from producing unreadable topics.
pub const MAX_SEGMENT_LEN: usize = 128;

/// The reserved namespace names that may follow the prefix. An `env` level
/// must never be one of them (see [`build`]).
pub const RESERVED_NAMESPACES: [&str; 6] = [
    "_health", "_failed", "_replay", "_audit", "_ping", "_roster",
];

const HEALTH: &str = "_health";
const FAILED: &str = "_failed";
const REPLAY: &str = "_replay";
const AUDIT: &str = "_audit";
const PING: &str = "_ping";
const ROSTER: &str = "_roster";

/// The first level of an MQTT 5 shared subscription filter.
const SHARE: &str = "$share";

/// Why a topic name or a topic filter is not acceptable to MQTT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic or filter is the empty string; MQTT needs at least one
    /// character.
    #[error("topic is empty; MQTT needs at least one character")]
    Empty,
    /// The topic or filter is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {len} bytes long; MQTT allows at most {MAX_TOPIC_LEN} bytes")]
    TooLong {
        /// Its length in bytes (UTF-8).
        len: usize,
    },
    /// A topic name meant for publishing contains `+` or `#`.
    #[error("topic `{topic}` contains a wildcard (`+` or `#`); publish needs a concrete topic")]
    Wildcard {
        /// The offending topic name.
        topic: String,
    },
    /// The topic or filter contains U+0000, which MQTT forbids.
    #[error("topic contains a NUL character, which MQTT forbids")]
    Nul,
    /// A filter uses a wildcard in a way MQTT forbids (`a+/b`, `a/#/b`, `a#`).
    #[error(
        "filter `{filter}` misuses a wildcard in level `{level}`: `+` must be a whole level \
         and `#` a whole level at the end"
    )]
    BadWildcard {
        /// The whole filter.
        filter: String,
        /// The level that holds the misplaced wildcard.
        level: String,
    },
    /// A `$share/...` filter without a usable group or filter part.
    #[error(
        "shared subscription `{filter}` must read `$share/{{group}}/{{filter}}`, with a \
         non-empty group free of `+` and `#`, followed by a filter"
    )]
    BadShareGroup {
        /// The whole filter.
        filter: String,
    },
}

/// Turns arbitrary text into one topic level.
///
/// Leading and trailing whitespace is trimmed; `/`, `+`, `#`, NUL, every
/// control character and every Unicode noncharacter (which brokers may
/// reject) become `_`; a leading `$` becomes `_` so that signalbox never
/// creates `$`-topics; the result is capped to [`MAX_SEGMENT_LEN`] bytes at a
/// character boundary; an empty result becomes `_`.
///
/// ```
/// use signalbox_common::topic::sanitize_segment;
/// assert_eq!(sanitize_segment(" feature/ext4+fix \n"), "feature_ext4_fix");
/// assert_eq!(sanitize_segment("$SYS"), "_SYS");
/// assert_eq!(sanitize_segment(""), "_");
/// ```
pub fn sanitize_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SEGMENT_LEN));
    for c in s.trim().chars() {
        let c = if is_forbidden_in_segment(c) { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_SEGMENT_LEN {
            break;
        }
        out.push(c);
    }
    // Capping may have cut just after inner whitespace.
    let trimmed_len = out.trim_end().len();
    out.truncate(trimmed_len);
    if out.starts_with('$') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Whether `c` may not appear in a sanitised level.
fn is_forbidden_in_segment(c: char) -> bool {
    matches!(c, '/' | '+' | '#' | '\0') || c.is_control() || is_noncharacter(c)
}

/// Unicode noncharacters (U+FDD0..=U+FDEF and the last two code points of
/// every plane), which MQTT §1.5.3 lets a server reject.
fn is_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
}

/// Sanitises a prefix, which may have several levels of its own
/// (`corp/signalbox`): it is split on `/`, empty levels are dropped (so
/// `/signalbox/` is `signalbox`) and each level goes through
/// [`sanitize_segment`]. A prefix with no level at all becomes `_`.
///
/// Every function of this module that takes a prefix sanitises it this way,
/// so a topic built from a prefix is recognised with the same prefix.
pub fn sanitize_prefix(prefix: &str) -> String {
    let levels: Vec<String> = prefix
        .split('/')
        .filter(|level| !level.trim().is_empty())
        .map(sanitize_segment)
        .collect();
    if levels.is_empty() {
        "_".to_owned()
    } else {
        levels.join("/")
    }
}

/// Sanitises the `env` level: like [`sanitize_segment`], but a value that
/// would collide with a reserved namespace (`_health`, ...) gets one more
/// leading `_` (`__health`), so an event topic is never taken for a
/// reserved one.
fn sanitize_env(env: &str) -> String {
    let env = sanitize_segment(env);
    if RESERVED_NAMESPACES.contains(&env.as_str()) {
        format!("_{env}")
    } else {
        env
    }
}

/// Builds an event topic `{prefix}/{env}/{system}/{entity...}/{event}`,
/// sanitising every level (see [`sanitize_prefix`] and
/// [`sanitize_segment`]).
///
/// An `env` that would read as a reserved namespace (`_health`, `_failed`,
/// ...) is escaped with one more leading `_` (`__health`). The result is
/// always a valid topic name (see [`validate_topic_name`]) unless the
/// entity list is so long that it exceeds [`MAX_TOPIC_LEN`].
///
/// ```
/// use signalbox_common::topic::build;
/// assert_eq!(
///     build("signalbox", "prod", "git", &["kernel", "f14"], "commit"),
///     "signalbox/prod/git/kernel/f14/commit"
/// );
/// ```
pub fn build(prefix: &str, env: &str, system: &str, entity: &[&str], event: &str) -> String {
    let mut topic = sanitize_prefix(prefix);
    for level in [sanitize_env(env), sanitize_segment(system)]
        .into_iter()
        .chain(entity.iter().map(|e| sanitize_segment(e)))
        .chain(std::iter::once(sanitize_segment(event)))
    {
        topic.push('/');
        topic.push_str(&level);
    }
    topic
}

/// An event topic split into its meaning; see [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParsedTopic {
    /// The prefix the topic was found under (sanitised, possibly several
    /// levels such as `corp/signalbox`).
    pub prefix: String,
    /// The environment (`prod`, `dev`, ...), the first level after the
    /// prefix.
    pub env: String,
    /// The system that published (`git`, `cron`, `mail`, ...).
    pub system: String,
    /// The levels between the system and the event (`kernel`, `f14`);
    /// may be empty.
    pub entity: Vec<String>,
    /// What happened (`commit`, `finished`, ...), the last level.
    pub event: String,
}

/// Splits an event topic under `prefix` into env, system, entity levels and
/// event.
///
/// Returns `None` when the topic is not under the prefix, is a reserved
/// topic (its env level is one of [`RESERVED_NAMESPACES`]), has fewer than
/// three levels after the prefix, or is not a valid topic name (wildcards,
/// NUL, empty).
pub fn parse(prefix: &str, topic: &str) -> Option<ParsedTopic> {
    if validate_topic_name(topic).is_err() {
        return None;
    }
    let prefix = sanitize_prefix(prefix);
    let rest = strip_prefix(&prefix, topic)?;
    let levels: Vec<&str> = rest.split('/').collect();
    let (env, after_env) = levels.split_first()?;
    if RESERVED_NAMESPACES.contains(env) {
        return None;
    }
    let (system, after_system) = after_env.split_first()?;
    let (event, entity) = after_system.split_last()?;
    Some(ParsedTopic {
        prefix,
        env: (*env).to_owned(),
        system: (*system).to_owned(),
        entity: entity.iter().map(|e| (*e).to_owned()).collect(),
        event: (*event).to_owned(),
    })
}

/// The part of `topic` after `{prefix}/`, if the topic is under the
/// (already sanitised) prefix.
fn strip_prefix<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    topic.strip_prefix(prefix)?.strip_prefix('/')
}

/// A topic in one of the reserved namespaces; see [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reserved {
    /// `{prefix}/_health/{listener}`: a listener's retained health report.
    Health {
        /// The listener (or daemon, or bridge) the report is about.
        listener: String,
    },
    /// `{prefix}/_failed/{listener}/{id}`: a retained failure record.
    Failed {
        /// The listener whose handler failed.
        listener: String,
        /// The id of the message that failed.
        id: String,
    },
    /// `{prefix}/_replay/{listener}`: a replay request to one listener.
    Replay {
        /// The listener asked to replay.
        listener: String,
    },
    /// `{prefix}/_audit`: operator actions.
    Audit,
    /// `{prefix}/_ping`: a discovery request.
    Ping,
    /// `{prefix}/_roster`: the retained list of listeners and daemons.
    Roster,
}

/// Recognises a reserved topic under `prefix`.
///
/// Only the exact shapes listed in the module docs are recognised, with
/// non-empty levels free of wildcards; anything else (including
/// `{prefix}/_audit/extra`) is `None`.
pub fn classify(prefix: &str, topic: &str) -> Option<Reserved> {
    let prefix = sanitize_prefix(prefix);
    let rest = strip_prefix(&prefix, topic)?;
    let levels: Vec<&str> = rest.split('/').collect();
    if levels
        .iter()
        .any(|l| l.is_empty() || l.contains(['+', '#', '\0']))
    {
        return None;
    }
    match levels.as_slice() {
        [HEALTH, listener] => Some(Reserved::Health {
            listener: (*listener).to_owned(),
        }),
        [FAILED, listener, id] => Some(Reserved::Failed {
            listener: (*listener).to_owned(),
            id: (*id).to_owned(),
        }),
        [REPLAY, listener] => Some(Reserved::Replay {
            listener: (*listener).to_owned(),
        }),
        [AUDIT] => Some(Reserved::Audit),
        [PING] => Some(Reserved::Ping),
        [ROSTER] => Some(Reserved::Roster),
        _ => None,
    }
}

/// `{prefix}/{levels...}` with the prefix sanitised; the caller sanitises
/// the levels.
fn under_prefix(prefix: &str, levels: &[&str]) -> String {
    let mut topic = sanitize_prefix(prefix);
    for level in levels {
        topic.push('/');
        topic.push_str(level);
    }
    topic
}

/// `{prefix}/_health/{listener}`: where `listener` publishes its retained
/// health report and sets its Last Will.
pub fn health_topic(prefix: &str, listener: &str) -> String {
    under_prefix(prefix, &[HEALTH, &sanitize_segment(listener)])
}

/// `{prefix}/_health/+`: every listener's health report.
pub fn health_filter(prefix: &str) -> String {
    under_prefix(prefix, &[HEALTH, "+"])
}

/// `{prefix}/_failed/{listener}/{id}`: the retained failure record of
/// message `id` in `listener`.
pub fn failed_topic(prefix: &str, listener: &str, id: &str) -> String {
    under_prefix(
        prefix,
        &[FAILED, &sanitize_segment(listener), &sanitize_segment(id)],
    )
}

/// The filter for failure records: of every listener
/// (`{prefix}/_failed/#`) or of one (`{prefix}/_failed/{listener}/+`).
pub fn failed_filter(prefix: &str, listener: Option<&str>) -> String {
    match listener {
        None => under_prefix(prefix, &[FAILED, "#"]),
        Some(listener) => under_prefix(prefix, &[FAILED, &sanitize_segment(listener), "+"]),
    }
}

/// `{prefix}/_failed/{listener}`: the retained index of `listener`'s open
/// failure records (a JSON array of ids), on an exact topic so that it can
/// be read on brokers that do not deliver retained messages to wildcard
/// subscriptions (RabbitMQ's MQTT plugin).
pub fn failed_index_topic(prefix: &str, listener: &str) -> String {
    under_prefix(prefix, &[FAILED, &sanitize_segment(listener)])
}

/// The listener whose failure index `topic` is (see
/// [`failed_index_topic`]), or `None`.
pub fn failed_index_listener(prefix: &str, topic: &str) -> Option<String> {
    let prefix = sanitize_prefix(prefix);
    let rest = strip_prefix(&prefix, topic)?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [FAILED, listener] if !listener.is_empty() && !listener.contains(['+', '#', '\0']) => {
            Some((*listener).to_owned())
        }
        _ => None,
    }
}

/// `{prefix}/_replay/{listener}`: where replay requests to `listener` go.
pub fn replay_topic(prefix: &str, listener: &str) -> String {
    under_prefix(prefix, &[REPLAY, &sanitize_segment(listener)])
}

/// `{prefix}/_audit`: where operator actions are recorded.
pub fn audit_topic(prefix: &str) -> String {
    under_prefix(prefix, &[AUDIT])
}

/// `{prefix}/_ping`: the discovery request every daemon answers.
pub fn ping_topic(prefix: &str) -> String {
    under_prefix(prefix, &[PING])
}

/// `{prefix}/_roster`: the retained list of listeners and daemons.
pub fn roster_topic(prefix: &str) -> String {
    under_prefix(prefix, &[ROSTER])
}

/// Checks that `topic` can be published to (MQTT 3.1.1 §4.7): non-empty,
/// at most [`MAX_TOPIC_LEN`] bytes, no NUL, no `+` or `#`.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard {
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

/// The rules topic names and filters share.
fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks that `filter` can be subscribed to (MQTT 3.1.1 §4.7): non-empty,
/// at most [`MAX_TOPIC_LEN`] bytes, no NUL, `+` only as a whole level, `#`
/// only as the whole last level. An MQTT 5 shared subscription
/// `$share/{group}/{filter}` is accepted when the group is non-empty without
/// wildcards and the filter after it is valid.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let inner = strip_share(filter)?;
    let mut levels = inner.split('/').peekable();
    while let Some(level) = levels.next() {
        let bad = match level {
            "+" => false,
            "#" => levels.peek().is_some(),
            _ => level.contains(['+', '#']),
        };
        if bad {
            return Err(TopicError::BadWildcard {
                filter: filter.to_owned(),
                level: level.to_owned(),
            });
        }
    }
    Ok(())
}

/// The filter without its `$share/{group}/` part, if it has one.
fn strip_share(filter: &str) -> Result<&str, TopicError> {
    let Some(rest) = filter
        .strip_prefix(SHARE)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        // `$share` alone (or `$sharex/...`) is an ordinary topic level.
        if filter == SHARE {
            return Err(TopicError::BadShareGroup {
                filter: filter.to_owned(),
            });
        }
        return Ok(filter);
    };
    let bad = || TopicError::BadShareGroup {
        filter: filter.to_owned(),
    };
    let (group, inner) = rest.split_once('/').ok_or_else(bad)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(bad());
    }
    Ok(inner)
}

/// Whether a message published on `topic` is delivered to a subscription
/// to `filter`, exactly as MQTT (3.1.1 §4.7, 5 §4.7) specifies:
///
/// - `+` matches exactly one level, including an empty one;
/// - `#` matches its parent level and any number of child levels, so `a/#`
///   matches `a`;
/// - empty levels are real levels (`a//b` has three);
/// - a topic starting with `$` is not matched by a filter whose first level
///   is a wildcard (`#`, `+/...`), but is by `$SYS/#`;
/// - a `$share/{group}/` prefix on the filter is ignored.
///
/// An invalid filter or topic name matches nothing.
pub fn matches(filter: &str, topic: &str) -> bool {
    if validate_filter(filter).is_err() || validate_topic_name(topic).is_err() {
        return false;
    }
    let Ok(filter) = strip_share(filter) else {
        return false;
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        // Valid filters hold wildcards only as whole levels, so a leading
        // `+` or `#` character is a leading wildcard level.
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            // Validation put `#` last: it takes whatever remains, even
            // nothing (the parent level itself).
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Whether the broker changed the topic a message was published to in
/// the way RabbitMQ's MQTT plugin does: it maps `/` to AMQP's `.` and back,
/// so a `.` inside a level (`pkg/v1.2`) arrives as a level separator
/// (`pkg/v1/2`). `sent` is the topic the envelope names, `received` the
/// one the message came on. Other differences (a replay to another prefix,
/// a message republished elsewhere) are not this.
pub fn dots_rewritten(sent: &str, received: &str) -> bool {
    sent != received && sent.contains('.') && sent.replace('.', "/") == received
}

#[cfg(test)]
mod tests {

    /// Issue 13: the failure index sits on an exact topic that classify
    /// does not take for a record, and is recognised only in its own shape.
    #[test]
    fn the_failure_index_has_its_own_exact_topic() {
        let t = failed_index_topic("signalbox", "mail-notify");
        assert_eq!(t, "signalbox/_failed/mail-notify");
        assert_eq!(classify("signalbox", &t), None);
        assert_eq!(
            failed_index_listener("signalbox", &t).as_deref(),
            Some("mail-notify")
        );
        for other in [
            "signalbox/_failed/mail-notify/01a2",
            "signalbox/_failed",
            "signalbox/_health/mail-notify",
            "other/_failed/mail-notify",
            "signalbox/_failed/+",
        ] {
            assert_eq!(failed_index_listener("signalbox", other), None, "{other}");
        }
    }

    use super::*;

    #[test]
    fn dots_turned_into_levels_are_recognised() {
        assert!(dots_rewritten(
            "signalbox/dev/git/pkg/v1.2/build",
            "signalbox/dev/git/pkg/v1/2/build"
        ));
        assert!(!dots_rewritten("a/b.c", "a/b.c"));
        assert!(!dots_rewritten("a/b", "a/b"));
        assert!(!dots_rewritten("a/b.c", "replayed/a/b.c"));
        assert!(!dots_rewritten("a/b.c", "a/b/d"));
    }
    use proptest::prelude::*;

    // ---- sanitize_segment ----

    #[test]
    fn sanitize_replaces_separators_and_wildcards() {
        assert_eq!(sanitize_segment("a/b+c#d"), "a_b_c_d");
        assert_eq!(sanitize_segment("nul\0here"), "nul_here");
        assert_eq!(
            sanitize_segment("tab\tand\x1bescape\u{85}"),
            "tab_and_escape"
        );
        assert_eq!(sanitize_segment("c1\u{85}inside"), "c1_inside");
        assert_eq!(sanitize_segment("bad\u{FFFF}char\u{FDD0}"), "bad_char_");
    }

    #[test]
    fn sanitize_trims_whitespace_before_replacing() {
        assert_eq!(sanitize_segment("  kernel \n"), "kernel");
        assert_eq!(sanitize_segment("\tbackup job\r\n"), "backup job");
    }

    #[test]
    fn sanitize_empty_becomes_underscore() {
        assert_eq!(sanitize_segment(""), "_");
        assert_eq!(sanitize_segment("   "), "_");
        assert_eq!(sanitize_segment("\n\t"), "_");
    }

    #[test]
    fn sanitize_never_starts_with_dollar() {
        assert_eq!(sanitize_segment("$SYS"), "_SYS");
        assert_eq!(sanitize_segment("  $share"), "_share");
        assert_eq!(sanitize_segment("a$b"), "a$b");
    }

    #[test]
    fn sanitize_keeps_unicode() {
        assert_eq!(sanitize_segment("größe-Ω-日本"), "größe-Ω-日本");
    }

    #[test]
    fn sanitize_caps_length_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let s = sanitize_segment(&long);
        assert_eq!(s.len(), MAX_SEGMENT_LEN);
        assert_eq!(s, "é".repeat(64));
        let odd = format!("a{}", "é".repeat(100)); // cut falls inside a char
        let s = sanitize_segment(&odd);
        assert!(s.len() <= MAX_SEGMENT_LEN);
        assert_eq!(s, format!("a{}", "é".repeat(63)));
    }

    #[test]
    fn sanitize_trims_whitespace_exposed_by_the_cap() {
        let s = format!("{} tail", "a".repeat(MAX_SEGMENT_LEN - 1));
        assert_eq!(sanitize_segment(&s), "a".repeat(MAX_SEGMENT_LEN - 1));
    }

    // ---- build / parse ----

    #[test]
    fn build_joins_sanitised_levels() {
        assert_eq!(
            build("signalbox", "prod", "git", &["kernel"], "commit"),
            "signalbox/prod/git/kernel/commit"
        );
        assert_eq!(
            build("signalbox", "prod", "koji", &[], "complete"),
            "signalbox/prod/koji/complete"
        );
        assert_eq!(
            build("signalbox", "dev", "git", &["feature/x", "+"], "push#1"),
            "signalbox/dev/git/feature_x/_/push_1"
        );
    }

    #[test]
    fn build_splits_multi_level_prefixes() {
        assert_eq!(
            build("corp/signal+box", "prod", "cron", &["backup"], "finished"),
            "corp/signal_box/prod/cron/backup/finished"
        );
        assert_eq!(
            build("/corp//signalbox/", "prod", "cron", &[], "finished"),
            "corp/signalbox/prod/cron/finished"
        );
        assert_eq!(build("", "e", "s", &[], "x"), "_/e/s/x");
    }

    #[test]
    fn build_escapes_reserved_env_names() {
        let t = build("signalbox", "_health", "git", &[], "commit");
        assert_eq!(t, "signalbox/__health/git/commit");
        assert_eq!(classify("signalbox", &t), None);
        let p = parse("signalbox", &t).expect("an event topic");
        assert_eq!(p.env, "__health");
    }

    #[test]
    fn parse_splits_event_topics() {
        let p = parse("signalbox", "signalbox/prod/git/kernel/f14/commit").expect("parses");
        assert_eq!(
            p,
            ParsedTopic {
                prefix: "signalbox".into(),
                env: "prod".into(),
                system: "git".into(),
                entity: vec!["kernel".into(), "f14".into()],
                event: "commit".into(),
            }
        );
        let p = parse("signalbox", "signalbox/prod/koji/complete").expect("parses");
        assert!(p.entity.is_empty());
        assert_eq!(p.event, "complete");
    }

    #[test]
    fn parse_handles_multi_level_prefix() {
        let p = parse(
            "corp/signalbox",
            "corp/signalbox/prod/mail/bugzilla/received",
        )
        .expect("parses");
        assert_eq!(p.prefix, "corp/signalbox");
        assert_eq!(p.system, "mail");
        assert_eq!(p.entity, vec!["bugzilla".to_owned()]);
        assert_eq!(
            parse("corp", "corp/signalbox/prod/mail/x")
                .map(|p| p.env)
                .as_deref(),
            Some("signalbox")
        );
    }

    #[test]
    fn parse_rejects_what_is_not_an_event_topic() {
        // Not under the prefix, or only sharing its first characters.
        assert_eq!(parse("signalbox", "other/prod/git/commit"), None);
        assert_eq!(parse("signalbox", "signalboxes/prod/git/commit"), None);
        assert_eq!(parse("signalbox", "signalbox"), None);
        // Too few levels.
        assert_eq!(parse("signalbox", "signalbox/prod"), None);
        assert_eq!(parse("signalbox", "signalbox/prod/git"), None);
        // Reserved namespaces, whatever their shape.
        assert_eq!(parse("signalbox", "signalbox/_health/mailer"), None);
        assert_eq!(parse("signalbox", "signalbox/_failed/mailer/123"), None);
        assert_eq!(parse("signalbox", "signalbox/_audit/x/y/z"), None);
        // Filters and invalid names.
        assert_eq!(parse("signalbox", "signalbox/+/git/commit"), None);
        assert_eq!(parse("signalbox", "signalbox/prod/git/#"), None);
        assert_eq!(parse("signalbox", ""), None);
    }

    // ---- reserved namespaces ----

    #[test]
    fn reserved_topic_constructors() {
        assert_eq!(
            health_topic("signalbox", "mailer"),
            "signalbox/_health/mailer"
        );
        assert_eq!(health_filter("signalbox"), "signalbox/_health/+");
        assert_eq!(
            failed_topic("signalbox", "mailer", "0190-ab"),
            "signalbox/_failed/mailer/0190-ab"
        );
        assert_eq!(failed_filter("signalbox", None), "signalbox/_failed/#");
        assert_eq!(
            failed_filter("signalbox", Some("mailer")),
            "signalbox/_failed/mailer/+"
        );
        assert_eq!(
            replay_topic("signalbox", "mailer"),
            "signalbox/_replay/mailer"
        );
        assert_eq!(audit_topic("signalbox"), "signalbox/_audit");
        assert_eq!(ping_topic("signalbox"), "signalbox/_ping");
        assert_eq!(roster_topic("signalbox"), "signalbox/_roster");
        assert_eq!(health_topic("corp/sb/", "a/b"), "corp/sb/_health/a_b");
        for filter in [
            health_filter("signalbox"),
            failed_filter("signalbox", None),
            failed_filter("signalbox", Some("x")),
        ] {
            assert_eq!(validate_filter(&filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn classify_recognises_every_reserved_shape() {
        let p = "corp/signalbox";
        assert_eq!(
            classify(p, &health_topic(p, "mailer")),
            Some(Reserved::Health {
                listener: "mailer".into()
            })
        );
        assert_eq!(
            classify(p, &failed_topic(p, "mailer", "42")),
            Some(Reserved::Failed {
                listener: "mailer".into(),
                id: "42".into()
            })
        );
        assert_eq!(
            classify(p, &replay_topic(p, "mailer")),
            Some(Reserved::Replay {
                listener: "mailer".into()
            })
        );
        assert_eq!(classify(p, &audit_topic(p)), Some(Reserved::Audit));
        assert_eq!(classify(p, &ping_topic(p)), Some(Reserved::Ping));
        assert_eq!(classify(p, &roster_topic(p)), Some(Reserved::Roster));
    }

    #[test]
    fn classify_rejects_other_shapes() {
        let p = "signalbox";
        for topic in [
            "signalbox/prod/git/commit",
            "signalbox/_health",
            "signalbox/_health/",
            "signalbox/_health/a/b",
            "signalbox/_health/+",
            "signalbox/_failed/mailer",
            "signalbox/_failed/mailer/1/2",
            "signalbox/_failed//1",
            "signalbox/_replay",
            "signalbox/_audit/x",
            "signalbox/_ping/",
            "signalbox/_roster/x",
            "other/_ping",
            "signalbox",
            "_ping",
        ] {
            assert_eq!(classify(p, topic), None, "{topic}");
        }
    }

    // ---- validation ----

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("signalbox/prod/git/commit"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("a//b"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/broker"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(
            validate_topic_name("a/+/b"),
            Err(TopicError::Wildcard {
                topic: "a/+/b".into()
            })
        );
        assert!(matches!(
            validate_topic_name("sport#"),
            Err(TopicError::Wildcard { .. })
        ));
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(
            validate_topic_name(&format!("{max}b")),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
    }

    #[test]
    fn filters_from_the_spec() {
        for ok in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "/finance",
            "$SYS/#",
            "a//b",
            "$share/group/sport/#",
            "$share/g/+",
            "$sharex/a",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        for (bad, level) in [
            ("sport/tennis#", "tennis#"),
            ("sport/tennis/#/ranking", "#"),
            ("sport+", "sport+"),
            ("a/b+/c", "b+"),
            ("#/a", "#"),
            ("$share/g/a/#/b", "#"),
        ] {
            assert_eq!(
                validate_filter(bad),
                Err(TopicError::BadWildcard {
                    filter: bad.into(),
                    level: level.into()
                }),
                "{bad}"
            );
        }
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_filter("a/\0"), Err(TopicError::Nul));
        assert_eq!(
            validate_filter(&"a".repeat(MAX_TOPIC_LEN + 2)),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 2
            })
        );
    }

    #[test]
    fn shared_subscription_groups() {
        for bad in [
            "$share",
            "$share/",
            "$share/group",
            "$share/group/",
            "$share//a",
            "$share/gr+oup/a",
            "$share/#/a",
        ] {
            assert_eq!(
                validate_filter(bad),
                Err(TopicError::BadShareGroup { filter: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert_eq!(
            TopicError::Wildcard {
                topic: "a/+/b".into()
            }
            .to_string(),
            "topic `a/+/b` contains a wildcard (`+` or `#`); publish needs a concrete topic"
        );
        assert_eq!(
            TopicError::TooLong { len: 70000 }.to_string(),
            "topic is 70000 bytes long; MQTT allows at most 65535 bytes"
        );
        assert!(TopicError::BadShareGroup {
            filter: "$share//a".into()
        }
        .to_string()
        .contains("$share/{group}/{filter}"));
        assert!(TopicError::BadWildcard {
            filter: "a#".into(),
            level: "a#".into()
        }
        .to_string()
        .contains("level `a#`"));
        assert!(TopicError::Empty.to_string().contains("empty"));
        assert!(TopicError::Nul.to_string().contains("NUL"));
    }

    // ---- matching ----

    #[test]
    fn matching_examples_from_the_spec() {
        // §4.7.1.2: multi-level wildcard.
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport/tennis"));
        // §4.7.1.3: single-level wildcard.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        // Exact and empty levels.
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+", "x"));
        // Topic levels are case sensitive.
        assert!(!matches("ACCOUNTS", "Accounts"));
    }

    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        // §4.7.2.
        assert!(!matches("#", "$SYS/broker/clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/Clients", "$SYS/monitor/Clients"));
        // Only the first level counts.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("#", "a/$x"));
    }

    #[test]
    fn shared_subscriptions_match_like_their_filter() {
        assert!(matches(
            "$share/workers/signalbox/prod/#",
            "signalbox/prod/git/commit"
        ));
        assert!(matches("$share/workers/+/prod/#", "signalbox/prod"));
        assert!(!matches(
            "$share/workers/signalbox/dev/#",
            "signalbox/prod/x"
        ));
        assert!(!matches("$share/workers/#", "$SYS/x"));
        // A malformed share prefix matches nothing.
        assert!(!matches("$share//#", "a"));
        assert!(!matches("$share/g", "$share/g"));
        // `$share` is only special as the whole first level.
        assert!(matches("$sharex/#", "$sharex/a"));
    }

    #[test]
    fn invalid_filters_and_topics_match_nothing() {
        assert!(!matches("sport/tennis#", "sport/tennis#"));
        assert!(!matches("a/#/b", "a/x/b"));
        assert!(!matches("", ""));
        assert!(!matches("#", ""));
        assert!(!matches("a/+", "a/+"));
        assert!(!matches("a/#", "a/#"));
        assert!(!matches("#", "a\0"));
    }

    #[test]
    fn reserved_filters_match_their_topics() {
        let p = "signalbox";
        assert!(matches(&health_filter(p), &health_topic(p, "mailer")));
        assert!(!matches(&health_filter(p), &failed_topic(p, "mailer", "1")));
        assert!(matches(
            &failed_filter(p, None),
            &failed_topic(p, "mailer", "1")
        ));
        assert!(matches(
            &failed_filter(p, Some("mailer")),
            &failed_topic(p, "mailer", "1")
        ));
        assert!(!matches(
            &failed_filter(p, Some("rss")),
            &failed_topic(p, "mailer", "1")
        ));
    }

    // ---- properties ----

    /// An independent reference matcher on level vectors, written the
    /// way the spec reads, to check `matches` against.
    fn reference_matches(filter: &str, topic: &str) -> bool {
        fn valid_filter(levels: &[&str]) -> bool {
            levels.iter().enumerate().all(|(i, l)| {
                *l == "+" || (*l == "#" && i + 1 == levels.len()) || !l.contains(['+', '#'])
            })
        }
        fn rec(f: &[&str], t: &[&str]) -> bool {
            match (f.first(), t.first()) {
                (Some(&"#"), _) => true,
                (Some(&"+"), Some(_)) => rec(&f[1..], &t[1..]),
                (Some(a), Some(b)) => a == b && rec(&f[1..], &t[1..]),
                (None, None) => true,
                _ => false,
            }
        }
        if filter.is_empty() || topic.is_empty() || topic.contains(['+', '#']) {
            return false;
        }
        let mut f: Vec<&str> = filter.split('/').collect();
        if f[0] == "$share" {
            if f.len() < 3 || f[1].is_empty() || f[1].contains(['+', '#']) {
                return false;
            }
            f.drain(..2);
            if f == [""] {
                return false;
            }
        }
        let t: Vec<&str> = topic.split('/').collect();
        if !valid_filter(&f) {
            return false;
        }
        if t[0].starts_with('$') && (f[0] == "+" || f[0] == "#") {
            return false;
        }
        rec(&f, &t)
    }

    fn levels(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 1..=max).prop_map(|l| l.join("/"))
    }

    const FILTER_LEVELS: &[&str] = &["a", "b", "", "$x", "+", "#"];
    const TOPIC_LEVELS: &[&str] = &["a", "b", "", "$x"];

    proptest! {
        #[test]
        fn sanitize_segment_yields_one_safe_level(s in any::<String>()) {
            let out = sanitize_segment(&s);
            prop_assert!(!out.is_empty());
            prop_assert!(out.len() <= MAX_SEGMENT_LEN);
            prop_assert!(!out.contains(['/', '+', '#', '\0']));
            prop_assert!(!out.chars().any(char::is_control));
            prop_assert!(!out.starts_with('$'));
            prop_assert_eq!(out.trim(), out.as_str());
            // Sanitising is idempotent.
            prop_assert_eq!(sanitize_segment(&out), out.clone());
        }

        #[test]
        fn sanitize_segment_on_hostile_text(s in "[ $/+#\t\n\0a-zé\u{85}\u{FFFF}]{0,200}") {
            let out = sanitize_segment(&s);
            prop_assert!(!out.is_empty() && out.len() <= MAX_SEGMENT_LEN);
            prop_assert!(!out.contains(['/', '+', '#', '\0']));
            prop_assert!(!out.chars().any(|c| c.is_control() || is_noncharacter(c)));
            prop_assert!(!out.starts_with('$'));
        }

        #[test]
        fn build_then_parse_gives_back_the_sanitised_levels(
            prefix in "[a-z/ +]{0,12}",
            env in any::<String>(),
            system in any::<String>(),
            entity in prop::collection::vec(any::<String>(), 0..4),
            event in any::<String>(),
        ) {
            let entity_refs: Vec<&str> = entity.iter().map(String::as_str).collect();
            let topic = build(&prefix, &env, &system, &entity_refs, &event);
            prop_assert_eq!(validate_topic_name(&topic), Ok(()));
            prop_assert_eq!(classify(&prefix, &topic), None);
            let parsed = parse(&prefix, &topic);
            prop_assert_eq!(parsed, Some(ParsedTopic {
                prefix: sanitize_prefix(&prefix),
                env: sanitize_env(&env),
                system: sanitize_segment(&system),
                entity: entity.iter().map(|e| sanitize_segment(e)).collect(),
                event: sanitize_segment(&event),
            }));
        }

        #[test]
        fn reserved_constructors_classify_back(
            prefix in "[a-z/]{0,12}",
            listener in any::<String>(),
            id in any::<String>(),
        ) {
            let listener_level = sanitize_segment(&listener);
            prop_assert_eq!(
                classify(&prefix, &health_topic(&prefix, &listener)),
                Some(Reserved::Health { listener: listener_level.clone() })
            );
            prop_assert_eq!(
                classify(&prefix, &replay_topic(&prefix, &listener)),
                Some(Reserved::Replay { listener: listener_level.clone() })
            );
            let failed = failed_topic(&prefix, &listener, &id);
            prop_assert_eq!(
                classify(&prefix, &failed),
                Some(Reserved::Failed { listener: listener_level, id: sanitize_segment(&id) })
            );
            prop_assert!(matches(&failed_filter(&prefix, None), &failed));
            prop_assert!(matches(&failed_filter(&prefix, Some(&listener)), &failed));
            prop_assert_eq!(parse(&prefix, &failed), None);
        }

        #[test]
        fn matches_agrees_with_the_reference(
            filter in levels(FILTER_LEVELS, 5),
            topic in levels(TOPIC_LEVELS, 5),
        ) {
            prop_assert_eq!(matches(&filter, &topic), reference_matches(&filter, &topic),
                "filter {:?} topic {:?}", filter, topic);
        }

        #[test]
        fn matches_agrees_with_the_reference_on_shared_and_odd_input(
            filter in levels(&["$share", "g", "a", "", "+", "#", "$x"], 6),
            topic in levels(&["a", "", "$x", "+", "g"], 4),
        ) {
            prop_assert_eq!(matches(&filter, &topic), reference_matches(&filter, &topic),
                "filter {:?} topic {:?}", filter, topic);
        }

        #[test]
        fn a_valid_topic_matches_itself_and_hash(topic in levels(TOPIC_LEVELS, 6)) {
            prop_assume!(!topic.is_empty());
            prop_assert!(matches(&topic, &topic));
            prop_assert_eq!(matches("#", &topic), !topic.starts_with('$'));
        }

        #[test]
        fn matching_never_panics(filter in any::<String>(), topic in any::<String>()) {
            let _ = matches(&filter, &topic);
            let _ = validate_filter(&filter);
            let _ = parse(&filter, &topic);
            let _ = classify(&filter, &topic);
        }
    }
}
