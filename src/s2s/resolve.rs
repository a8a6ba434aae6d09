//! Finding a peer domain's servers: static routes, DNS SRV (RFC 6120 §3.2, XEP-0368), A/AAAA.
//! (Interim: static routes and the domain itself on port 5269.)

use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
}

pub async fn candidates(config: &crate::config::S2s, domain: &str) -> Vec<Candidate> {
    if let Some(route) = config.routes.get(domain) {
        if let Some((host, port)) = route.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                return vec![Candidate {
                    host: host.to_owned(),
                    port,
                    direct_tls: false,
                }];
            }
        }
    }
    vec![Candidate {
        host: domain.to_owned(),
        port: 5269,
        direct_tls: false,
    }]
}

pub async fn addresses(candidate: &Candidate) -> Vec<SocketAddr> {
    if let Ok(ip) = candidate.host.parse::<std::net::IpAddr>() {
        return vec![SocketAddr::new(ip, candidate.port)];
    }
    smol::net::resolve((candidate.host.as_str(), candidate.port))
        .await
        .unwrap_or_default()
}
