//! XEP-0363 HTTP File Upload as a client sees it: discovery, slot requests and their
//! refusals over XMPP, then the PUT and GET over real HTTPS with the server's certificate
//! (checked for the upload domain, ALPN `http/1.1`).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const UPLOAD: &str = "upload.localhost";
const NS: &str = "urn:xmpp:http:upload:0";
const PORT0: &str = "listen = [\"127.0.0.1:0\"]\n";

fn server_with(extra: &str) -> TestServer {
    let server = TestServer::start(&format!("[upload]\n{PORT0}{extra}"));
    server.add_user("alice");
    server.add_user("bob");
    server
}

fn upload_addr(server: &TestServer) -> SocketAddr {
    let log = server.log();
    // The last one: a restarted server has a new port.
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.split("listening for upload on ").nth(1))
        .expect("upload port in the log");
    line.trim().parse().unwrap()
}

/// What came back for one HTTP request.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends raw request bytes over TLS (server name = the upload domain) and reads to EOF.
fn http(server: &TestServer, request: &[u8]) -> Response {
    http_from(server, Ipv4Addr::LOCALHOST, request)
}

/// [`http`] from another loopback address.
fn http_from(server: &TestServer, from: Ipv4Addr, request: &[u8]) -> Response {
    let mut config = (*server.tls_client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(UPLOAD).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = common::net::connect_from(from, upload_addr(server)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A refusal may come (and the server stop reading) before the body is all sent.
    let _ = tls.write_all(request).and_then(|()| tls.flush());
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Response {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// A granted slot: the URL path and the Authorization header value.
struct Slot {
    path: String,
    auth: String,
}

fn request_slot(client: &mut Client, name: &str, size: usize, content_type: &str) -> String {
    client.send(&format!(
        "<iq type='get' id='slot' to='{UPLOAD}'><request xmlns='{NS}' filename='{name}' \
         size='{size}' content-type='{content_type}'/></iq>"
    ));
    client.expect("id='slot'")
}

fn slot(client: &mut Client, name: &str, size: usize) -> Slot {
    let reply = request_slot(client, name, size, "text/plain");
    assert!(reply.contains("type='result'"), "{reply}");
    with_doc(&reply, |iq| {
        let slot = iq.first_element_child().unwrap();
        assert_eq!(slot.tag_name().name(), "slot");
        let put = slot.children().find(|n| n.has_tag_name("put")).unwrap();
        let get = slot.children().find(|n| n.has_tag_name("get")).unwrap();
        let url = put.attribute("url").unwrap();
        assert_eq!(get.attribute("url"), Some(url));
        let header = put.first_element_child().unwrap();
        assert_eq!(header.attribute("name"), Some("Authorization"));
        let path = url.split_once("://").unwrap().1;
        Slot {
            path: path[path.find('/').unwrap()..].to_string(),
            auth: header.text().unwrap().to_string(),
        }
    })
}

fn put(server: &TestServer, slot: &Slot, length: usize, body: &[u8]) -> Response {
    let mut request = format!(
        "PUT {} HTTP/1.1\r\nHost: {UPLOAD}\r\nAuthorization: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: {length}\r\n\r\n",
        slot.path, slot.auth
    )
    .into_bytes();
    request.extend_from_slice(body);
    http(server, &request)
}

fn get(server: &TestServer, method: &str, path: &str) -> Response {
    http(
        server,
        format!("{method} {path} HTTP/1.1\r\nHost: {UPLOAD}\r\n\r\n").as_bytes(),
    )
}

#[test]
fn discovery_lists_the_service_and_its_limit() {
    let server = server_with("max_file_bytes = 5000\n");
    let mut alice = Client::online(&server, "alice", "pc");
    alice.send(
        "<iq type='get' id='items'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    let items = alice.expect("id='items'");
    assert!(items.contains(&format!("<item jid='{UPLOAD}'")), "{items}");
    alice.send(&format!(
        "<iq type='get' id='info' to='{UPLOAD}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let info = alice.expect("id='info'");
    assert!(
        info.contains("<identity category='store' type='file'"),
        "{info}"
    );
    assert!(info.contains(&format!("<feature var='{NS}'/>")), "{info}");
    assert!(
        info.contains("<field var='max-file-size'><value>5000</value></field>"),
        "{info}"
    );
    assert!(info.contains(&format!("<value>{NS}</value>")), "{info}");
}

#[test]
fn put_then_get_the_same_bytes() {
    let server = server_with("");
    let mut alice = Client::online(&server, "alice", "pc");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let slot = slot(&mut alice, "holiday photo.jpg", body.len());
    assert!(slot.path.ends_with("/holiday%20photo.jpg"), "{}", slot.path);
    // Nothing is visible before the upload.
    assert_eq!(get(&server, "GET", &slot.path).status, 404);
    let created = put(&server, &slot, body.len(), &body);
    assert_eq!(created.status, 201, "{}", created.head);
    assert_eq!(
        created.header("Access-Control-Allow-Origin").as_deref(),
        Some("*")
    );

    let got = get(&server, "GET", &slot.path);
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "the body differs");
    assert_eq!(got.header("Content-Type").as_deref(), Some("text/plain"));
    assert_eq!(got.header("Content-Length"), Some(body.len().to_string()));
    assert_eq!(
        got.header("Content-Disposition").as_deref(),
        Some("attachment; filename*=UTF-8''holiday%20photo.jpg")
    );
    assert_eq!(
        got.header("Access-Control-Allow-Origin").as_deref(),
        Some("*")
    );

    let head = get(&server, "HEAD", &slot.path);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some(body.len().to_string()));
    assert!(head.body.is_empty());

    // Only once.
    assert_eq!(put(&server, &slot, body.len(), &body).status, 409);
    // Other names and tokens are not found.
    let other = slot.path.replace("holiday%20photo.jpg", "other.jpg");
    assert_eq!(get(&server, "GET", &other).status, 404);
    assert_eq!(get(&server, "GET", "/upload/nothing/x").status, 404);
    assert_eq!(get(&server, "GET", "/").status, 404);

    // The file and its description survive a restart.
    let mut server = server;
    server.stop();
    server.spawn();
    let again = get(&server, "GET", &slot.path);
    assert_eq!(again.status, 200);
    assert!(again.body == body);
    assert_eq!(again.header("Content-Type").as_deref(), Some("text/plain"));
}

#[test]
fn too_large_is_refused_with_the_limit() {
    let server = server_with("max_file_bytes = 100\n");
    let mut alice = Client::online(&server, "alice", "pc");
    let reply = request_slot(&mut alice, "big.bin", 101, "application/octet-stream");
    assert!(reply.contains("type='error'"), "{reply}");
    assert!(reply.contains("<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"));
    assert!(
        reply.contains(&format!(
            "<file-too-large xmlns='{NS}'><max-file-size>100</max-file-size></file-too-large>"
        )),
        "{reply}"
    );
    let ok = request_slot(&mut alice, "big.bin", 100, "application/octet-stream");
    assert!(ok.contains("type='result'"), "{ok}");
}

#[test]
fn quota_counts_files_and_slots_per_user() {
    let server = server_with("max_file_bytes = 100\nquota_bytes_per_user = 150\n");
    let mut alice = Client::online(&server, "alice", "pc");
    let mut bob = Client::online(&server, "bob", "pc");
    let first = slot(&mut alice, "a.txt", 100);
    assert_eq!(put(&server, &first, 100, &[b'a'; 100]).status, 201);
    let reply = request_slot(&mut alice, "b.txt", 60, "text/plain");
    assert!(
        reply.contains("<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
        "{reply}"
    );
    // An unused slot counts as well.
    slot(&mut alice, "c.txt", 50);
    let reply = request_slot(&mut alice, "d.txt", 1, "text/plain");
    assert!(reply.contains("<resource-constraint"), "{reply}");
    // Another user has a quota of their own.
    slot(&mut bob, "b.txt", 100);
}

#[test]
fn bad_requests_are_refused() {
    let server = server_with("");
    let mut alice = Client::online(&server, "alice", "pc");
    for name in ["", "..", "a/b", "a&#10;b"] {
        let reply = request_slot(&mut alice, name, 10, "text/plain");
        assert!(
            reply.contains("<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{name}: {reply}"
        );
    }
    alice.send(&format!(
        "<iq type='get' id='slot' to='{UPLOAD}'><request xmlns='{NS}' filename='x'/></iq>"
    ));
    assert!(alice.expect("id='slot'").contains("<bad-request"));
    alice.send(&format!(
        "<iq type='set' id='other' to='{UPLOAD}'><query xmlns='jabber:iq:version'/></iq>"
    ));
    assert!(alice.expect("id='other'").contains("<service-unavailable"));
}

#[test]
fn put_must_match_the_slot() {
    let server = server_with("");
    let mut alice = Client::online(&server, "alice", "pc");
    let slot = slot(&mut alice, "notes.txt", 10);
    assert_eq!(put(&server, &slot, 11, &[b'x'; 11]).status, 413);
    assert_eq!(put(&server, &slot, 9, &[b'x'; 9]).status, 400);
    let wrong = Slot {
        path: slot.path.clone(),
        auth: "guess".into(),
    };
    assert_eq!(put(&server, &wrong, 10, &[b'x'; 10]).status, 403);
    let no_length = format!(
        "PUT {} HTTP/1.1\r\nAuthorization: {}\r\n\r\n",
        slot.path, slot.auth
    );
    assert_eq!(http(&server, no_length.as_bytes()).status, 411);
    // The refusals did not use the slot up; a client may wait for the go-ahead.
    let mut expect = format!(
        "PUT {} HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 10\r\n\
         Expect: 100-continue\r\n\r\n",
        slot.path, slot.auth
    )
    .into_bytes();
    expect.extend_from_slice(b"0123456789");
    let created = http(&server, &expect);
    assert_eq!(created.status, 100, "{}", created.head);
    assert!(
        String::from_utf8_lossy(&created.body).starts_with("HTTP/1.1 201 Created\r\n"),
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(get(&server, "GET", &slot.path).body, b"0123456789");
}

#[test]
fn a_broken_upload_leaves_no_file() {
    let server = server_with("");
    let mut alice = Client::online(&server, "alice", "pc");
    let slot = slot(&mut alice, "cut.txt", 1000);
    // Half the body, then the connection goes away.
    let request = format!(
        "PUT {} HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 1000\r\n\r\n{}",
        slot.path,
        slot.auth,
        "x".repeat(500)
    );
    {
        let mut config = (*server.tls_client_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(UPLOAD).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(upload_addr(&server)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request.as_bytes()).unwrap();
        tls.flush().unwrap();
    }
    server.wait_for_log("upload failed");
    assert_eq!(get(&server, "GET", &slot.path).status, 404);
    let dir = server.data_dir().join("upload");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // The slot can be used again.
    assert_eq!(put(&server, &slot, 1000, &[b'y'; 1000]).status, 201);
}

#[test]
fn preflight_and_malformed_requests() {
    let server = server_with("");
    let options = http(
        &server,
        b"OPTIONS /upload/a/b HTTP/1.1\r\nOrigin: https://web.example\r\n\
          Access-Control-Request-Method: PUT\r\n\r\n",
    );
    assert_eq!(options.status, 204);
    assert_eq!(
        options.header("Access-Control-Allow-Origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        options.header("Access-Control-Allow-Methods").as_deref(),
        Some("GET, HEAD, PUT, OPTIONS")
    );
    assert_eq!(
        options.header("Access-Control-Allow-Headers").as_deref(),
        Some("Authorization, Content-Type")
    );
    assert_eq!(http(&server, b"NONSENSE\r\n\r\n").status, 400);
    assert_eq!(
        http(&server, b"GET / HTTP/1.1\r\nno colon\r\n\r\n").status,
        400
    );
    let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b"X-Filler: 0123456789\r\n", 500).flatten());
    huge.extend_from_slice(b"\r\n");
    assert_eq!(http(&server, &huge).status, 431);
    assert_eq!(http(&server, b"DELETE / HTTP/1.1\r\n\r\n").status, 405);
}

#[test]
fn files_expire_after_expire_days() {
    let mut server = server_with("expire_days = 1\n");
    let mut alice = Client::online(&server, "alice", "pc");
    let old = slot(&mut alice, "old.txt", 3);
    let new = slot(&mut alice, "new.txt", 3);
    assert_eq!(put(&server, &old, 3, b"old").status, 201);
    assert_eq!(put(&server, &new, 3, b"new").status, 201);
    drop(alice);
    server.stop();
    let token = old.path.split('/').nth(2).unwrap();
    let dir = server.data_dir().join("upload");
    let data = dir.join(format!("{token}.data"));
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    server.spawn();
    server.wait_for_log(&format!("upload {token}: expired and removed"));
    assert_eq!(get(&server, "GET", &old.path).status, 404);
    assert_eq!(get(&server, "GET", &new.path).body, b"new");
    assert!(!data.exists());
    assert!(!dir.join(format!("{token}.meta")).exists());
}

#[test]
fn a_trickled_request_head_is_cut_off() {
    let server = server_with("");
    let mut config = (*server.tls_client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(UPLOAD).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(upload_addr(&server)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let started = std::time::Instant::now();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    // The head never ends: the server closes the connection at its deadline, unanswered.
    let _ = tls.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

#[test]
fn a_deleted_account_takes_its_files_along() {
    let server = server_with("");
    let mut alice = Client::online(&server, "alice", "pc");
    let mut bob = Client::online(&server, "bob", "pc");
    let hers = slot(&mut alice, "hers.txt", 4);
    let his = slot(&mut bob, "his.txt", 3);
    assert_eq!(put(&server, &hers, 4, b"hers").status, 201);
    assert_eq!(put(&server, &his, 3, b"his").status, 201);
    let out = server.hearth(&["deluser", "alice@localhost"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_for_log("1 files of deleted account alice removed");
    assert_eq!(get(&server, "GET", &hers.path).status, 404);
    assert_eq!(get(&server, "GET", &his.path).body, b"his");
    let token = hers.path.split('/').nth(2).unwrap();
    let data = server
        .data_dir()
        .join("upload")
        .join(format!("{token}.data"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while data.exists() {
        assert!(std::time::Instant::now() < deadline, "file still there");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Audit finding: 64 idle TCP connections (no TLS, no byte) from one host locked every
/// upload and download out. One address now gets `upload.max_connections_per_ip`, and
/// a connection that has not sent its request by `upload.first_byte_secs` is closed.
#[test]
fn idle_connections_from_one_address_leave_uploads_to_others_working() {
    let server = server_with("max_connections_per_ip = 4\nfirst_byte_secs = 3\n");
    let mut alice = Client::online(&server, "alice", "pc");
    let addr = upload_addr(&server);
    // More than the server's whole cap of 64, all from 127.0.0.1, all silent.
    let idle: Vec<TcpStream> = (0..70).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let opened = std::time::Instant::now();
    // Another host uploads and downloads meanwhile.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let slot = slot(&mut alice, "note.txt", 5);
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: {UPLOAD}\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
        slot.path, slot.auth
    );
    assert_eq!(http_from(&server, other, request.as_bytes()).status, 201);
    let request = format!("GET {} HTTP/1.1\r\nHost: {UPLOAD}\r\n\r\n", slot.path);
    let got = http_from(&server, other, request.as_bytes());
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    // Every idle connection is closed: those over the cap at once, the rest at the
    // first-byte time.
    for mut tcp in idle {
        tcp.set_read_timeout(Some(patience(Duration::from_secs(10))))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = tcp.read(&mut byte);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?} after {:?}",
            opened.elapsed()
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < patience(Duration::from_secs(10)),
        "{waited:?}"
    );
    server.wait_for_log("connections open from one address");
}

/// Audit finding: size='0' slots bypassed the byte quota (1,500 uploads, 3,000 files on
/// disk). XEP-0363 §4: a request the service will not grant as asked is `bad-request`;
/// the files quota counts files, whatever their size.
#[test]
fn empty_files_are_refused_and_files_are_counted() {
    let server = server_with("quota_files_per_user = 3\n");
    let mut alice = Client::online(&server, "alice", "pc");
    let reply = request_slot(&mut alice, "empty.txt", 0, "text/plain");
    assert_eq!(
        iq_error(&reply),
        ("modify".to_string(), "bad-request".to_string())
    );
    let stored = slot(&mut alice, "one.txt", 1);
    assert_eq!(put(&server, &stored, 1, b"1").status, 201);
    slot(&mut alice, "two.txt", 1);
    slot(&mut alice, "three.txt", 1);
    // A stored file and two unused slots: the fourth is refused, however small.
    let reply = request_slot(&mut alice, "four.txt", 1, "text/plain");
    assert_eq!(
        iq_error(&reply),
        ("wait".to_string(), "resource-constraint".to_string())
    );
    let mut bob = Client::online(&server, "bob", "pc");
    slot(&mut bob, "his.txt", 1);
}

/// Every path under `dir`, depth first.
fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.clone());
        if path.is_dir() {
            walk(&path, found);
        }
    }
}

/// Audit finding: in a data dir that already existed with loose permissions, under
/// umask 022, `hearth.redb` and uploads were created 0644. Everything the server creates
/// is now owner-only whatever the umask, and a readable data dir is warned about.
#[test]
fn files_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The server inherits the umask of this test process.
    // SAFETY: umask takes a plain integer and cannot fail.
    unsafe {
        libc::umask(0o022);
    }
    let mut server = server_with("");
    server.stop();
    let data = server.data_dir();
    // A data dir made by hand (or by an older version), empty and world-readable.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.spawn();
    server.wait_for_log("others on this machine may read it");
    server.add_user("carol");
    let mut carol = Client::online(&server, "carol", "pc");
    let slot = slot(&mut carol, "secret.txt", 6);
    assert_eq!(put(&server, &slot, 6, b"secret").status, 201);
    let mut paths = Vec::new();
    walk(&data, &mut paths);
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("hearth.redb")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".data")), "{names:?}");
    for path in &paths {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() {
            assert_eq!(mode, 0o600, "{}", path.display());
        } else if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode & 0o077, 0, "{}", path.display());
        }
    }
    let warning = server
        .log()
        .lines()
        .find(|l| l.contains("others on this machine may read it"))
        .unwrap()
        .to_string();
    assert!(
        warning.contains("WARN") && warning.contains("755"),
        "{warning}"
    );
}
