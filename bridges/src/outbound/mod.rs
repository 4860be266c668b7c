//! Outbound listeners (bus → legacy): each runs on the listener runtime of
//! signalbox-common (acks after processing, retries, failure records,
//! health, replay) and only says what to do with one message.

pub mod email;
pub mod exec;
pub mod feed;
pub mod flags;
pub mod recorder;
pub mod webhook;
