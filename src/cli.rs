//! Command line: owns argument parsing, help texts, exit codes, password prompting, and the
//! choice between changing the database directly and asking the running server to.
//!
//! Exit codes: 0 success, 1 runtime failure (including an account command finding no
//! database: the command line was fine, the state is not), 2 misuse (unknown command or
//! option, missing or extra argument, a JID not on the configured domain) or an invalid
//! config file. Every error
//! is one line on stderr: `hearth: COMMAND: message`.
//!
//! It must never let a password leave the process (SCRAM credentials are derived here, and only
//! they reach the store or the control socket), nor leave the terminal with echo turned off.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};

use lexopt::Arg;

use crate::config::{self, Config};
use crate::control::{self, Reply, Request};
use crate::jid::Jid;
use crate::sasl::Credentials;
use crate::store::{Store, StoreError};

/// Longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;

const EXIT_FAILURE: i32 = 1;
const EXIT_USAGE: i32 = 2;

const USAGE: &str = "\
Usage: hearth COMMAND [OPTIONS]

A small XMPP server.

Commands:
  serve      Run the server
  check      Check the config file and print the effective settings
  adduser    Create an account
  passwd     Change an account's password
  deluser    Delete an account and everything stored for it
  users      List the accounts

Options:
  -h, --help     Print this help (hearth COMMAND --help for a command's)
  -V, --version  Print the version

Every command takes --config FILE; without it the built-in defaults apply.
Account commands work whether or not the server is running, on the database
`hearth serve` created in the configured data_dir; they never create one.
";

const CONFIG_OPTION: &str = "  --config FILE     Config file (default: built-in settings)\n";
const PASSWORD_OPTION: &str =
    "  --password-stdin  Read the password as one line from standard input\n";
const HELP_OPTION: &str = "  -h, --help        Print this help\n";

/// What each command accepts, and its help text.
struct Spec {
    name: &'static str,
    synopsis: &'static str,
    about: &'static str,
    takes_jid: bool,
    takes_password: bool,
}

const COMMANDS: [Spec; 6] = [
    Spec {
        name: "serve",
        synopsis: "hearth serve [--config FILE]",
        about: "Run the server until SIGTERM or SIGINT. Logs go to stderr;\n\
                RUST_LOG sets the level (default: info).",
        takes_jid: false,
        takes_password: false,
    },
    Spec {
        name: "check",
        synopsis: "hearth check [--config FILE]",
        about: "Check the config file and print the effective settings as TOML.\n\
                Exits 2 if the file is invalid, 1 if the TLS certificate and key it\n\
                names (or the existing self-signed pair) cannot be loaded as serve would.",
        takes_jid: false,
        takes_password: false,
    },
    Spec {
        name: "adduser",
        synopsis: "hearth adduser [--config FILE] [--password-stdin] JID",
        about: "Create the account JID (user@domain, on the configured domain).\n\
                The password is asked twice on the terminal unless --password-stdin is given.",
        takes_jid: true,
        takes_password: true,
    },
    Spec {
        name: "passwd",
        synopsis: "hearth passwd [--config FILE] [--password-stdin] JID",
        about: "Set a new password for the account JID.\n\
                The password is asked twice on the terminal unless --password-stdin is given.",
        takes_jid: true,
        takes_password: true,
    },
    Spec {
        name: "deluser",
        synopsis: "hearth deluser [--config FILE] JID",
        about: "Delete the account JID and everything stored for it; its sessions end.",
        takes_jid: true,
        takes_password: false,
    },
    Spec {
        name: "users",
        synopsis: "hearth users [--config FILE]",
        about: "List the accounts, one JID per line.",
        takes_jid: false,
        takes_password: false,
    },
];

impl Spec {
    fn help(&self) -> String {
        let mut help = format!("Usage: {}\n\n{}\n\nOptions:\n", self.synopsis, self.about);
        help.push_str(CONFIG_OPTION);
        if self.takes_password {
            help.push_str(PASSWORD_OPTION);
        }
        help.push_str(HELP_OPTION);
        help
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help(Option<&'static str>),
    Version,
    Serve {
        config: Option<PathBuf>,
    },
    Check {
        config: Option<PathBuf>,
    },
    Account {
        config: Option<PathBuf>,
        action: Action,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Add { jid: String, password_stdin: bool },
    Passwd { jid: String, password_stdin: bool },
    Delete { jid: String },
    List,
}

/// Why a command failed: the one-line message and the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    /// Misuse of the command line; points at the help of `command` (or the top level).
    fn usage(command: Option<&str>, problem: impl std::fmt::Display) -> Failure {
        let message = match command {
            Some(name) => format!("{name}: {problem} (see hearth {name} --help)"),
            None => format!("{problem} (see hearth --help)"),
        };
        Failure {
            code: EXIT_USAGE,
            message,
        }
    }

    /// A bad config file or argument value: exit 2, without the help pointer.
    fn invalid(command: &str, problem: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: format!("{command}: {problem}"),
        }
    }

    fn runtime(command: &str, problem: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message: format!("{command}: {problem}"),
        }
    }
}

/// Runs the command line of this process and returns its exit code.
pub fn main() -> i32 {
    match parse(lexopt::Parser::from_env()).and_then(run) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("hearth: {}", failure.message.replace(['\n', '\r'], " "));
            failure.code
        }
    }
}

