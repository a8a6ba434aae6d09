//! The built-in STUN server's packet handling: any UDP payload from any address is either
//! dropped or answered with one Binding success response no longer than the limit, that
//! echoes the request's transaction id (no amplification, no panic).
#![no_main]

use hearth::stun::{answer, MAX_RESPONSE_BYTES};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the sender: an IPv4, an IPv4-mapped or an IPv6 address.
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let ip: IpAddr = match pick % 3 {
        0 => [192, 0, 2, pick].into(),
        1 => Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0200 | u16::from(pick)]).into(),
        _ => Ipv6Addr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(pick)]).into(),
    };
    let mut out = [0u8; MAX_RESPONSE_BYTES];
    if let Some(len) = answer(packet, SocketAddr::new(ip, 3478), &mut out) {
        assert!(len <= MAX_RESPONSE_BYTES && len >= 20);
        assert_eq!(out[..2], [0x01, 0x01]);
        assert_eq!(out[8..20], packet[8..20]);
    }
});
