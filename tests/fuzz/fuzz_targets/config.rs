//! A config file, read as both JSON and HCL, through the agent's start-up path: flags,
//! `config::load` (parse, apply every key, validate) and the service and check definitions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = muster_agent::fuzz::config(data, false);
    let _ = muster_agent::fuzz::config(data, true);
});
