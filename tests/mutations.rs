//! Property test without extra crates: a deterministic LCG mutates valid
//! client streams (bit flips, markup bytes, cuts, repeats, splices) and
//! feeds them in random chunks through the same path as a connection —
//! framer, `xml::parse_stanza`, `Stanza::parse`, JID parsing. Nothing may
//! panic and the framer never buffers much more than one stanza.

use hearth::jid::Jid;
use hearth::stanza::Stanza;
use hearth::xml::{self, Event, Framer, Limits, StreamHeader};

const LIMITS: Limits = Limits::new(4096, 16);
const MAX_CHUNK: usize = 64;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>";

/// Valid streams taken from the integration tests.
fn seeds() -> Vec<String> {
    let bodies = [
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiYw==</auth>",
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>",
        "<presence/><presence type='subscribe' to='bob@localhost'/>",
        "<message to='bob@localhost/b' type='chat' id='m1' xml:lang='fr'><body>x &amp; y &lt;3 &#x263A;</body><thread>t</thread></message>",
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq> \n",
        "<message to='alice@localhost'><body><![CDATA[<not markup>]]></body><x xmlns='urn:x'><y a='1'/></x></message>",
        "<iq type='get' id='v'><query xmlns='http://jabber.org/protocol/disco#info'/></iq></stream:stream>",
    ];
    bodies.iter().map(|b| format!("{HEADER}{b}")).collect()
}

/// Knuth's MMIX LCG: deterministic, so a failure reproduces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = b"<>/&;'\"=!?[]-: \0\xff\xc3\x80xmlns";

fn mutate(rng: &mut Lcg, input: &mut Vec<u8>, seeds: &[String]) {
    for _ in 0..=rng.below(4) {
        // Mostly after the header, so most mutants reach the stanza parsers.
        let at = match input.len().checked_sub(HEADER.len()) {
            Some(body) if rng.below(5) > 0 => HEADER.len() + rng.below(body + 1),
            _ => rng.below(input.len() + 1),
        };
        match rng.below(7) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 => input.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(32)).min(input.len());
                let piece = input[at..end].to_vec();
                for _ in 0..rng.below(8) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            4 => {
                let other = seeds[rng.below(seeds.len())].as_bytes();
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            5 => {
                let run = vec![b"<a>x'&\""[rng.below(6)]; rng.below(5000)];
                input.splice(at..at, run);
            }
            _ => input.truncate(at),
        }
    }
}

/// What a connection does with the bytes, minus the socket. Returns how
/// many stanzas reached `Stanza::parse`.
fn drive(rng: &mut Lcg, input: &[u8]) -> usize {
    let mut parsed = 0;
    let mut framer = Framer::new(LIMITS);
    let mut header: Option<StreamHeader> = None;
    let mut rest = input;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at((1 + rng.below(MAX_CHUNK)).min(rest.len()));
        rest = tail;
        if framer.push(chunk).is_err() {
            return parsed;
        }
        loop {
            match framer.next() {
                Err(_) | Ok(Some(Event::StreamClose)) => return parsed,
                Ok(None) => break,
                Ok(Some(Event::Whitespace)) => {}
                Ok(Some(Event::StreamOpen(h))) => {
                    if let Some(to) = &h.to {
                        let _ = Jid::parse(to);
                    }
                    header = Some(h);
                }
                Ok(Some(Event::Stanza(text))) => {
                    let Some(h) = &header else { return parsed };
                    let wrapped = h.wrap(text);
                    let Ok(doc) = xml::parse_stanza(&wrapped) else {
                        return parsed;
                    };
                    let Ok(node) = xml::stanza_element(&doc) else {
                        return parsed;
                    };
                    for attr in ["to", "from"] {
                        if let Some(value) = node.attribute(attr) {
                            let _ = Jid::parse(value);
                        }
                    }
                    let _ = Stanza::parse(node);
                    parsed += 1;
                }
            }
        }
        assert!(
            framer.buffered() <= LIMITS.max_stanza + MAX_CHUNK,
            "framer holds {} bytes",
            framer.buffered()
        );
        assert!(
            framer.capacity() <= 4 * (LIMITS.max_stanza + MAX_CHUNK),
            "framer allocated {} bytes",
            framer.capacity()
        );
    }
    parsed
}

