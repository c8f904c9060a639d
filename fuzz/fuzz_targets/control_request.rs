//! What a client sends on the control socket, as the master frames and parses it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rrbalancer::control::parse_request(data);
});
