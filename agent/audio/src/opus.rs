//! Opus packets from symphonia's Ogg and Matroska/WebM demuxers, decoded by the pure-Rust `opus-pure`.
//!
//! ```text
//!  demuxer packet ─▶ OpusDecoder at 48 kHz ─▶ drop the packet's trims ─▶ Sink (pre-skip, resample to 16 kHz)
//! ```
//! Decoded at 48 kHz, Opus's own clock: every time the container gives (OpusHead pre-skip, packet trims)
//! counts 48 kHz samples, and the decoder's built-in 16 kHz output decimates CELT without our resampler's
//! filter (a 1 kHz tone came back 7% quiet). Neither symphonia demuxer removes the pre-skip (Ogg records it as
//! the track's delay, Matroska not at all), so the sink drops it; Ogg's end trim (from the last granule
//! position) arrives on the last packet.
use crate::demux::Outcome;
use crate::error::AudioError;
use crate::sink::Sink;
use opus_pure::{MAX_PACKET_SAMPLES, OpusDecoder};
use symphonia::core::codecs::audio::AudioCodecParameters;
use symphonia::core::packet::Packet;

/// Opus's clock: every Opus time field counts samples at 48 kHz, and it is the rate decoded to.
pub(crate) const OPUS_RATE: u32 = 48_000;

pub(crate) struct OpusTrack {
    decoder: OpusDecoder,
    channels: usize,
    /// 48 kHz frames of encoder warm-up at the start, for the sink to drop.
    pre_skip: u64,
    /// Linear output gain from the header (1.0 almost always).
    gain: f32,
    pcm: Vec<f32>,
}

/// The fields of an `OpusHead` this decoder uses (RFC 7845 section 5.1).
struct OpusHead {
    channels: usize,
    pre_skip: u16,
    gain_q8_db: i16,
    mapping_family: u8,
}

impl OpusTrack {
    pub(crate) fn new(params: &AudioCodecParameters) -> Result<Self, AudioError> {
        let head = match params.extra_data.as_deref() {
            Some(extra) => parse_head(extra)?,
            // WebM without CodecPrivate: only the channel count is known.
            None => OpusHead {
                channels: params.channels.as_ref().map_or(1, |c| c.count()),
                pre_skip: 0,
                gain_q8_db: 0,
                mapping_family: 0,
            },
        };
        if head.channels > 2 || head.mapping_family > 1 {
            return Err(AudioError::unsupported(format!(
                "Opus with {} channels (mapping family {}); only mono and stereo Opus decode",
                head.channels, head.mapping_family
            )));
        }
        if head.channels == 0 {
            return Err(AudioError::corrupt("the Opus header declares no channels"));
        }
        let decoder = OpusDecoder::new(OPUS_RATE as i32, head.channels)
            .map_err(|_| AudioError::corrupt("the Opus header could not be used"))?;
        Ok(OpusTrack {
            pcm: vec![0.0; MAX_PACKET_SAMPLES * head.channels],
            decoder,
            channels: head.channels,
            pre_skip: u64::from(head.pre_skip),
            gain: 10f32.powf(f32::from(head.gain_q8_db) / (20.0 * 256.0)),
        })
    }

    /// Decodes one packet into the sink. A packet the decoder refuses is `Rejected`, counted like symphonia's
    /// own decode errors; the error is the sink's (the cap).
    pub(crate) fn decode(&mut self, packet: &Packet, sink: &mut Sink) -> Result<Outcome, AudioError> {
        let frames = match self.decoder.decode(&packet.data, MAX_PACKET_SAMPLES, &mut self.pcm) {
            Ok(frames) => frames,
            Err(_) => return Ok(Outcome::Rejected),
        };
        let trim_start = packet.trim_start.get() as usize;
        let keep_end = frames.saturating_sub(packet.trim_end.get() as usize);
        if trim_start >= keep_end {
            return Ok(Outcome::Decoded);
        }
        let kept = &mut self.pcm[trim_start * self.channels..keep_end * self.channels];
        if self.gain != 1.0 {
            kept.iter_mut().for_each(|s| *s *= self.gain);
        }
        sink.push_interleaved(kept, self.channels)?;
        Ok(Outcome::Decoded)
    }

    pub(crate) fn pre_skip(&self) -> u64 {
        self.pre_skip
    }

    pub(crate) fn channels(&self) -> u16 {
        self.channels as u16
    }
}

fn parse_head(extra: &[u8]) -> Result<OpusHead, AudioError> {
    if extra.len() < 19 || !extra.starts_with(b"OpusHead") {
        return Err(AudioError::corrupt("the Opus header (OpusHead) is missing or short"));
    }
    Ok(OpusHead {
        channels: usize::from(extra[9]),
        pre_skip: u16::from_le_bytes([extra[10], extra[11]]),
        gain_q8_db: i16::from_le_bytes([extra[16], extra[17]]),
        mapping_family: extra[18],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(channels: u8, pre_skip: u16, family: u8) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(family);
        head
    }

    #[test]
    fn head_fields_are_read() {
        let parsed = parse_head(&head(2, 312, 0)).unwrap();
        assert_eq!((parsed.channels, parsed.pre_skip, parsed.gain_q8_db, parsed.mapping_family), (2, 312, 0, 0));
    }

    #[test]
    fn surround_opus_is_unsupported_not_corrupt() {
        let mut params = AudioCodecParameters::new();
        params.with_extra_data(head(6, 312, 1).into_boxed_slice());
        let error = OpusTrack::new(&params).err().unwrap();
        assert_eq!(error.category(), "unsupported");
    }

    #[test]
    fn a_short_head_is_corrupt() {
        assert_eq!(parse_head(b"OpusHead\x01").err().unwrap().category(), "corrupt");
    }
}