fn parse(mut parser: lexopt::Parser) -> Result<Command, Failure> {
    let name = match parser.next() {
        Ok(Some(Arg::Value(name))) => name,
        Ok(Some(Arg::Short('h') | Arg::Long("help"))) => {
            return no_value(&mut parser, None).map(|()| Command::Help(None))
        }
        Ok(Some(Arg::Short('V') | Arg::Long("version"))) => {
            return no_value(&mut parser, None).map(|()| Command::Version)
        }
        Ok(Some(other)) => return Err(Failure::usage(None, other.unexpected())),
        Ok(None) => return Err(Failure::usage(None, "missing command")),
        Err(error) => return Err(Failure::usage(None, error)),
    };
    let spec = COMMANDS
        .iter()
        .find(|spec| name == spec.name)
        .ok_or_else(|| Failure::usage(None, format!("unknown command {name:?}")))?;
    let usage = |problem: &dyn std::fmt::Display| Failure::usage(Some(spec.name), problem);

    let mut config = None;
    let mut jid = None;
    let mut password_stdin = false;
    while let Some(arg) = parser.next().map_err(|error| usage(&error))? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => {
                return no_value(&mut parser, Some(spec.name))
                    .map(|()| Command::Help(Some(spec.name)))
            }
            Arg::Long("config") => {
                let file = parser.value().map_err(|error| usage(&error))?;
                if config.replace(PathBuf::from(file)).is_some() {
                    return Err(usage(&"--config given twice"));
                }
            }
            Arg::Long("password-stdin") if spec.takes_password => {
                if password_stdin {
                    return Err(usage(&"--password-stdin given twice"));
                }
                password_stdin = true;
            }
            Arg::Value(value) if spec.takes_jid && jid.is_none() => {
                let value = value
                    .into_string()
                    .map_err(|_| usage(&"the JID is not valid UTF-8"))?;
                jid = Some(value);
            }
            other => return Err(usage(&other.unexpected())),
        }
    }
    let jid = match (spec.takes_jid, jid) {
        (true, None) => return Err(usage(&"missing JID")),
        (_, jid) => jid.unwrap_or_default(),
    };
    Ok(match spec.name {
        "serve" => Command::Serve { config },
        "check" => Command::Check { config },
        name => {
            let action = match name {
                "adduser" => Action::Add {
                    jid,
                    password_stdin,
                },
                "passwd" => Action::Passwd {
                    jid,
                    password_stdin,
                },
                "deluser" => Action::Delete { jid },
                _ => Action::List,
            };
            Command::Account { config, action }
        }
    })
}

/// Refuses a value attached to a flag that takes none (`--help=yes`, `-hx`), which would
/// otherwise go unnoticed because help and version stop parsing.
fn no_value(parser: &mut lexopt::Parser, command: Option<&str>) -> Result<(), Failure> {
    match parser.optional_value() {
        Some(value) => Err(Failure::usage(
            command,
            format!("unexpected value {value:?} for a flag"),
        )),
        None => Ok(()),
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help(None) => print!("{USAGE}"),
        Command::Help(Some(name)) => {
            if let Some(spec) = COMMANDS.iter().find(|spec| spec.name == name) {
                print!("{}", spec.help());
            }
        }
        Command::Version => println!("hearth {}", env!("CARGO_PKG_VERSION")),
        Command::Serve { config } => {
            let mut logger =
                env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
            crate::systemd::log_to_journal(&mut logger);
            logger.init();
            let path = config.as_deref();
            crate::run::run(load_config("serve", path)?, path, crate::features::ALL)
                .map_err(|error| Failure::runtime("serve", error))?;
        }
        Command::Check { config } => {
            let config = load_config("check", config.as_deref())?;
            // The certificate and key as `serve` loads them: a file that is missing or not
            // a pair stops the server at start (exit 1), so it fails the check the same way.
            let material =
                crate::tls::check(&config).map_err(|error| Failure::runtime("check", error))?;
            print!("{}", config.to_toml());
            if let Some(material) = material {
                // What another server's admin pins in `[s2s.pins]` (a comment: the output
                // stays a valid config file).
                println!(
                    "\n# TLS certificate SHA-256 fingerprint: {}",
                    material.fingerprint_sha256
                );
            }
        }
        Command::Account { config, action } => run_account(config.as_deref(), action)?,
    }
    Ok(())
}

