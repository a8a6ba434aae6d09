//! The HTTPS side of file upload: a small HTTP/1.1 server on its own TLS port inside
//! the event loop. One request per connection: PUT into a granted slot, GET/HEAD of a
//! stored file, OPTIONS for CORS preflight. Headers are bounded (8 KiB) and must
//! arrive within a deadline; bodies move to and from disk in pieces of at most 64 KiB
//! through `smol::unblock`, so the loop never waits on the disk. A file becomes
//! visible only once complete (written as `.part`, then renamed). This module must
//! never hold a whole file in memory.

use super::{Stored, Upload};
use crate::listener::{self, timed};
use crate::server::Server;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use log::{info, warn};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A body transfer stalls out after this long without progress.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A body slower than this on average is cut off (a trickle would hold a connection).
const MIN_BYTES_PER_SEC: u64 = 4 * 1024;
/// How long and how much a refused body is drained before the connection closes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Largest piece moved between disk and socket at once.
const CHUNK: usize = 64 * 1024;
/// HTTPS connections at one time; more are closed at once.
const MAX_CONNECTIONS: u32 = 64;
/// How often expired slots and files are removed.
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

type Stream = TlsStream<TcpStream>;

/// Binds the configured ports, so errors come out before the loop starts.
pub fn bind(config: &crate::config::Config) -> Result<Vec<TcpListener>, String> {
    listener::bind(config.upload_domain().is_some(), &config.upload.listen)
}

/// Derives the base URL, then serves every listener and cleans up periodically.
pub fn start(ex: &Rc<LocalExecutor<'static>>, server: &Rc<Server>, listeners: Vec<TcpListener>) {
    let Some(port) = listener::first_port(&listeners) else {
        return;
    };
    let config = &server.config();
    let url =
        (config.upload.url.clone()).unwrap_or_else(|| format!("https://{}:{port}", config.domain));
    server.state::<super::Upload>().set_base_url(&url);
    let accepting = server.clone();
    let caps = listener::Caps {
        total: MAX_CONNECTIONS,
        per_ip: config.upload.max_connections_per_ip,
    };
    listener::spawn_accept(ex, listeners, "upload", caps, move |tcp, _| {
        let server = accepting.clone();
        async move { serve(&server, tcp).await }
    });
    ex.spawn(cleanup_loop(server.clone())).detach();
}

/// Removes expired slots and files now and then.
async fn cleanup_loop(server: Rc<Server>) {
    loop {
        let upload = &server.state::<super::Upload>();
        upload.expire_slots(Instant::now());
        let max_age = Duration::from_secs(u64::from(server.config().upload.expire_days) * 86_400);
        let now = SystemTime::now();
        let expired: Vec<Box<str>> = (upload.files.borrow().iter())
            .filter(|(_, f)| now.duration_since(f.stored).unwrap_or_default() > max_age)
            .map(|(token, _)| token.clone())
            .collect();
        for token in expired {
            upload.files.borrow_mut().remove(&token);
            let paths = upload.paths(&token);
            smol::unblock(move || {
                for path in paths {
                    let _ = std::fs::remove_file(path);
                }
            })
            .await;
            info!("upload {token}: expired and removed");
        }
        Timer::after(CLEANUP_EVERY).await;
    }
}

