//! `?filter=` expressions: parsed, checked against the result types' fields and evaluated
//! against a health service entry, as `/v1/health/service/*` and `/v1/catalog/nodes` do.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A query string is decoded to UTF-8 (invalid bytes replaced) before the filter sees it.
    let expr = String::from_utf8_lossy(data);
    let _ = muster_api::fuzz::filter(&expr);
});
