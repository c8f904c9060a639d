//! What a new master says to the old one during an upgrade.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rrbalancer::fuzz::upgrade_channel(data);
});