fn load_config(command: &str, path: Option<&Path>) -> Result<Config, Failure> {
    config::load(path).map_err(|error| Failure::invalid(command, error))
}

/// Runs adduser, passwd, deluser or users.
fn run_account(config_path: Option<&Path>, action: Action) -> Result<(), Failure> {
    let (command, jid) = match &action {
        Action::Add { jid, .. } => ("adduser", jid.as_str()),
        Action::Passwd { jid, .. } => ("passwd", jid.as_str()),
        Action::Delete { jid } => ("deluser", jid.as_str()),
        Action::List => ("users", ""),
    };
    let config = load_config(command, config_path)?;
    require_database(&config).map_err(|error| Failure::runtime(command, error))?;
    let domain = config.domain.as_str();
    let user = || account_user(jid, domain).map_err(|error| Failure::invalid(command, error));
    let credentials = |password_stdin: bool| {
        read_password(password_stdin)
            .and_then(|password| derive_credentials(&password))
            .map_err(|error| Failure::runtime(command, error))
    };
    let request = match action {
        Action::Add { password_stdin, .. } => Request::Add {
            user: user()?,
            credentials: credentials(password_stdin)?,
        },
        Action::Passwd { password_stdin, .. } => Request::Passwd {
            user: user()?,
            credentials: credentials(password_stdin)?,
        },
        Action::Delete { .. } => Request::Delete { user: user()? },
        Action::List => Request::List,
    };
    match perform(&config, &request).map_err(|error| Failure::runtime(command, error))? {
        Reply::Error(error) => return Err(Failure::runtime(command, error)),
        Reply::Users(users) => {
            for user in users {
                println!("{user}@{domain}");
            }
        }
        Reply::Ok => match request {
            Request::Add { user, .. } => println!("added {user}@{domain}"),
            Request::Passwd { user, .. } => println!("changed the password of {user}@{domain}"),
            Request::Delete { user } => println!("deleted {user}@{domain}"),
            Request::List => {}
        },
    }
    Ok(())
}

/// Only `serve` creates a database: run from the wrong directory or with the wrong
/// `--config`, an account command would otherwise fill a new one the server never reads.
/// Checked before the password is asked for.
fn require_database(config: &Config) -> Result<(), String> {
    let database = config.data_dir.join(crate::store::DB_FILE_NAME);
    if database.is_file() {
        return Ok(());
    }
    let shown = std::path::absolute(&database).unwrap_or(database);
    Err(format!(
        "no database at {} (`hearth serve` creates it); give the server's config with \
         --config FILE",
        shown.display()
    ))
}

/// Carries out `request` on the database directly, or through the running server's control
/// socket when that server holds the database.
fn perform(config: &Config, request: &Request) -> Result<Reply, String> {
    let data_dir = config.data_dir.as_path();
    match open_store(data_dir) {
        Ok(store) => {
            let reply = control::apply(&store, request);
            if let (Reply::Ok, Request::Delete { user }) = (&reply, request) {
                crate::muc::account_deleted_offline(config, &store, user)?;
                crate::subscription::account_deleted_offline(config, &store, user)?;
            }
            Ok(reply)
        }
        Err(StoreError::Locked(_)) => control::request(data_dir, request),
        Err(error) => Err(error.to_string()),
    }
}

