//! A Node worker's IPC stream as the master reads it: the first byte picks `node` (even) or
//! `node-cluster` (odd), the rest is what the worker writes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&kind, rest)) = data.split_first() {
        rrbalancer::fuzz::node_channel(rest, kind % 2 == 1);
    }
});
