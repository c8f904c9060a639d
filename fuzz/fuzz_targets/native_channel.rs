//! A native worker's messages (0xFF separates them) as the master reads them, after it has
//! handed the worker three sockets.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rrbalancer::fuzz::native_channel(data));
