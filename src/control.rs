//! Local control socket: both ends of the line protocol that lets `hearth adduser`, `passwd`,
//! `deluser` and `users` change accounts while the server holds the database.
//!
//! One request line per connection on `<data_dir>/control.sock` (mode 0600):
//! `ADD <user> <hex credentials>`, `PASSWD <user> <hex credentials>`, `DEL <user>`, `LIST`.
//! Replies: `OK`; for `LIST`, one `OK <user>` line per account then `END`; or `ERR <message>`.
//! `<user>` is the localpart of an account on the configured domain.
//!
//! This module must never carry a password (only credentials derived by the CLI travel),
//! listen anywhere else or more openly, or make the event loop wait on disk or on a slow peer.

use std::cell::Cell;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use smol::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::unix::{UnixListener, UnixStream};
use smol::{LocalExecutor, Timer};

use crate::store::{Store, StoreError};

/// File name of the socket inside the data dir.
pub const SOCKET_NAME: &str = "control.sock";
/// Longest request line (without its newline). Credentials are a few hundred hex digits.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest localpart accepted (RFC 7622 §3.3.1).
const MAX_USER_BYTES: usize = 1023;
/// Connections handled at once; more are told to retry. The socket is owner-only, so this only
/// guards against a runaway script.
const MAX_CONNECTIONS: usize = 8;
/// How long the server waits for a request line, and for its reply to be taken.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CLI waits for the server; a durable write on an SD card can take a while.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply the CLI reads (a `LIST` of many thousands of accounts fits).
const MAX_REPLY_BYTES: u64 = 4 * 1024 * 1024;

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create an account; fails if it exists.
    Add { user: String, credentials: Vec<u8> },
    /// Replace an existing account's credentials.
    Passwd { user: String, credentials: Vec<u8> },
    /// Delete an account and everything stored for it, ending its sessions.
    Delete { user: String },
    /// List the accounts.
    List,
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// The answer to [`Request::List`].
    Users(Vec<String>),
    /// The request failed; one line fit for the user.
    Error(String),
}

impl Request {
    /// The request line, without its newline.
    pub fn encode(&self) -> String {
        match self {
            Request::Add { user, credentials } => format!("ADD {user} {}", hex(credentials)),
            Request::Passwd { user, credentials } => format!("PASSWD {user} {}", hex(credentials)),
            Request::Delete { user } => format!("DEL {user}"),
            Request::List => "LIST".into(),
        }
    }

    /// Parses one request line (without its newline; a trailing `\r` is tolerated for people
    /// typing into `nc -U`). The error is the text of the `ERR` reply.
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let fields: Vec<&str> = line.split(' ').collect();
        let request = match fields.as_slice() {
            ["ADD", user, credentials] => Request::Add {
                user: checked_user(user)?,
                credentials: unhex(credentials)?,
            },
            ["PASSWD", user, credentials] => Request::Passwd {
                user: checked_user(user)?,
                credentials: unhex(credentials)?,
            },
            ["DEL", user] => Request::Delete {
                user: checked_user(user)?,
            },
            ["LIST"] => Request::List,
            [verb @ ("ADD" | "PASSWD" | "DEL" | "LIST"), ..] => {
                return Err(format!("wrong number of fields for {verb}"))
            }
            _ => return Err("unknown request (ADD, PASSWD, DEL or LIST)".into()),
        };
        Ok(request)
    }
}

impl Reply {
    /// The reply as sent, newline-terminated.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok => "OK\n".into(),
            Reply::Users(users) => {
                let mut out = String::new();
                for user in users {
                    let _ = writeln!(out, "OK {user}"); // writing to a String cannot fail
                }
                out.push_str("END\n");
                out
            }
            Reply::Error(message) => {
                let message = message.replace(['\n', '\r'], " ");
                let message = if message.is_empty() {
                    "failed"
                } else {
                    &message
                };
                format!("ERR {message}\n")
            }
        }
    }

    /// Parses a whole reply, as read until the server closed the connection.
    pub fn parse(text: &str) -> Result<Reply, String> {
        let lines: Vec<&str> = text.lines().collect();
        match lines.as_slice() {
            [] => Err("empty reply".into()),
            ["OK"] => Ok(Reply::Ok),
            [error] if error.starts_with("ERR ") => {
                Ok(Reply::Error(error.trim_start_matches("ERR ").to_string()))
            }
            [users @ .., "END"] => users
                .iter()
                .map(|line| match line.strip_prefix("OK ") {
                    Some(user) if valid_user(user) => Ok(user.to_string()),
                    _ => Err(format!("malformed reply line {line:?}")),
                })
                .collect::<Result<_, _>>()
                .map(Reply::Users),
            [first, ..] => Err(format!("malformed reply starting {first:?}")),
        }
    }
}

