//! A local crash-report collector: a plain HTTP server on 127.0.0.1 that
//! accepts Sentry envelopes and hands their events to the test as JSON.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    error::{PeerError, Result},
    https::{HttpServer, LoggedRequest, Resource},
};

/// The project number in the collector's DSN.
pub const CRASH_PROJECT: u32 = 1;
/// The public key in the collector's DSN.
pub const CRASH_KEY: &str = "testkit";

const PEER: &str = "crash collector";

/// Accepts `POST /api/1/envelope/` like a Sentry server and keeps every
/// body. Plain HTTP on loopback; stops when dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use testkit::CrashCollector;
///
/// # fn main() -> Result<(), testkit::PeerError> {
/// let collector = CrashCollector::start()?;
/// let dsn = collector.dsn(); // http://testkit@127.0.0.1:PORT/1
/// // ... run the program under test with crash reports sent to `dsn` ...
/// let events = collector.wait_for_events(1, Duration::from_secs(10))?;
/// assert_eq!(events[0]["level"], "fatal");
/// # let _ = dsn;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CrashCollector {
    server: HttpServer,
}

impl CrashCollector {
    /// Starts the collector on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when the port cannot be bound.
    pub fn start() -> Result<Self> {
        let server = HttpServer::plain()
            .serve(
                envelope_path(),
                Resource::document("{}").with_content_type("application/json"),
            )
            .start()?;
        Ok(Self { server })
    }

    /// `http://testkit@127.0.0.1:PORT/1`, the DSN to send reports to.
    #[must_use]
    pub fn dsn(&self) -> String {
        format!("http://{CRASH_KEY}@{}/{CRASH_PROJECT}", self.server.addr())
    }

    /// Every request received so far, on any path.
    #[must_use]
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.server.requests()
    }

    /// The envelopes received so far, in order.
    ///
    /// # Errors
    ///
    /// [`PeerError::Malformed`] when a body is not an envelope.
    pub fn envelopes(&self) -> Result<Vec<Envelope>> {
        self.server
            .requests_for(&envelope_path())
            .iter()
            .map(|r| Envelope::parse(&r.body))
            .collect()
    }

    /// The payloads of the `event` items received so far, as JSON.
    ///
    /// # Errors
    ///
    /// [`PeerError::Malformed`] when a body is not an envelope or an event
    /// is not JSON.
    pub fn events(&self) -> Result<Vec<Value>> {
        let mut events = Vec::new();
        for envelope in self.envelopes()? {
            for item in envelope.items {
                if item.item_type() == Some("event") {
                    events.push(item.json()?);
                }
            }
        }
        Ok(events)
    }

    /// Waits until at least `count` events arrived; returns all of them.
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`] when fewer arrived within `limit`, and what
    /// [`CrashCollector::events`] returns.
    pub fn wait_for_events(&self, count: usize, limit: Duration) -> Result<Vec<Value>> {
        let start = Instant::now();
        loop {
            let events = self.events()?;
            if events.len() >= count {
                return Ok(events);
            }
            if start.elapsed() >= limit {
                return Err(PeerError::Timeout {
                    peer: PEER.to_owned(),
                    what: format!("{count} events ({} arrived)", events.len()),
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `/api/1/envelope/`.
fn envelope_path() -> String {
    format!("/api/{CRASH_PROJECT}/envelope/")
}

/// A Sentry envelope: a JSON header line, then items, each a JSON header
/// line and a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The envelope's header.
    pub headers: Value,
    /// Its items in order.
    pub items: Vec<EnvelopeItem>,
}

/// One item of an [`Envelope`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeItem {
    /// The item's header (`type`, `length`, ...).
    pub headers: Value,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl EnvelopeItem {
    /// The `type` header: `event`, `session`, `client_report`, ...
    #[must_use]
    pub fn item_type(&self) -> Option<&str> {
        self.headers.get("type").and_then(Value::as_str)
    }

    /// The payload as JSON.
    ///
    /// # Errors
    ///
    /// [`PeerError::Malformed`] when it is not.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.payload).map_err(|e| malformed("envelope item", e))
    }
}

impl Envelope {
    /// Parses the envelope format: items with a `length` header take that
    /// many bytes, others run to the next newline.
    ///
    /// # Errors
    ///
    /// [`PeerError::Malformed`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (header, mut rest) = split_line(bytes);
        let headers =
            serde_json::from_slice(header).map_err(|e| malformed("envelope header", e))?;
        let mut items = Vec::new();
        while !rest.is_empty() {
            let (line, after) = split_line(rest);
            if line.is_empty() {
                rest = after;
                continue;
            }
            let item_headers: Value =
                serde_json::from_slice(line).map_err(|e| malformed("item header", e))?;
            let (payload, after) = match item_headers.get("length").and_then(Value::as_u64) {
                Some(length) => {
                    let length = usize::try_from(length).unwrap_or(usize::MAX);
                    if length > after.len() {
                        return Err(malformed(
                            "envelope item",
                            format!("length {length} but {} bytes left", after.len()),
                        ));
                    }
                    let (payload, after) = after.split_at(length);
                    (payload, after.strip_prefix(b"\n").unwrap_or(after))
                }
                None => split_line(after),
            };
            items.push(EnvelopeItem {
                headers: item_headers,
                payload: payload.to_vec(),
            });
            rest = after;
        }
        Ok(Self { headers, items })
    }
}

fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

fn malformed(what: &str, error: impl std::fmt::Display) -> PeerError {
    PeerError::Malformed {
        peer: PEER.to_owned(),
        what: what.to_owned(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_with_and_without_lengths_parse() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
            {\"type\":\"event\",\"length\":13}\n{\"level\":\"x\"}\n\
            {\"type\":\"client_report\"}\n{\"discarded_events\":[]}\n";
        let envelope = Envelope::parse(body).unwrap();
        assert_eq!(envelope.items.len(), 2);
        assert_eq!(envelope.items[0].item_type(), Some("event"));
        assert_eq!(envelope.items[0].json().unwrap()["level"], "x");
        assert_eq!(envelope.items[1].item_type(), Some("client_report"));
        assert!(Envelope::parse(b"not json\n").is_err());
        assert!(Envelope::parse(b"{}\n{\"type\":\"event\",\"length\":99}\n{}").is_err());
    }
}
