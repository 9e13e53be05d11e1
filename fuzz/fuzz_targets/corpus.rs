#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rosetta_fuzz::corpus(data));
