//! What both directions of a server-to-server stream share: the stream header (RFC 6120
//! §4.7, `jabber:server` with the dialback prefix declared), reading the next element
//! within a deadline, the features a peer offered, and ending a stream.

use super::{dialback, NS_SERVER};
use crate::stanza::StreamCondition;
use crate::stream::transport::ReadError;
use crate::stream::{framer_end, End, Input, Stream, Wake};
use crate::xml::{Esc, StreamHeader, NS_CLIENT};
use std::fmt::Write;
use std::time::Instant;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// Our stream header; `id` only on the receiving side (RFC 6120 §4.7.3).
pub fn write_header(out: &mut String, from: &str, to: Option<&str>, id: Option<&str>) {
    let _ = write!(
        out,
        "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream='{NS_STREAMS}' \
         xmlns:db='{}' from='{}' version='1.0'",
        dialback::NS,
        Esc(from)
    );
    if let Some(to) = to {
        let _ = write!(out, " to='{}'", Esc(to));
    }
    if let Some(id) = id {
        let _ = write!(out, " id='{}'", Esc(id));
    }
    out.push('>');
}

/// A peer's header: the server namespace and XMPP 1.0. Kept with `jabber:client` as its
/// default namespace, so stanzas parse as the rest of the server reads them (RFC 6120
/// §4.8.3: the content namespaces differ only in name).
pub fn accept_header(mut header: StreamHeader) -> Result<StreamHeader, StreamCondition> {
    if header.default_ns.as_deref() != Some(NS_SERVER) {
        return Err(StreamCondition::InvalidNamespace);
    }
    let major = header
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major != Some(1) {
        return Err(StreamCondition::UnsupportedVersion);
    }
    header.default_ns = Some(NS_CLIENT.into());
    Ok(header)
}

/// What the peer sends next: a header or an element, read within `deadline`. Mail for the
/// peer waits in the stream's mailbox meanwhile.
pub async fn next(stream: &mut Stream, deadline: Instant) -> Result<Input, End> {
    loop {
        if let Some(input) = stream.next_input()? {
            return Ok(input);
        }
        flush(stream).await?;
        match stream.wait_input(deadline).await {
            Wake::Read(Ok(0)) => return Err(End::Gone),
            Wake::Read(Ok(_)) | Wake::Resume | Wake::Mail(_) => {}
            Wake::Read(Err(ReadError::Io(_))) => return Err(End::Gone),
            Wake::Read(Err(ReadError::Xml(e))) => return Err(framer_end(e)),
            Wake::Deadline => return Err(End::Error(StreamCondition::ConnectionTimeout, None)),
        }
    }
}

/// Writes what is waiting in the stream's output.
pub async fn flush(stream: &mut Stream) -> Result<(), End> {
    stream.flush_out().await
}

/// What the peer's `<stream:features/>` offered.
#[derive(Default, Debug)]
pub struct Offered {
    pub starttls: bool,
    pub external: bool,
    pub dialback: bool,
}

impl Offered {
    pub fn parse(node: roxmltree::Node) -> Option<Offered> {
        if !node.has_tag_name((NS_STREAMS, "features")) {
            return None;
        }
        let mut offered = Offered::default();
        for child in node.children().filter(|c| c.is_element()) {
            let name = child.tag_name();
            match (name.namespace(), name.name()) {
                (Some(NS_TLS), "starttls") => offered.starttls = true,
                (Some(NS_SASL), "mechanisms") => {
                    offered.external = child
                        .children()
                        .filter(|m| m.has_tag_name((NS_SASL, "mechanism")))
                        .any(|m| m.text().map(str::trim) == Some("EXTERNAL"));
                }
                (Some(dialback::NS_FEATURE), "dialback") => offered.dialback = true,
                _ => {}
            }
        }
        Some(offered)
    }
}

/// Ends a stream: the stream error (after our header, if none went out yet) or our close,
/// then the connection.
pub async fn finish(stream: &mut Stream, end: End, from: &str, to: Option<&str>) {
    match end {
        End::Error(condition, text) => {
            if !stream.header_sent {
                write_header(&mut stream.out, from, to, None);
                stream.header_sent = true;
            }
            condition.write_close(text, &mut stream.out);
        }
        End::PeerClosed => {
            if stream.header_sent {
                stream.out.push_str("</stream:stream>");
            }
        }
        End::Gone => stream.out.clear(),
    }
    stream.close().await;
}