/// The localpart of `jid` if it names an account (no resource) on `domain`.
fn account_user(jid: &str, domain: &str) -> Result<String, String> {
    let (local, jid_domain, resource) =
        jid_parts(jid).map_err(|error| format!("{jid:?} is not a valid JID: {error}"))?;
    let Some(local) = local else {
        return Err(format!("{jid:?} has no user part (expected user@{domain})"));
    };
    if resource.is_some() {
        return Err(format!("{jid:?} has a resource (expected user@{domain})"));
    }
    if jid_domain != domain {
        return Err(format!(
            "{jid:?} is not on this server's domain {domain} (see `domain` in the config)"
        ));
    }
    Ok(local)
}

/// The new password, from standard input or asked twice on the terminal. Empty is refused.
fn read_password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        read_password_line(&mut std::io::stdin().lock())?
    } else {
        ask_password_twice()?
    };
    if password.is_empty() {
        return Err("empty password refused".into());
    }
    Ok(password)
}

/// One line without its line ending; an unterminated last line counts.
fn read_password_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    input
        .take(MAX_PASSWORD_BYTES as u64 + 2) // room for "\r\n"
        .read_until(b'\n', &mut line)
        .map_err(|error| format!("cannot read the password: {error}"))?;
    if line.is_empty() {
        return Err("no password given (end of input)".into());
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password longer than {MAX_PASSWORD_BYTES} bytes"));
    }
    String::from_utf8(line).map_err(|_| "the password is not valid UTF-8".into())
}

/// Prompts on the controlling terminal with echo off, twice.
fn ask_password_twice() -> Result<String, String> {
    let tty = File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|error| {
            format!("no terminal to ask for the password ({error}); use --password-stdin")
        })?;
    let _echo_off =
        EchoOff::new(&tty).map_err(|error| format!("cannot turn off terminal echo: {error}"))?;
    let first = prompt(&tty, "Password: ")?;
    if first.is_empty() {
        return Err("empty password refused".into());
    }
    let second = prompt(&tty, "Repeat: ")?;
    if first != second {
        return Err("the passwords do not match".into());
    }
    Ok(first)
}

fn prompt(mut tty: &File, text: &str) -> Result<String, String> {
    tty.write_all(text.as_bytes())
        .and_then(|()| tty.flush())
        .map_err(|error| format!("cannot write to the terminal: {error}"))?;
    // In canonical mode each read returns at most one line, so nothing typed ahead is lost.
    let line = read_password_line(&mut BufReader::new(tty));
    if line.is_err() {
        let _ = tty.write_all(b"\n"); // Ctrl-D echoes no newline; keep the error on its own line
    }
    line
}

/// Terminal echo turned off for as long as this lives, and restored even when the user
/// interrupts (Ctrl-C) or the process is told to terminate meanwhile.
struct EchoOff<'tty> {
    tty: &'tty File,
    saved: libc::termios,
    watcher: Option<SignalWatcher>,
}

