#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdist::fuzzing::device_path(data));
