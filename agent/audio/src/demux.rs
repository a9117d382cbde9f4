//! Containers and codecs through symphonia, one packet at a time into the [`Sink`].
//!
//! ```text
//!  bytes ─▶ probe (magic bytes, then the hint) ─▶ FormatReader ─▶ first decodable audio track
//!        ─▶ declared length > cap? 413 before any decoding
//!        ─▶ packets ─▶ symphonia decoder, or OpusTrack for Opus ─▶ Sink (trim, mixdown, cap, 16 kHz)
//! ```
//! Damage is handled the way players do: a packet the codec rejects is skipped, and a stream that ends early
//! (a truncated upload) yields the audio before the cut. It is `Corrupt` only when nothing, or less than half
//! of what was read, decodes.
use crate::error::AudioError;
use crate::opus::{OPUS_RATE, OpusTrack};
use crate::sink::{Sink, Trim};
use crate::{Decoded, Hint, Limits};
use std::io::Cursor;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{CODEC_ID_AAC, CODEC_ID_OPUS};
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint as ProbeHint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, TimeBase};

/// Slack on a container's declared length before refusing without decoding: an estimate (CBR MP3 sized from
/// the file length) may run a little long, and the decode-time check still holds the real cap.
const DECLARED_SLACK_SECONDS: f64 = 1.0;
/// See [`container_trim`].
const AAC_PRIMING_FRAMES: u64 = 1024;

/// What happened to one packet.
pub(crate) enum Outcome {
    Decoded,
    /// The codec refused it as damaged; counted, skipped.
    Rejected,
}

enum TrackDecoder {
    Symphonia {
        decoder: Box<dyn AudioDecoder>,
        /// Interleaved f32 of the last packet, reused.
        buffer: Vec<f32>,
    },
    /// Boxed: the Opus decoder state is tens of KB.
    Opus(Box<OpusTrack>),
}

pub(crate) fn decode_container(bytes: &[u8], hint: &Hint<'_>, limits: &Limits) -> Result<Decoded, AudioError> {
    let mut format = open(bytes, hint).map_err(probe_error)?;
    let (track, params) = pick_track(format.tracks())?;
    let (track_id, params) = (track.id, params.clone());
    // Refused before any decoding.
    match stated_seconds(format.as_ref(), track, params.sample_rate) {
        Some(seconds) if seconds > limits.max_seconds + DECLARED_SLACK_SECONDS => {
            return Err(AudioError::TooLong { seconds, max: limits.max_seconds });
        }
        _ => {}
    }
    let (frames, delay) = (track.num_frames, track.delay);

    let mut channels = params.channels.as_ref().map(|c| c.count() as u16);
    let (mut decoder, codec, trim) = if params.codec == CODEC_ID_OPUS {
        let opus = OpusTrack::new(&params)?;
        channels = Some(opus.channels());
        let trim = Trim { start: opus.pre_skip(), length: None };
        (TrackDecoder::Opus(Box::new(opus)), "opus", trim)
    } else {
        // Gapless (drop encoder delay and padding: LAME tag, Ogg granules) so durations match the source. It is
        // 0.6's default; stated because the durations depend on it.
        let registry = symphonia::default::get_codecs();
        let decoder = registry
            .make_audio_decoder(&params, &AudioDecoderOptions::default().gapless(true))
            .map_err(|e| codec_error(e, "the audio codec could not be set up"))?;
        let codec = registry.get_audio_decoder(params.codec).map_or("unknown", |d| d.codec.info.short_name);
        (TrackDecoder::Symphonia { decoder, buffer: Vec::new() }, codec, container_trim(&params, frames, delay))
    };

    let mut sink: Option<Sink> = None;
    let (mut decoded, mut rejected) = (0u64, 0u64);
    while let Some(packet) = next_packet(format.as_mut(), decoded)? {
        if packet.track_id != track_id {
            continue;
        }
        let outcome = match &mut decoder {
            TrackDecoder::Opus(opus) => {
                let sink = sink.get_or_insert_with(|| Sink::new(OPUS_RATE, limits.max_seconds, trim));
                opus.decode(&packet, sink)?
            }
            TrackDecoder::Symphonia { decoder, buffer } => {
                let new_sink = |rate| Sink::new(rate, limits.max_seconds, trim);
                decode_packet(decoder.as_mut(), buffer, &packet, &mut sink, &mut channels, new_sink)?
            }
        };
        match outcome {
            Outcome::Decoded => decoded += 1,
            Outcome::Rejected => rejected += 1,
        }
    }
    if rejected > decoded {
        return Err(AudioError::corrupt(format!("{rejected} of {} {codec} packets are damaged", rejected + decoded)));
    }
    let sink = sink.ok_or(AudioError::Empty)?;
    let (source_seconds, sink_rate) = (sink.seconds(), sink.rate());
    let samples = sink.finish();
    if samples.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(Decoded {
        duration_seconds: source_seconds,
        samples,
        source_rate: params.sample_rate.unwrap_or(sink_rate),
        channels: channels.unwrap_or(1),
        codec,
    })
}

