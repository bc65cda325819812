//! Every socket the agent serves on, bound before anything else starts, so a port in use
//! fails the start before any state is touched.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, UdpSocket};

use crate::config::{Config, PortSetting};
use crate::{Error, Result};

/// Every socket the agent serves on, bound before anything else starts.
pub(crate) struct Listeners {
    pub(crate) http: Option<TcpListener>,
    /// On `addresses.https`, else the client address, when `ports.https` is set.
    pub(crate) https: Option<TcpListener>,
    /// UDP and TCP on the same port.
    pub(crate) dns: Option<(UdpSocket, TcpListener)>,
    /// Only on a server.
    pub(crate) rpc: Option<TcpListener>,
    /// Gossip (UDP) and the direct streams (TCP) on the same port.
    pub(crate) serf: (UdpSocket, TcpListener),
}

pub(crate) async fn bind_listeners(config: &Config) -> Result<Listeners> {
    let http = bind_tcp(config.client_addr, config.http_port, "HTTP").await?;
    let https_ip = config.tls.https_addr.unwrap_or(config.client_addr);
    let https = bind_tcp(https_ip, config.tls.https_port, "HTTPS").await?;
    let dns = match config.dns_port {
        p if p < 0 => None,
        p => Some(bind_pair(config.client_addr, p as u16, ("DNS (UDP)", "DNS (TCP)")).await?),
    };
    let rpc = if config.server {
        let port = config.server_port.max(0);
        bind_tcp(config.bind_addr, port, "server RPC").await?
    } else {
        None
    };
    let serf_port = config.serf_lan_port.max(0) as u16;
    let what = ("gossip (serf LAN)", "gossip streams (serf LAN, TCP)");
    let (serf_udp, serf_tcp) = bind_pair(config.bind_addr, serf_port, what).await?;
    Ok(Listeners {
        http,
        https,
        dns,
        rpc,
        serf: (serf_udp, serf_tcp),
    })
}

async fn bind_tcp(
    ip: IpAddr,
    port: PortSetting,
    what: &'static str,
) -> Result<Option<TcpListener>> {
    if port < 0 {
        return Ok(None);
    }
    let addr = SocketAddr::new(ip, port as u16);
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|error| Error::Listen { what, addr, error })
}

/// UDP and TCP on one port (DNS; gossip and its direct streams). With port 0 the kernel
/// picks the TCP port, and that port's UDP side may already belong to someone else: try
/// another ephemeral port then.
async fn bind_pair(
    ip: IpAddr,
    port: u16,
    (udp_what, tcp_what): (&'static str, &'static str),
) -> Result<(UdpSocket, TcpListener)> {
    let mut tries = 0;
    loop {
        let addr = SocketAddr::new(ip, port);
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|error| Error::Listen {
                what: tcp_what,
                addr,
                error,
            })?;
        let got = tcp.local_addr()?.port();
        match bind_udp(ip, got, udp_what).await {
            Ok(udp) => return Ok((udp, tcp)),
            Err(Error::Listen { error, .. })
                if port == 0 && error.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn bind_udp(ip: IpAddr, port: u16, what: &'static str) -> Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    UdpSocket::bind(addr)
        .await
        .map_err(|error| Error::Listen { what, addr, error })
}