/// Where the socket lives for a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Sends one request to the running server and waits for its reply (blocking, with a timeout).
/// A reply that does not fit the request (e.g. `OK` to `LIST`) is an error.
pub fn request(data_dir: &Path, request: &Request) -> Result<Reply, String> {
    let path = socket_path(data_dir);
    let mut stream = StdUnixStream::connect(&path)
        .map_err(|error| format!("no hearth server answers on {}: {error}", path.display()))?;
    let timed_out = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "the server did not answer on {} within {} s",
            path.display(),
            CLIENT_TIMEOUT.as_secs()
        ),
        _ => format!("control socket {}: {error}", path.display()),
    };
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
        .map_err(timed_out)?;
    stream
        .write_all(format!("{}\n", request.encode()).as_bytes())
        .map_err(timed_out)?;
    let mut bytes = Vec::new();
    (&stream)
        .take(MAX_REPLY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(timed_out)?;
    if bytes.len() as u64 > MAX_REPLY_BYTES {
        return Err("the server's reply is too long".into());
    }
    let text = String::from_utf8(bytes).map_err(|_| "the server's reply is not UTF-8")?;
    let reply =
        Reply::parse(&text).map_err(|error| format!("bad reply from the server: {error}"))?;
    match (request, &reply) {
        (_, Reply::Error(_)) | (Request::List, Reply::Users(_)) => Ok(reply),
        (Request::List, Reply::Ok) | (_, Reply::Users(_)) => {
            Err("the server's reply does not fit the request".into())
        }
        (_, Reply::Ok) => Ok(reply),
    }
}

/// Creates the server's listening socket, owner-only. A socket file left by a server that
/// died is removed; one that still answers means another server runs on this data dir.
pub fn bind(data_dir: &Path) -> Result<UnixListener, String> {
    let path = socket_path(data_dir);
    let shown = path.display();
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!("{shown} exists and is not a socket"));
        }
        Ok(_) => match StdUnixStream::connect(&path) {
            Ok(_) => return Err(format!("another hearth server answers on {shown}")),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(&path)
                    .map_err(|error| format!("cannot remove stale {shown}: {error}"))?;
            }
            Err(error) => return Err(format!("{shown}: {error}")),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(format!("{shown}: {error}")),
    }
    let listener =
        UnixListener::bind(&path).map_err(|error| format!("cannot listen on {shown}: {error}"))?;
    // Connecting needs write permission on the socket file, which the usual umask already
    // denies to others between bind and this chmod; after it, only the owner may connect.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| format!("cannot restrict {shown} to its owner: {error}"))?;
    Ok(listener)
}

/// Removes the socket at a clean stop, so a later `hearth adduser` edits the database
/// directly instead of finding a socket nobody answers.
pub fn unbind(data_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(data_dir));
}

/// A store operation running on the server's loop.
pub type StoreOp = Pin<Box<dyn Future<Output = Result<(), StoreError>>>>;

/// What the running server does for account requests beyond the accounts table.
pub struct Hooks {
    /// Deletes an account the way the running server must (sessions, queued writes).
    pub delete: Box<dyn Fn(String) -> StoreOp>,
    /// An account was added: a name deleted earlier is in use again.
    pub added: Box<dyn Fn(&str)>,
}

/// Answers control requests until the returned future is dropped (at server shutdown).
///
/// Runs on the server's single-threaded loop: each connection is a task on a private
/// [`LocalExecutor`] driven by this future, so the caller just spawns `serve` once. Store
/// writes run on smol's blocking pool, except `DEL`, which `hooks` carries out.
pub async fn serve(listener: UnixListener, store: Store, hooks: Rc<Hooks>) {
    let connections = LocalExecutor::new();
    let active = Rc::new(Cell::new(0usize));
    connections
        .run(async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let busy = active.get() >= MAX_CONNECTIONS;
                        let slot = ConnectionSlot::take(&active);
                        let task = handle(stream, store.clone(), Rc::clone(&hooks), busy);
                        connections
                            .spawn(async move {
                                task.await;
                                drop(slot);
                            })
                            .detach();
                    }
                    Err(error) => {
                        // Out of file descriptors, usually: wait instead of spinning.
                        log::warn!("control socket: accept failed: {error}");
                        Timer::after(Duration::from_millis(500)).await;
                    }
                }
            }
        })
        .await
}