/// The next packet, or `None` at the end of the stream. A stream that stops early or breaks after some audio
/// decoded ends there (truncated uploads keep what arrived); one that breaks before any is `Corrupt`.
fn next_packet(format: &mut dyn FormatReader, decoded_so_far: u64) -> Result<Option<Packet>, AudioError> {
    match format.next_packet() {
        Ok(packet) => Ok(packet),
        Err(SymphoniaError::IoError(_)) | Err(SymphoniaError::ResetRequired) => Ok(None),
        Err(SymphoniaError::Unsupported(what)) => Err(AudioError::unsupported(format!("container feature: {what}"))),
        Err(SymphoniaError::DecodeError(_) | SymphoniaError::LimitError(_)) if decoded_so_far > 0 => Ok(None),
        Err(e) => Err(AudioError::corrupt(format!("the container could not be read: {e}"))),
    }
}

/// Sample rates a stream may declare (telephone 8 kHz down to 4 kHz, up to studio 384 kHz).
const MIN_RATE: u32 = 4_000;
const MAX_RATE: u32 = 384_000;

fn decode_packet(
    decoder: &mut dyn AudioDecoder,
    buffer: &mut Vec<f32>,
    packet: &Packet,
    sink: &mut Option<Sink>,
    channels: &mut Option<u16>,
    new_sink: impl FnOnce(u32) -> Sink,
) -> Result<Outcome, AudioError> {
    let audio = match decoder.decode(packet) {
        Ok(audio) => audio,
        Err(SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_)) => return Ok(Outcome::Rejected),
        Err(e) => return Err(codec_error(e, "the audio codec failed")),
    };
    let spec = audio.spec().clone();
    let frames = audio.frames();
    if frames == 0 {
        return Ok(Outcome::Decoded);
    }
    let sink = match sink {
        Some(sink) if sink.rate() != spec.rate() => {
            return Err(AudioError::unsupported(format!(
                "the sample rate changes mid-stream ({} Hz to {} Hz)",
                sink.rate(),
                spec.rate()
            )));
        }
        Some(sink) => sink,
        None if spec.rate() == 0 => return Err(AudioError::corrupt("the stream declares a sample rate of 0 Hz")),
        // The resampler's filter grows as the input rate falls (taps ~ 1/rate): a file declaring 1 Hz asked for a
        // 57 GB filter table and aborted the process (found by the `audio_decode` fuzz target). Speech needs
        // neither extreme.
        None if !(MIN_RATE..=MAX_RATE).contains(&spec.rate()) => {
            return Err(AudioError::unsupported(format!(
                "the stream's sample rate is {} Hz; supported rates are {MIN_RATE} to {MAX_RATE} Hz",
                spec.rate()
            )));
        }
        None => sink.insert(new_sink(spec.rate())),
    };
    let count = spec.channels().count();
    if count == 0 {
        return Err(AudioError::corrupt("the stream declares no channels"));
    }
    channels.get_or_insert(count as u16);
    audio.copy_to_vec_interleaved(buffer);
    sink.push_interleaved(buffer, count)?;
    Ok(Outcome::Decoded)
}

