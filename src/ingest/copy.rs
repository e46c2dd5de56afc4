//! PostgreSQL binary `COPY` encoding of event rows.
//!
//! Binary COPY skips the server's text parsing of every value, which is a
//! large part of the ingest cost. The column list is [`EVENT_COLUMNS`].

use chrono::{DateTime, NaiveDate, Utc};

use crate::events::Event;

/// The columns written, in order (everything but `ingested_at`).
pub const EVENT_COLUMNS: &str = "event_day, event_id, event_type, event_time, source, model, \
     latency_ms, prompt_tokens, completion_tokens, cost_usd, status, rating, name, value, \
     error_type, severity, user_id, session_id, request_id, model_id, priority, data, metadata, \
     kafka_topic, kafka_partition, kafka_offset";

const FIELD_COUNT: i16 = 26;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds between the Unix epoch and PostgreSQL's 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A growing binary COPY stream: header, rows, then [`CopyBuffer::finish`].
#[derive(Debug)]
pub struct CopyBuffer {
    buf: Vec<u8>,
    rows: usize,
}

impl Default for CopyBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyBuffer {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBuffer { buf, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one event with its Kafka coordinates.
    pub fn push(&mut self, e: &Event, topic: &str, partition: i32, offset: i64) {
        self.rows += 1;
        self.buf.extend_from_slice(&FIELD_COUNT.to_be_bytes());
        self.date(e.day());
        self.field(e.event_id.as_bytes());
        self.text(Some(e.event_type.as_str()));
        self.timestamp(e.timestamp);
        self.text(Some(&e.source));
        self.text(e.model.as_deref());
        self.f64(e.latency_ms);
        self.i64(e.prompt_tokens);
        self.i64(e.completion_tokens);
        self.f64(e.cost_usd);
        self.text(e.status.as_deref());
        self.f64(e.rating);
        self.text(e.name.as_deref());
        self.f64(e.value);
        self.text(e.error_type.as_deref());
        self.text(e.severity.as_deref());
        self.text(e.user_id.as_deref());
        self.text(e.session_id.as_deref());
        self.text(e.request_id.as_deref());
        self.text(e.model_id.as_deref());
        self.text(e.priority.as_deref());
        self.jsonb(Some(&e.data));
        self.jsonb(e.metadata.as_deref());
        self.text(Some(topic));
        self.field(&partition.to_be_bytes());
        self.field(&offset.to_be_bytes());
    }

    /// The complete stream, with the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        // Values are bounded by ingest.max_event_bytes, far below i32::MAX.
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    fn text(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.field(s.as_bytes()),
            None => self.null(),
        }
    }

    fn jsonb(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.buf
                    .extend_from_slice(&((s.len() + 1) as i32).to_be_bytes());
                self.buf.push(1); // jsonb binary format version
                self.buf.extend_from_slice(s.as_bytes());
            }
            None => self.null(),
        }
    }

    fn f64(&mut self, v: Option<f64>) {
        match v {
            Some(x) => self.field(&x.to_be_bytes()),
            None => self.null(),
        }
    }

    fn i64(&mut self, v: Option<i64>) {
        match v {
            Some(x) => self.field(&x.to_be_bytes()),
            None => self.null(),
        }
    }

    fn date(&mut self, d: NaiveDate) {
        let unix_days = (d - NaiveDate::default()).num_days() as i32;
        self.field(&(unix_days - PG_EPOCH_DAYS).to_be_bytes());
    }

    fn timestamp(&mut self, t: DateTime<Utc>) {
        self.field(&(t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer() {
        let bytes = CopyBuffer::new().finish();
        assert_eq!(&bytes[..11], SIGNATURE);
        assert_eq!(bytes.len(), 11 + 4 + 4 + 2);
        assert_eq!(&bytes[bytes.len() - 2..], &[0xff, 0xff]);
    }

    #[test]
    fn epochs() {
        assert_eq!(NaiveDate::default().to_string(), "1970-01-01");
        let y2k = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(y2k.timestamp_micros(), PG_EPOCH_MICROS);
        assert_eq!(
            (y2k.date_naive() - NaiveDate::default()).num_days(),
            PG_EPOCH_DAYS as i64
        );
    }
}
