#![no_main]
// The decoder catches symphonia's panics itself; only one that escapes it is a crash (see the body's docs).
libfuzzer_sys::fuzz_target!(
    init: infergate_fuzz::tolerate_caught_panics(),
    |data: &[u8]| infergate_fuzz::audio_decode(data)
);
