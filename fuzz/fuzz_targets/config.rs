//! A config file: parsed, then validated with no overrides. Any outcome but a panic is fine.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = rrbalancer::config::parse(text, "fuzz.toml") else {
        return;
    };
    let overrides = rrbalancer::config::Overrides::default();
    let _ = rrbalancer::config::validate(file, text, "fuzz.toml", None, &overrides);
});
