//! The other source of the console's messages: pages of older messages read
//! from the recorder's database for the Stream view ([`Effect::LoadHistory`]).
//!
//! Each request runs on a thread of its own, never on the console loop's:
//! opening the database and a query take milliseconds, but a database
//! locked by a writer can make SQLite wait for seconds, and the keyboard
//! must not. The app asks for one page at a time, so there is at most one
//! such thread. Rows are decoded here as the ingest task decodes received
//! messages (capped, once), and the answer goes into the console loop as
//! [`Event::History`].
//!
//! [`Effect::LoadHistory`]: crate::app::Effect::LoadHistory

use signalbox_bridges::history::{Before, HistoryError, Store};
use signalbox_common::failed::one_line;
use tokio::sync::mpsc;

use crate::app::HistoryRequest;
use crate::event::{Event, HistoryPage, Incoming, OlderMessages, PAYLOAD_CAP};

/// Reads one page in a thread of its own and sends it into `events`.
pub fn spawn(request: HistoryRequest, events: mpsc::Sender<Event>) {
    let generation = request.generation;
    let spawned = std::thread::Builder::new()
        .name("signalbox-history".into())
        .spawn({
            let events = events.clone();
            move || {
                let page = load(&request);
                // The console may have quit meanwhile: nobody to tell.
                let _ = events.blocking_send(Event::History(page));
            }
        });
    if let Err(e) = spawned {
        let _ = events.try_send(Event::History(HistoryPage {
            generation,
            result: Err(format!("cannot read the history database: {e}")),
        }));
    }
}

/// Reads one page (blocking): the newest `request.query.limit` matches
/// older than `request.before`, oldest first, decoded.
pub fn load(request: &HistoryRequest) -> HistoryPage {
    HistoryPage {
        generation: request.generation,
        result: read(request).map_err(|e| describe(&e)),
    }
}

fn read(request: &HistoryRequest) -> Result<OlderMessages, HistoryError> {
    let store = Store::open_reader(&request.db)?;
    let found = match request.before {
        Some(before) => store.query_before(&request.query, before)?,
        None => store.query(&request.query)?,
    };
    let next = found.messages.first().map(Before::message);
    let rows = found
        .messages
        .iter()
        .map(|m| {
            Incoming::decode(
                &request.prefix,
                &m.topic,
                &m.payload,
                false,
                m.time,
                PAYLOAD_CAP,
            )
        })
        .collect();
    Ok(OlderMessages {
        rows,
        more: found.truncated,
        next,
    })
}

/// One line for the status line, saying what to do where there is
/// something to do.
fn describe(e: &HistoryError) -> String {
    match e {
        HistoryError::Missing { path } => format!(
            "no history database at {}: run `signalbox-bridge recorder` to keep one, or set `db` in the config file's [history] table",
            path.display()
        ),
        other => one_line(&other.to_string()),
    }
}