/// The length a container states, in seconds, read without decoding: the track's duration in its time base,
/// else its frame count over the sample rate, else the whole file's (Matroska states only the segment's). `None`
/// when the container does not say; infinite when it says more than a [`Time`] holds.
///
/// [`Time`]: symphonia::core::units::Time
pub(crate) fn stated_seconds(format: &dyn FormatReader, track: &Track, rate: Option<u32>) -> Option<f64> {
    let within = |base: Option<TimeBase>, duration: Option<Duration>| {
        Some(base?.calc_duration(duration?).map_or(f64::INFINITY, |time| time.as_secs_f64()))
    };
    within(track.time_base, track.duration)
        .or_else(|| match (track.num_frames, rate) {
            (Some(frames), Some(rate)) if rate > 0 => Some(frames as f64 / f64::from(rate)),
            _ => None,
        })
        .or_else(|| within(format.media_info().time_base, format.media_info().duration))
}

/// Opens the container: symphonia's probe reads magic bytes first, then the hint.
pub(crate) fn open<'a>(bytes: &'a [u8], hint: &Hint<'_>) -> Result<Box<dyn FormatReader + 'a>, SymphoniaError> {
    // Read in place: symphonia 0.6 takes a borrowed source, so the upload is not copied.
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut probe_hint = ProbeHint::new();
    if let Some(extension) = hint.extension() {
        probe_hint.with_extension(&extension);
    }
    if let Some(content_type) = hint.content_type {
        probe_hint.mime_type(content_type);
    }
    symphonia::default::get_probe().probe(&probe_hint, source, FormatOptions::default(), MetadataOptions::default())
}

/// Warm-up and padding that symphonia leaves in. MP4 states AAC's priming only in an edit list, which
/// symphonia does not read: its declared length (`mdhd`) is then priming + audio, and the priming is the
/// 1024 frames of AAC-LC's MDCT overlap that FFmpeg and most encoders write (Apple's 2112 would leave ~23 ms).
fn container_trim(params: &AudioCodecParameters, frames: Option<u64>, delay: Option<u32>) -> Trim {
    if params.codec == CODEC_ID_AAC && delay.is_none() {
        let length = frames.map(|n| n.saturating_sub(AAC_PRIMING_FRAMES));
        return Trim { start: AAC_PRIMING_FRAMES, length };
    }
    Trim::default()
}

fn audio(track: &Track) -> Option<&AudioCodecParameters> {
    match &track.codec_params {
        Some(CodecParameters::Audio(params)) => Some(params),
        _ => None,
    }
}

/// The first track whose codec decodes here; video and subtitle tracks (MP4, WebM) are passed over.
pub(crate) fn pick_track(tracks: &[Track]) -> Result<(&Track, &AudioCodecParameters), AudioError> {
    let registry = symphonia::default::get_codecs();
    tracks
        .iter()
        .filter_map(|t| audio(t).map(|params| (t, params)))
        .find(|(_, params)| params.codec == CODEC_ID_OPUS || registry.get_audio_decoder(params.codec).is_some())
        .ok_or_else(|| {
            let what = if tracks.iter().all(|t| audio(t).is_none()) {
                "the container has no audio track in a known codec (ALAC, AC-3, Speex and video-only files do \
                 not decode)"
            } else {
                "no audio track is in a codec this server decodes"
            };
            AudioError::unsupported(what)
        })
}

fn probe_error(error: SymphoniaError) -> AudioError {
    match error {
        SymphoniaError::Unsupported(_) => AudioError::unsupported("the file is not in a recognised audio format"),
        // The format was recognised but its header ran out or made no sense.
        e => AudioError::corrupt(format!("the header could not be read: {e}")),
    }
}

fn codec_error(error: SymphoniaError, context: &str) -> AudioError {
    match error {
        SymphoniaError::Unsupported(what) => AudioError::unsupported(format!("codec feature: {what}")),
        e => AudioError::corrupt(format!("{context}: {e}")),
    }
}
