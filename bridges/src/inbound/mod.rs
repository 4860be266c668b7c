//! Inbound bridges: legacy system → bus, one file per bridge.

pub mod cron;
pub mod git;
pub mod mail;
pub mod rss;
