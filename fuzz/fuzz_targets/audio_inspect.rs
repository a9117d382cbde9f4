#![no_main]
// symphonia panics on some malformed input; only a panic that escapes the code under test is a crash.
libfuzzer_sys::fuzz_target!(
    init: infergate_fuzz::tolerate_caught_panics(),
    |data: &[u8]| infergate_fuzz::audio_inspect(data)
);
