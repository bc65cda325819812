//! A DNS message through the handler's request path, as it arrives over UDP and over TCP.
//! The handler reads the catalog through a client agent's `Server` that knows no servers:
//! every catalog read fails at once (SERVFAIL), so this covers decoding, EDNS, name parsing,
//! `.addr` and reverse lookups, refusals and error answers, and the encoding of each.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use muster_dns::{DnsConfig, DnsHandler};

fn handler() -> &'static DnsHandler {
    static H: OnceLock<DnsHandler> = OnceLock::new();
    H.get_or_init(|| {
        let cfg = DnsConfig {
            alt_domain: Some("muster".into()),
            ..DnsConfig::default()
        };
        DnsHandler::new(muster_server::Server::client(), cfg)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let h = handler();
    runtime().block_on(async {
        h.fuzz_answer(data, true).await;
        h.fuzz_answer(data, false).await;
    });
});
