//! A config file: parsed, then validated with no overrides. Any outcome but a panic is fine.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rrbalancer::fuzz::config(data);
});
