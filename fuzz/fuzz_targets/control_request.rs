//! What a client sends on the control socket, as the master frames and parses it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rrbalancer::fuzz::control_request(data);
});
