//! signalbox-bridges: the `signalbox-bridge` multi-call binary's library.
//!
//! Bridges sit next to legacy systems and turn their signals into messages
//! on the bus, without changing those systems. Modules:
//! - [`cli`]: the options every command shares, exit codes, logging.
//! - [`commands`]: the command line of every bridge and its dispatch.
//! - [`session`]: one run on the bus: bounded connect, flush of older
//!   spooled messages, publish-or-spool, the bridge's own health report.
//! - [`inbound`]: legacy → bus: [`inbound::mail`] (procmail / sendmail pipe
//!   or a Maildir), [`inbound::cron`] (the crontab wrapper),
//!   [`inbound::git`] (the post-receive hook), [`inbound::rss`] (the
//!   feed-polling daemon, or `--once`).
//! - [`outbound`]: bus → legacy listeners on the listener runtime:
//!   [`outbound::exec`] (run a command per message), [`outbound::email`]
//!   (SMTP, sendmail or a Maildir; digests), [`outbound::feed`] (an RSS or
//!   Atom file, served over HTTP), [`outbound::webhook`] (signed HTTP POST),
//!   [`outbound::recorder`] (every message into the history database).
//! - [`spool`]: `signalbox-bridge spool flush|list`.
//! - [`history`]: the message history database that
//!   [`outbound::recorder`] writes and `signalbox history` reads.
//!
//! The logic lives here so that tests reach it; `main.rs` only parses flags
//! and dispatches.

pub mod cli;
pub mod commands;
pub mod history;
pub mod inbound;
pub mod outbound;
pub mod session;
pub mod spool;