#[test]
fn mutated_streams_never_panic_or_buffer_without_bound() {
    let seeds = seeds();
    let mut rng = Lcg(0x4845_4152_5448);
    for seed in &seeds {
        drive(&mut rng, seed.as_bytes());
    }
    let mut parsed = 0;
    const ROUNDS: usize = 10_000;
    for _ in 0..ROUNDS {
        let mut input = seeds[rng.below(seeds.len())].clone().into_bytes();
        mutate(&mut rng, &mut input, &seeds);
        parsed += drive(&mut rng, &input);
    }
    // Many mutants still get past the framer: the parsers are exercised.
    assert!(parsed > ROUNDS / 10, "only {parsed} stanzas parsed");
}

#[test]
fn the_seeds_are_valid_streams() {
    // Otherwise the mutations would only ever test the error paths.
    for seed in seeds() {
        let mut framer = Framer::new(LIMITS);
        framer.push(seed.as_bytes()).unwrap();
        let mut header = None;
        let mut stanzas = 0;
        while let Some(event) = framer.next().unwrap() {
            match event {
                Event::StreamOpen(h) => header = Some(h),
                Event::Stanza(text) => {
                    let wrapped = header.as_ref().unwrap().wrap(text);
                    let doc = xml::parse_stanza(&wrapped).unwrap();
                    xml::stanza_element(&doc).unwrap();
                    stanzas += 1;
                }
                _ => {}
            }
        }
        assert!(stanzas >= 1, "{seed}");
    }
}

/// Every end tag of the seeds with one byte of its name changed: the framer
/// itself answers `not-well-formed` (RFC 6120 §11.1), at once and however
/// the bytes are split; no stanza carrying the bad tag gets through.
#[test]
fn every_end_tag_renamed_is_not_well_formed() {
    let mut rng = Lcg(0x454e_4454_4147);
    let mut cases = 0;
    for seed in seeds() {
        let bytes = seed.as_bytes();
        let ends = bytes.windows(2).enumerate().filter(|(_, w)| w == b"</");
        for (at, _) in ends {
            let name = at + 2..at + 2 + bytes[at + 2..].iter().position(|&b| b == b'>').unwrap();
            for index in name {
                let mut input = bytes.to_vec();
                input[index] = if input[index] == b'Q' { b'R' } else { b'Q' };
                let mut framer = Framer::new(LIMITS);
                let mut rest = &input[..];
                let outcome = loop {
                    let (chunk, tail) = rest.split_at((1 + rng.below(MAX_CHUNK)).min(rest.len()));
                    rest = tail;
                    framer.push(chunk).unwrap();
                    let error = loop {
                        match framer.next() {
                            Ok(Some(Event::Stanza(text))) => {
                                assert!(!text.contains("Q>"), "{text}");
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break None,
                            Err(error) => break Some(error),
                        }
                    };
                    if error.is_some() || rest.is_empty() {
                        break error;
                    }
                };
                assert_eq!(
                    outcome,
                    Some(xml::FramerError::NotWellFormed),
                    "{}",
                    String::from_utf8_lossy(&input)
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 50, "{cases}");
}

/// The adversarial catalogue (`hearth::xml::adversarial`) at the default
/// 256 KiB stanza limit: each shape is accepted or refused as expected, in
/// time linear in its size. A quadratic shape (the namespace bomb took
/// minutes at this size) would blow the bound by orders of magnitude even
/// in a debug build on a loaded machine.
#[test]
fn adversarial_shapes_are_answered_quickly() {
    use hearth::xml::adversarial::{frame_and_parse, shapes};
    use std::time::{Duration, Instant};
    let size = 256 * 1024;
    let limits = Limits::new(size, 32);
    for shape in shapes(size) {
        let started = Instant::now();
        let outcome = frame_and_parse(limits, &shape.stanza);
        let took = started.elapsed();
        assert_eq!(outcome, shape.expect, "{}", shape.name);
        assert!(took < Duration::from_secs(2), "{}: {took:?}", shape.name);
    }
}
