//! A Node worker's IPC stream as the master reads it: the first byte picks `node` (even) or
//! `node-cluster` (odd), the rest is what the worker writes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rrbalancer::fuzz::node_channel_input(data));
