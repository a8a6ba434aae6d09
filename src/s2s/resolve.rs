//! Finding a peer domain's servers: static routes, DNS SRV (RFC 6120 §3.2, XEP-0368), A/AAAA.