/// Counts a connection as active while it lives.
struct ConnectionSlot(Rc<Cell<usize>>);

impl ConnectionSlot {
    fn take(active: &Rc<Cell<usize>>) -> ConnectionSlot {
        active.set(active.get() + 1);
        ConnectionSlot(Rc::clone(active))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Reads one request, carries it out and replies. Silent peers are dropped after a timeout.
async fn handle(mut stream: UnixStream, store: Store, hooks: Rc<Hooks>, busy: bool) {
    // Even a busy server reads the request: closing with unread input would reset the
    // connection and lose the reply.
    let reply = match within(SERVER_IO_TIMEOUT, read_request(&stream)).await {
        None => {
            log::debug!("control socket: no request within the timeout");
            return;
        }
        Some(_) if busy => Reply::Error("busy, try again".into()),
        Some(Err(message)) => Reply::Error(message),
        Some(Ok(request)) => execute(request, store, &hooks).await,
    };
    let sent = within(SERVER_IO_TIMEOUT, async {
        stream.write_all(reply.encode().as_bytes()).await?;
        stream.flush().await
    })
    .await;
    if !matches!(sent, Some(Ok(()))) {
        log::debug!("control socket: the client did not take its reply");
    }
}

/// Reads the request line, at most [`MAX_LINE_BYTES`] plus its newline. The error is the text
/// of the `ERR` reply.
async fn read_request(stream: &UnixStream) -> Result<Request, String> {
    // A clone shares the socket; it lets `take` own its reader.
    let mut reader = smol::io::BufReader::new(stream.clone().take(MAX_LINE_BYTES as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|error| format!("read failed: {error}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE_BYTES {
        return Err(format!("request longer than {MAX_LINE_BYTES} bytes"));
    }
    let line = std::str::from_utf8(&line).map_err(|_| "request is not UTF-8".to_string())?;
    Request::parse(line)
}

/// Carries out a request off the loop thread, or a `DEL` through the server's hooks.
async fn execute(request: Request, store: Store, hooks: &Hooks) -> Reply {
    let (done, user) = match &request {
        Request::Add { user, .. } => ("added", user.clone()),
        Request::Passwd { user, .. } => ("changed the password of", user.clone()),
        Request::Delete { user } => ("deleted", user.clone()),
        Request::List => ("listed", String::from("accounts")),
    };
    let is_add = matches!(request, Request::Add { .. });
    let reply = match request {
        Request::Delete { user } => reply_to(&user, (hooks.delete)(user.clone()).await),
        request => smol::unblock(move || apply(&store, &request)).await,
    };
    if reply == Reply::Ok {
        log::info!("control socket: {done} user {user}");
        if is_add {
            (hooks.added)(&user);
        }
    }
    reply
}

/// Carries out a request on an open store. Blocks on disk: the server runs it on smol's
/// blocking pool, the CLI directly when no server holds the database.
pub fn apply(store: &Store, request: &Request) -> Reply {
    let (user, result) = match request {
        Request::List => {
            return match store.list_users() {
                Ok(users) => Reply::Users(users),
                Err(error) => Reply::Error(error.to_string()),
            };
        }
        Request::Add { user, credentials } => (user, store.create_user(user, credentials)),
        Request::Passwd { user, credentials } => (user, store.set_credentials(user, credentials)),
        Request::Delete { user } => (user, smol::block_on(store.delete_user(user))),
    };
    reply_to(user, result)
}

fn reply_to(user: &str, result: Result<(), StoreError>) -> Reply {
    match result {
        Ok(()) => Reply::Ok,
        Err(error) => Reply::Error(store_error_message(user, &error)),
    }
}

/// The message for a failed account change, shared by the server and the CLI's direct path.
pub fn store_error_message(user: &str, error: &StoreError) -> String {
    match error {
        StoreError::Exists => format!("user {user} already exists"),
        StoreError::NotFound => format!("no user {user}"),
        other => other.to_string(),
    }
}

/// Runs `future` for at most `limit`.
async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// A localpart the protocol can carry: the CLI sends only parsed JID localparts, so this is a
/// guard against anything else, not a second JID parser. It excludes the field separator and
/// the characters RFC 7622 forbids in localparts.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_BYTES
        && !user
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || "\"&'/:<>@".contains(ch))
}

fn checked_user(user: &str) -> Result<String, String> {
    if valid_user(user) {
        Ok(user.to_string())
    } else {
        Err("invalid user name".into())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}"); // writing to a String cannot fail
    }
    out
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || "credentials are not an even number of hex digits".to_string();
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let nibble = |digit: u8| char::from(digit).to_digit(16).ok_or_else(invalid);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Ok((nibble(*high)? << 4 | nibble(*low)?) as u8),
            _ => Err(invalid()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hearth-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Add {
                user: "alice".into(),
                credentials: vec![0, 1, 0xab, 0xff],
            },
            Request::Passwd {
                user: "bob.smith".into(),
                credentials: vec![0x10; 200],
            },
            Request::Delete { user: "ça".into() },
            Request::List,
        ] {
            let line = request.encode();
            assert!(!line.contains('\n'));
            assert_eq!(Request::parse(&line), Ok(request));
        }
        assert_eq!(
            Request::Add {
                user: "a".into(),
                credentials: vec![0xab, 0x01]
            }
            .encode(),
            "ADD a ab01"
        );
        assert_eq!(Request::parse("LIST\r"), Ok(Request::List));
        assert_eq!(
            Request::parse("DEL a").map(|r| r.encode()),
            Ok("DEL a".into())
        );
        assert_eq!(
            Request::parse("ADD a AB01"),
            Ok(Request::Add {
                user: "a".into(),
                credentials: vec![0xab, 0x01]
            })
        );
    }