/// A parsed request head and the body bytes that came with it.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One connection: handshake, head, one request, close.
async fn serve(server: &Server, tcp: TcpStream) {
    // The XMPP config offers only `xmpp-client`; HTTP clients offer `http/1.1`.
    let mut config = (*server.tls_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    // Slowloris: the TLS handshake and the whole request head must be in within the
    // first-byte time, or the connection goes and its slot with it.
    let first_byte = Duration::from_secs(server.config().upload.first_byte_secs.into());
    let deadline = Instant::now() + first_byte;
    let Ok(mut stream) = timed(first_byte, acceptor.accept(tcp)).await else {
        return;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let request = match timed(left, read_head(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(status)) => {
            let _ = respond(&mut stream, status, &[], 0).await;
            return;
        }
        Err(_) => return,
    };
    let outcome = match request.method.as_str() {
        "OPTIONS" => respond(&mut stream, 204, &[], 0).await,
        "GET" | "HEAD" => get(server, &mut stream, &request).await,
        "PUT" => put(server, &mut stream, request).await,
        _ => respond(&mut stream, 405, &[], 0).await,
    };
    if outcome.is_ok() && timed(IDLE_TIMEOUT, stream.close()).await.is_ok() {
        linger(&mut stream).await;
    }
}

/// After a refusal the client may still be sending a body: closing with unread data
/// would reset the connection and could destroy the answer before it is read (RFC 9112
/// §9.6), so what follows is read and dropped for a little while.
async fn linger(stream: &mut Stream) {
    let mut scratch = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let until = Instant::now() + LINGER_TIME;
    while left > 0 {
        let time = until.saturating_duration_since(Instant::now());
        match timed(time, stream.read(&mut scratch)).await {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Reads up to the blank line; an HTTP status when the head is unusable.
async fn read_head(stream: &mut Stream) -> io::Result<Result<Request, u16>> {
    let mut buf = Vec::with_capacity(1024);
    let mut piece = [0u8; 2048];
    loop {
        if let Some((head, rest)) = split_head(&buf) {
            if head.len() > MAX_HEAD_BYTES {
                return Ok(Err(431));
            }
            return Ok(parse_head(head).map(|(method, path, headers)| Request {
                method,
                path,
                headers,
                rest: rest.to_vec(),
            }));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Err(431));
        }
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(filled(&piece, n)?);
    }
}

/// The head before the first blank line and the bytes after it, once the blank line is in.
fn split_head(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, rest) = buf.split_at_checked(at)?;
    Some((head, rest.strip_prefix(b"\r\n\r\n")?))
}

/// The first `n` bytes of `buf`, which a read reported filling; a count past the end (a
/// reader breaking its contract) is an error rather than a panic.
fn filled(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n)
        .ok_or_else(|| io::ErrorKind::InvalidData.into())
}

type Head = (String, String, Vec<(String, String)>);

/// Request line and header fields (RFC 9112 §3, §5); 400 when malformed.
fn parse_head(head: &[u8]) -> Result<Head, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return Err(400);
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(400);
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    // The query string is not part of the resource name.
    let path = target.split('?').next().unwrap_or_default().to_owned();
    Ok((method.to_owned(), path, headers))
}

/// `/upload/<token>/<name>` → the token and the decoded name.
fn slot_path(path: &str) -> Option<(&str, String)> {
    let (token, name) = path.strip_prefix("/upload/")?.split_once('/')?;
    Some((token, super::percent_decode(name)?))
}

async fn get(server: &Server, stream: &mut Stream, request: &Request) -> io::Result<()> {
    let upload = &server.state::<super::Upload>();
    let found = slot_path(&request.path).and_then(|(token, name)| {
        let files = upload.files.borrow();
        let file = files.get(token).filter(|f| *f.name == name)?;
        Some((token.to_owned(), file.size, describe(file)))
    });
    let Some((token, size, (content_type, disposition))) = found else {
        return respond(stream, 404, &[], 0).await;
    };
    let [data, ..] = upload.paths(&token);
    let Ok(mut file) = smol::unblock(move || std::fs::File::open(data)).await else {
        return respond(stream, 404, &[], 0).await;
    };
    let headers = [
        ("Content-Type", content_type.as_str()),
        ("Content-Disposition", disposition.as_str()),
        ("X-Content-Type-Options", "nosniff"),
    ];
    respond(stream, 200, &headers, size).await?;
    if request.method == "HEAD" {
        return Ok(());
    }
    let mut left = size;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let (n, back_file, back_buf) = smol::unblock(move || {
            let n = file.read(&mut buf);
            (n, file, buf)
        })
        .await;
        (file, buf) = (back_file, back_buf);
        let n = match n? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => n.min(usize::try_from(left).unwrap_or(usize::MAX)),
        };
        timed(IDLE_TIMEOUT, stream.write_all(filled(&buf, n)?)).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Content type and an attachment disposition naming the file.
fn describe(file: &Stored) -> (String, String) {
    let name = super::percent_encode(&file.name);
    (
        file.content_type.to_string(),
        format!("attachment; filename*=UTF-8''{name}"),
    )
}

async fn put(server: &Server, stream: &mut Stream, request: Request) -> io::Result<()> {
    let upload = &server.state::<super::Upload>();
    upload.expire_slots(Instant::now());
    let Some((token, name)) = slot_path(&request.path) else {
        return respond(stream, 404, &[], 0).await;
    };
    let checked = {
        let mut slots = upload.slots.borrow_mut();
        match slots.get_mut(token).filter(|s| *s.name == name) {
            None if upload.files.borrow().contains_key(token) => Err(409),
            None => Err(404),
            Some(slot) if slot.busy => Err(409),
            Some(slot) if request.header("Authorization") != Some(&*slot.secret) => Err(403),
            Some(slot) => match request.header("Content-Length").map(str::parse::<u64>) {
                None => Err(411),
                Some(Err(_)) => Err(400),
                Some(Ok(length)) if length > slot.size => Err(413),
                Some(Ok(length)) if length != slot.size => Err(400),
                Some(Ok(length)) => {
                    slot.busy = true;
                    let content_type = (request.header("Content-Type"))
                        .filter(|t| super::valid_content_type(t))
                        .unwrap_or(&slot.content_type);
                    Ok((length, slot.owner.clone(), content_type.to_owned()))
                }
            },
        }
    };
    let (length, owner, content_type) = match checked {
        Ok(slot) => slot,
        Err(status) => return respond(stream, status, &[], 0).await,
    };
    let token: Box<str> = token.into();
    // RFC 9110 §10.1.1: a client that waits for the go-ahead gets it once the slot fits.
    let go_ahead = match request.header("Expect") {
        Some(expect) if expect.eq_ignore_ascii_case("100-continue") => {
            timed(
                IDLE_TIMEOUT,
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
            )
            .await
        }
        _ => Ok(()),
    };
    let received = match go_ahead {
        Ok(()) => receive(upload, stream, &token, request.rest, length).await,
        Err(e) => Err(e),
    };
    let [data, meta, part] = upload.paths(&token);
    let stored = match received {
        Ok(()) => {
            let text = format!("{owner}\n{name}\n{content_type}\n");
            smol::unblock(move || {
                super::create_private_file(&meta)?.write_all(text.as_bytes())?;
                std::fs::rename(part, data)
            })
            .await
            .map_err(disk_error)
        }
        Err(e) => {
            let _ = smol::unblock(move || std::fs::remove_file(part)).await;
            Err(e)
        }
    };
    let slot = upload.slots.borrow_mut().remove(&token);
    match stored {
        Ok(()) => {
            upload.files.borrow_mut().insert(
                token.clone(),
                Stored {
                    owner,
                    name: name.into(),
                    size: length,
                    content_type: content_type.into(),
                    stored: SystemTime::now(),
                },
            );
            info!("upload {token}: {length} bytes stored");
            respond(stream, 201, &[], 0).await
        }
        Err(e) => {
            // The client may try again while the slot lasts.
            if let Some(mut slot) = slot {
                slot.busy = false;
                upload.slots.borrow_mut().insert(token, slot);
            }
            warn!("upload failed: {e}");
            // Disk trouble is ours to report; a peer that stalled or left gets nothing.
            match e.kind() {
                io::ErrorKind::Other => respond(stream, 500, &[], 0).await?,
                io::ErrorKind::TimedOut => respond(stream, 408, &[], 0).await?,
                _ => {}
            }
            Err(e)
        }
    }
}

/// Streams `length` body bytes into `<token>.part`, in pieces written off the loop.
async fn receive(
    upload: &Upload,
    stream: &mut Stream,
    token: &str,
    first: Vec<u8>,
    length: u64,
) -> io::Result<()> {
    let dir = upload.dir.clone();
    let [_, _, part] = upload.paths(token);
    let mut file = smol::unblock(move || {
        super::create_private_dir(&dir)?;
        super::create_private_file(&part)
    })
    .await
    .map_err(disk_error)?;
    let mut buf = first;
    buf.truncate(usize::try_from(length).unwrap_or(usize::MAX));
    let mut got = buf.len() as u64;
    let deadline = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(length / MIN_BYTES_PER_SEC);
    let mut piece = vec![0u8; CHUNK];
    loop {
        if !buf.is_empty() {
            let (written, back_file, back_buf) = smol::unblock(move || {
                let written = file.write_all(&buf);
                (written, file, buf)
            })
            .await;
            (file, buf) = (back_file, back_buf);
            written.map_err(disk_error)?;
            buf.clear();
        }
        if got == length {
            return Ok(());
        }
        let want = usize::try_from(length - got).unwrap_or(CHUNK).min(CHUNK);
        if Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // `piece` holds CHUNK bytes, so the window is always there.
        let window = piece.get_mut(..want).ok_or(io::ErrorKind::InvalidInput)?;
        let n = timed(IDLE_TIMEOUT, stream.read(window)).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(filled(&piece, n)?);
        got += n as u64;
    }
}

/// A failed file operation, told apart from socket errors by its kind.
fn disk_error(e: io::Error) -> io::Error {
    io::Error::other(e)
}

/// Writes a response head with the CORS headers every answer carries.
async fn respond(
    stream: &mut Stream,
    status: u16,
    headers: &[(&str, &str)],
    length: u64,
) -> io::Result<()> {
    use std::fmt::Write as _;
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Access-Control-Allow-Origin: *\r\n\
         Access-Control-Allow-Methods: GET, HEAD, PUT, OPTIONS\r\n\
         Access-Control-Allow-Headers: Authorization, Content-Type\r\n\
         Access-Control-Max-Age: 86400\r\n\
         Connection: close\r\n\
         Content-Length: {length}\r\n"
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    timed(IDLE_TIMEOUT, stream.write_all(head.as_bytes())).await?;
    timed(IDLE_TIMEOUT, stream.flush()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_or_are_refused() {
        let (method, path, headers) =
            parse_head(b"PUT /upload/ab/x%20y?v=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3")
                .unwrap();
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PUT", "/upload/ab/x%20y")
        );
        assert_eq!(headers[1], ("Content-Length".into(), "3".into()));
        for bad in [
            &b"GET / HTTP/1.1 extra"[..],
            b"GET /",
            b"get / HTTP/1.1",
            b"GET x HTTP/1.1",
            b"GET / HTTP/2",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\nbad name: v",
            b"GET / HTTP/1.1\r\nHost: \xff",
        ] {
            assert_eq!(parse_head(bad).err(), Some(400), "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        let request = b"PUT /a HTTP/1.1\r\nHost: h\r\n\r\nbody\r\n\r\nmore";
        assert_eq!(
            split_head(request),
            Some((&b"PUT /a HTTP/1.1\r\nHost: h"[..], &b"body\r\n\r\nmore"[..]))
        );
        assert_eq!(
            split_head(b"GET / HTTP/1.1\r\n\r\n"),
            Some((&b"GET / HTTP/1.1"[..], &b""[..]))
        );
        assert_eq!(split_head(b"GET / HTTP/1.1\r\nHost: h\r\n"), None);
    }

    #[test]
    fn slot_paths() {
        assert_eq!(slot_path("/upload/t1/a%20b"), Some(("t1", "a b".into())));
        assert_eq!(slot_path("/upload/t1"), None);
        assert_eq!(slot_path("/other/t1/a"), None);
    }
}