impl<'tty> EchoOff<'tty> {
    fn new(tty: &'tty File) -> std::io::Result<EchoOff<'tty>> {
        let fd = tty.as_raw_fd();
        let saved = terminal_attributes(fd)?;
        // Watch for signals before echo goes off, so there is no moment without a restorer.
        let watcher = SignalWatcher::start(fd, saved)?;
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL; // still echo the Enter, so the next prompt starts afresh
        set_terminal_attributes(fd, &quiet)?;
        Ok(EchoOff {
            tty,
            saved,
            watcher: Some(watcher),
        })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // Restore first: a signal arriving now still finds the watcher, which restores again.
        let _ = set_terminal_attributes(self.tty.as_raw_fd(), &self.saved);
        drop(self.watcher.take());
    }
}

/// A thread that, on SIGINT, SIGTERM, SIGHUP or SIGQUIT, restores the terminal and exits with
/// the shell's `128 + signal` code. Dropping it stops the thread and the signal handling.
struct SignalWatcher {
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatcher {
    fn start(fd: RawFd, saved: libc::termios) -> std::io::Result<SignalWatcher> {
        use async_signal::{Signal, Signals};
        use smol::stream::StreamExt as _;
        let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup, Signal::Quit])?;
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tty-restore".into())
            .spawn(move || {
                let signal = smol::block_on(smol::future::or(
                    async { signals.next().await.and_then(Result::ok) },
                    async {
                        let _ = stopped.recv().await; // Err once the sender is dropped
                        None
                    },
                ));
                if let Some(signal) = signal {
                    let _ = set_terminal_attributes(fd, &saved);
                    eprintln!();
                    std::process::exit(128 + signal as i32);
                }
            })?;
        Ok(SignalWatcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `tcgetattr`: libc is the only way to read terminal modes; the struct is plain data that
/// the call fills completely when it succeeds.
#[allow(unsafe_code)]
fn terminal_attributes(fd: RawFd) -> std::io::Result<libc::termios> {
    let mut attributes = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: the pointer is valid for writes of one termios; it is read only after success.
    if unsafe { libc::tcgetattr(fd, attributes.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: tcgetattr returned 0, so it initialised the whole struct.
    Ok(unsafe { attributes.assume_init() })
}

/// `tcsetattr`: libc is the only way to change terminal modes.
#[allow(unsafe_code)]
fn set_terminal_attributes(fd: RawFd, attributes: &libc::termios) -> std::io::Result<()> {
    // SAFETY: `attributes` is a valid termios for the duration of the call; an invalid fd only
    // makes the call fail.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, attributes) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the database (fails with `Locked` while a server holds it).
fn open_store(data_dir: &Path) -> Result<Store, StoreError> {
    Store::open(data_dir, crate::store::DEFAULT_CACHE_BYTES)
}

/// Splits and normalises a JID into (localpart, domain, resource).
fn jid_parts(text: &str) -> Result<(Option<String>, String, Option<String>), String> {
    let jid = Jid::parse(text).map_err(|e| e.to_string())?;
    Ok((
        jid.local().map(str::to_string),
        jid.domain().to_string(),
        jid.resource().map(str::to_string),
    ))
}

/// Derives the stored SCRAM credentials: the password itself is never kept.
fn derive_credentials(password: &str) -> Result<Vec<u8>, String> {
    Credentials::derive(password, crate::sasl::DEFAULT_ITERATIONS)
        .map(|credentials| credentials.to_bytes())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, Failure> {
        parse(lexopt::Parser::from_args(args.iter().copied()))
    }

    fn usage_error(args: &[&str]) -> String {
        match parse_args(args) {
            Ok(command) => panic!("accepted {args:?} as {command:?}"),
            Err(failure) => {
                assert_eq!(failure.code, EXIT_USAGE, "{args:?}");
                assert!(!failure.message.contains('\n'));
                failure.message
            }
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse_args(&["--help"]), Ok(Command::Help(None)));
        assert_eq!(parse_args(&["-h"]), Ok(Command::Help(None)));
        assert_eq!(parse_args(&["--version"]), Ok(Command::Version));
        assert_eq!(parse_args(&["-V"]), Ok(Command::Version));
        assert_eq!(parse_args(&["serve"]), Ok(Command::Serve { config: None }));
        assert_eq!(
            parse_args(&["check", "--config", "/etc/h.toml"]),
            Ok(Command::Check {
                config: Some("/etc/h.toml".into())
            })
        );
        assert_eq!(
            parse_args(&["adduser", "--config=x.toml", "a@b", "--password-stdin"]),
            Ok(Command::Account {
                config: Some("x.toml".into()),
                action: Action::Add {
                    jid: "a@b".into(),
                    password_stdin: true
                }
            })
        );
        assert_eq!(
            parse_args(&["passwd", "a@b"]),
            Ok(Command::Account {
                config: None,
                action: Action::Passwd {
                    jid: "a@b".into(),
                    password_stdin: false
                }
            })
        );
        assert_eq!(
            parse_args(&["deluser", "--", "a@b"]),
            Ok(Command::Account {
                config: None,
                action: Action::Delete { jid: "a@b".into() }
            })
        );
        assert_eq!(
            parse_args(&["users"]),
            Ok(Command::Account {
                config: None,
                action: Action::List
            })
        );
        for spec in &COMMANDS {
            assert_eq!(
                parse_args(&[spec.name, "--help"]),
                Ok(Command::Help(Some(spec.name)))
            );
            assert_eq!(
                parse_args(&[spec.name, "--bogus", "-h"]).map_err(|f| f.code),
                Err(EXIT_USAGE)
            );
        }
    }

    #[test]
    fn misuse_is_one_line_and_exit_2() {
        assert_eq!(usage_error(&[]), "missing command (see hearth --help)");
        assert_eq!(
            usage_error(&["frob"]),
            "unknown command \"frob\" (see hearth --help)"
        );
        assert_eq!(
            usage_error(&["--config", "x", "serve"]),
            "invalid option '--config' (see hearth --help)"
        );
        assert_eq!(
            usage_error(&["adduser"]),
            "adduser: missing JID (see hearth adduser --help)"
        );
        assert_eq!(
            usage_error(&["deluser", "--password-stdin", "a@b"]),
            "deluser: invalid option '--password-stdin' (see hearth deluser --help)"
        );
        assert_eq!(
            usage_error(&["adduser", "a@b", "c@d"]),
            "adduser: unexpected argument \"c@d\" (see hearth adduser --help)"
        );
        assert_eq!(
            usage_error(&["users", "a@b"]),
            "users: unexpected argument \"a@b\" (see hearth users --help)"
        );
        assert_eq!(
            usage_error(&["serve", "--config"]),
            "serve: missing argument for option '--config' (see hearth serve --help)"
        );
        assert!(usage_error(&["check", "--config", "a", "--config", "b"]).contains("twice"));
        assert!(
            usage_error(&["passwd", "--password-stdin", "--password-stdin", "a@b"])
                .contains("twice")
        );
        assert!(usage_error(&["serve", "-x"]).starts_with("serve: invalid option '-x'"));
        assert!(usage_error(&["users", "--help=yes"]).starts_with("users: unexpected value"));
        assert!(usage_error(&["--version=2"]).starts_with("unexpected value \"2\""));
        assert!(usage_error(&["users", "--password-stdin"]).contains("invalid option"));
        assert!(usage_error(&["passwd", "--password-stdin=1", "a@b"]).contains("unexpected"));
    }

    #[test]
    fn help_texts_cover_the_options() {
        assert!(USAGE.contains("adduser") && USAGE.contains("--version"));
        for spec in &COMMANDS {
            let help = spec.help();
            assert!(help.starts_with(&format!("Usage: hearth {}", spec.name)));
            assert!(help.contains("--config FILE"));
            assert_eq!(help.contains("--password-stdin"), spec.takes_password);
            assert_eq!(spec.synopsis.contains("JID"), spec.takes_jid);
        }
    }

    #[test]
    fn account_jid_must_be_on_the_domain() {
        assert_eq!(
            account_user("alice@example.org", "example.org"),
            Ok("alice".into())
        );
        assert_eq!(
            account_user("alice@Example.ORG", "example.org"),
            Ok("alice".into())
        );
        for (jid, problem) in [
            ("alice@other.org", "not on this server's domain example.org"),
            ("example.org", "has no user part"),
            ("alice@example.org/phone", "has a resource"),
            ("@example.org", "not a valid JID"),
            ("alice@", "not a valid JID"),
            ("", "not a valid JID"),
        ] {
            let error = account_user(jid, "example.org").unwrap_err();
            assert!(error.contains(problem), "{jid}: {error}");
        }
    }

    #[test]
    fn password_line_reading() {
        let read = |bytes: &[u8]| read_password_line(&mut &bytes[..]);
        assert_eq!(read(b"secret\n"), Ok("secret".into()));
        assert_eq!(read(b"secret\r\n"), Ok("secret".into()));
        assert_eq!(read(b"secret"), Ok("secret".into()));
        assert_eq!(
            read(b" spaced out \nsecond line\n"),
            Ok(" spaced out ".into())
        );
        assert_eq!(read(b"\n"), Ok(String::new()));
        assert!(read(b"").unwrap_err().contains("end of input"));
        assert!(read(b"\xff\xfe\n").unwrap_err().contains("UTF-8"));
        let longest = vec![b'p'; MAX_PASSWORD_BYTES];
        assert_eq!(read(&longest).map(|p| p.len()), Ok(MAX_PASSWORD_BYTES));
        let too_long = vec![b'p'; MAX_PASSWORD_BYTES + 1];
        assert!(read(&too_long).unwrap_err().contains("longer than"));
        let mut crlf = longest.clone();
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(read(&crlf).map(|p| p.len()), Ok(MAX_PASSWORD_BYTES));
    }

    #[test]
    fn account_commands_never_create_a_database() {
        let dir = std::env::temp_dir().join(format!("hearth-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let error = require_database(&config).unwrap_err();
        let database = dir.join(crate::store::DB_FILE_NAME);
        assert!(
            error.starts_with(&format!("no database at {} ", database.display())),
            "{error}"
        );
        assert!(error.contains("--config"), "{error}");
        assert!(!dir.exists());
        // An empty data dir (say, a mistyped one made by hand) holds no database either.
        std::fs::create_dir(&dir).unwrap();
        assert!(require_database(&config).is_err());
        let store = open_store(&dir).unwrap();
        store.close();
        assert_eq!(require_database(&config), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