    #[test]
    fn malformed_requests_rejected() {
        for line in [
            "",
            "list",
            "FROB",
            "LIST x",
            "ADD alice",
            "ADD alice 00 00",
            "ADD  alice 00",
            "ADD alice ",
            "ADD alice 0",
            "ADD alice zz",
            "ADD alice +1",
            "ADD alice é0",
            "ADD alice@example.org 00",
            "ADD a/b 00",
            "DEL",
            "DEL a\tb",
            "DEL a\u{0}",
            "PASSWD bob",
            " LIST",
        ] {
            assert!(Request::parse(line).is_err(), "accepted {line:?}");
        }
        let long_user = "u".repeat(MAX_USER_BYTES + 1);
        assert!(Request::parse(&format!("DEL {long_user}")).is_err());
        assert!(Request::parse(&format!("DEL {}", &long_user[1..])).is_ok());
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ok,
            Reply::Users(vec![]),
            Reply::Users(vec!["alice".into(), "bob".into()]),
            Reply::Error("user alice already exists".into()),
        ] {
            assert_eq!(Reply::parse(&reply.encode()), Ok(reply));
        }
        assert_eq!(Reply::Users(vec![]).encode(), "END\n");
        assert_eq!(Reply::Users(vec!["a".into()]).encode(), "OK a\nEND\n");
        assert_eq!(
            Reply::Error("two\nlines".into()).encode(),
            "ERR two lines\n"
        );
        assert_eq!(Reply::Error(String::new()).encode(), "ERR failed\n");
        assert_eq!(Reply::parse("OK\r\n"), Ok(Reply::Ok));
    }

    #[test]
    fn malformed_replies_rejected() {
        for text in [
            "",
            "\n",
            "OK\nOK\n",
            "OK a\n",
            "OK a\nOK b\n",
            "OK\nEND\n",
            "OK a b\nEND\n",
            "ERR\n",
            "ERR x\nEND\n",
            "YES\n",
            "END\nOK a\n",
        ] {
            assert!(Reply::parse(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn hex_is_strict() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0, 0x0f, 0xf0, 0xff]), "000ff0ff");
        assert_eq!(unhex("000ff0FF"), Ok(vec![0, 0x0f, 0xf0, 0xff]));
        for bad in ["", "0", "0g", "-1", "+1", " 1", "ééé", "é0"] {
            assert!(unhex(bad).is_err(), "accepted {bad:?}");
        }
    }

    /// Sends raw bytes, then EOF, and returns everything the server answered.
    async fn exchange(path: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[test]
    fn serve_and_request_end_to_end() {
        let dir = temp_dir("e2e");
        let listener = bind(&dir).unwrap();
        let path = socket_path(&dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let error = bind(&dir).unwrap_err();
        assert!(error.contains("another hearth server answers"), "{error}");

        let store = Store::open(&dir, crate::store::DEFAULT_CACHE_BYTES).unwrap();
        let added = Rc::new(RefCell::new(Vec::<String>::new()));
        let hooks = Rc::new(Hooks {
            delete: {
                let store = store.clone();
                Box::new(move |user: String| Box::pin(store.delete_user(&user)))
            },
            added: {
                let added = Rc::clone(&added);
                Box::new(move |user: &str| added.borrow_mut().push(user.into()))
            },
        });
        let executor = LocalExecutor::new();
        smol::block_on(executor.run(async {
            let _server = executor.spawn(serve(listener, store, hooks));
            let ask = |request: Request| {
                let dir = dir.clone();
                smol::unblock(move || super::request(&dir, &request))
            };
            let add = |user: &str| Request::Add {
                user: user.into(),
                credentials: vec![1, 2, 3],
            };
            assert_eq!(ask(Request::List).await, Ok(Reply::Users(vec![])));
            assert_eq!(ask(add("alice")).await, Ok(Reply::Ok));
            assert_eq!(ask(add("bob")).await, Ok(Reply::Ok));
            assert_eq!(
                ask(add("alice")).await,
                Ok(Reply::Error("user alice already exists".into()))
            );
            let passwd = |user: &str| Request::Passwd {
                user: user.into(),
                credentials: vec![9],
            };
            assert_eq!(ask(passwd("bob")).await, Ok(Reply::Ok));
            assert_eq!(
                ask(passwd("carol")).await,
                Ok(Reply::Error("no user carol".into()))
            );
            assert_eq!(
                ask(Request::List).await,
                Ok(Reply::Users(vec!["alice".into(), "bob".into()]))
            );
            let delete = |user: &str| Request::Delete { user: user.into() };
            assert_eq!(ask(delete("alice")).await, Ok(Reply::Ok));
            assert_eq!(
                ask(delete("alice")).await,
                Ok(Reply::Error("no user alice".into()))
            );
            assert_eq!(*added.borrow(), ["alice", "bob"]);
            assert_eq!(
                ask(Request::List).await,
                Ok(Reply::Users(vec!["bob".into()]))
            );

            // Raw peers: garbage, an overlong line, a line ended by EOF, non-UTF-8.
            let reply = exchange(&path, b"FROB\n").await;
            assert!(reply.starts_with("ERR unknown request"), "{reply}");
            // (Exactly one byte too many: unread bytes would make the close a reset.)
            let reply = exchange(&path, &vec![b'A'; MAX_LINE_BYTES + 1]).await;
            assert_eq!(
                reply,
                format!("ERR request longer than {MAX_LINE_BYTES} bytes\n")
            );
            assert_eq!(exchange(&path, b"LIST").await, "OK bob\nEND\n");
            assert_eq!(
                exchange(&path, b"DEL \xff\n").await,
                "ERR request is not UTF-8\n"
            );
            assert_eq!(exchange(&path, b"LIST\nLIST\n").await, "OK bob\nEND\n");

            // Silent peers fill every slot; the next one is told to retry, then served again
            // once they leave.
            let mut silent = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                silent.push(UnixStream::connect(&path).await.unwrap());
            }
            assert_eq!(exchange(&path, b"LIST\n").await, "ERR busy, try again\n");
            drop(silent);
            let mut reply = String::new();
            for _ in 0..200 {
                reply = exchange(&path, b"LIST\n").await;
                if !reply.contains("busy") {
                    break;
                }
                Timer::after(Duration::from_millis(5)).await;
            }
            assert_eq!(reply, "OK bob\nEND\n");
        }));
        drop(executor); // drops the cancelled server task, closing the listener

        // The server is gone but its socket file remains: the next bind replaces it.
        assert!(path.exists());
        let error = request(&dir, &Request::List).unwrap_err();
        assert!(error.contains("no hearth server answers"), "{error}");
        drop(bind(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bind_refuses_a_non_socket() {
        let dir = temp_dir("not-socket");
        std::fs::write(socket_path(&dir), b"").unwrap();
        assert!(bind(&dir).unwrap_err().contains("is not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
