//! W3C Trace Context (`traceparent`) for the doors: accepted from clients, forwarded to upstream backends.
//!
//! ```text
//!  client ──traceparent: 00-<trace>-<client span>-01──▶ door span (trace_id field = <trace>)
//!                                                        └─▶ upstream: traceparent 00-<trace>-<our span>-01
//! ```
//! This works whether or not OTLP export is on: with it, the door's OpenTelemetry span is parented on the client's
//! context and its span id is what the upstream sees; without it, a fresh span id stands for the door's hop.
//! A malformed header is ignored (a new trace starts), as the W3C spec asks: tracing never refuses a request.
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const TRACEPARENT: &str = "traceparent";

/// One hop's trace context: the trace it belongs to, the span that sent it, and the sampled flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value (version 00; future versions are read by their first four fields as the spec
    /// says). `None` for anything malformed, an all-zero id, or version ff.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let parent_id: [u8; 8] = decode_hex(parent)?;
        let [flags] = decode_hex::<1>(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, parent_id, flags })
    }

    /// A new trace, sampled, for a request that arrived without a usable `traceparent`.
    pub fn new_root() -> TraceContext {
        TraceContext { trace_id: nonzero_random(), parent_id: nonzero_random(), flags: 0x01 }
    }

    /// The context for the next hop: the same trace, `span_id` as the parent.
    pub fn child(&self, span_id: [u8; 8]) -> TraceContext {
        TraceContext { parent_id: span_id, ..*self }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.parent_id), self.flags)
    }

    /// The incoming context from request headers, or a new root.
    pub fn from_headers(headers: &http::HeaderMap) -> TraceContext {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .unwrap_or_else(Self::new_root)
    }

    /// Makes `span` a child of this context in the OpenTelemetry layer (a no-op when OTLP export is off).
    pub fn parent(&self, span: &tracing::Span) {
        // A span no subscriber wants (OTLP off, level filtered) has no OpenTelemetry data to parent.
        if span.is_disabled() {
            return;
        }
        let remote = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(self.trace_id),
            opentelemetry::trace::SpanId::from_bytes(self.parent_id),
            opentelemetry::trace::TraceFlags::new(self.flags),
            true,
            opentelemetry::trace::TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// What to send upstream from inside `span`: the OpenTelemetry span id when export is on, else a fresh id for
    /// this hop.
    pub fn outgoing(&self, span: &tracing::Span) -> TraceContext {
        let context = span.context();
        let otel = context.span().span_context().clone();
        if otel.is_valid() && otel.trace_id().to_bytes() == self.trace_id {
            self.child(otel.span_id().to_bytes())
        } else {
            self.child(nonzero_random())
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // The spec allows lowercase hex only.
    if s.len() != 2 * N || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&id_bits().to_le_bytes()[..chunk.len()]);
        }
        if bytes != [0; N] {
            return bytes;
        }
    }
}

/// 64 bits for an identifier that must be unique but need not be secret: trace and span ids, request ids.
///
/// wyrand over a per-thread state seeded once from the OS generator. Every request takes a request id and
/// (without a client `traceparent`) 24 bytes of trace ids; drawing those from the cryptographic thread generator
/// (ChaCha, with its buffer refills and reseed checks) was ~150 ns of the authenticated HTTP route. Nothing
/// here guards anything: W3C Trace Context asks for unique, random-looking ids, and request ids only correlate.
/// Secrets (keys, tokens, tickets, HMAC keys) keep using the cryptographic generator.
pub fn id_bits() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random());
    }
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let wide = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (wide as u64) ^ ((wide >> 64) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bits_differ_between_draws_and_threads() {
        let here: std::collections::HashSet<u64> = (0..10_000).map(|_| id_bits()).collect();
        assert_eq!(here.len(), 10_000);
        let there: Vec<u64> = std::thread::spawn(|| (0..1_000).map(|_| id_bits()).collect()).join().unwrap();
        assert!(there.iter().all(|id| !here.contains(id)), "threads are seeded apart");
        assert_ne!(TraceContext::new_root(), TraceContext::new_root());
        assert_eq!(hex(&[0x00, 0x9f, 0xa5]), "009fa5");
    }

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let ctx = TraceContext::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.flags, 1);
        assert_eq!(ctx.header_value(), SPEC_EXAMPLE);
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let ctx = TraceContext::parse(&format!("01{}-more", &SPEC_EXAMPLE[2..])).unwrap();
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_child_keeps_the_trace_and_changes_the_parent() {
        let ctx = TraceContext::parse(SPEC_EXAMPLE).unwrap();
        let out = ctx.outgoing(&tracing::Span::none());
        assert_eq!(out.trace_id, ctx.trace_id);
        assert_ne!(out.parent_id, ctx.parent_id);
    }

    #[test]
    fn a_missing_header_starts_a_sampled_trace() {
        let ctx = TraceContext::from_headers(&http::HeaderMap::new());
        assert_ne!(ctx.trace_id, [0; 16]);
        assert_eq!(ctx.flags, 1);
    }
}
