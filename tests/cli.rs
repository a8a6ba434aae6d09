//! The command line as a new user meets it: account commands run from the wrong place, and
//! `hearth check` judging the files `serve` would load.

mod common;

use common::*;
use std::path::Path;
use std::process::{Output, Stdio};

/// Runs `hearth ARGS` in `cwd` with `stdin` as its input.
fn hearth_in(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = hearth_command()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn account_commands_in_an_empty_directory_create_nothing() {
    let cwd = temp_dir("cwd");
    // The path the process sees as its working directory (the temp dir may be a symlink).
    let database = cwd.canonicalize().unwrap().join("hearth-data/hearth.redb");
    for args in [
        &["adduser", "alice@localhost", "--password-stdin"][..],
        &["passwd", "alice@localhost", "--password-stdin"],
        &["deluser", "alice@localhost"],
        &["users"],
    ] {
        let out = hearth_in(&cwd, args, "s3cret\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let expected = format!(
            "hearth: {}: no database at {} ",
            args[0],
            database.display()
        );
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert!(stderr.contains("--config FILE"), "{stderr}");
        assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "{args:?}");
    }
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn the_server_logs_its_absolute_data_directory() {
    let server = TestServer::start("");
    let line = server.log();
    let line = line
        .lines()
        .find(|line| line.contains("data directory "))
        .expect("a data directory line");
    let logged = line.split("data directory ").nth(1).unwrap();
    assert!(Path::new(logged).is_absolute(), "{line}");
    assert_eq!(Path::new(logged), server.data_dir());
}

/// Runs `hearth check` on a config of `text`.
fn check(dir: &Path, text: &str) -> Output {
    let config = dir.join("hearth.toml");
    std::fs::write(&config, text).unwrap();
    hearth_in(dir, &["check", "--config", config.to_str().unwrap()], "")
}

/// A self-signed certificate and key made by hearth in `dir/tls/`.
fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    hearth::tls::load(None, None, dir, "localhost", &[]).unwrap();
    (dir.join("tls/cert.pem"), dir.join("tls/key.pem"))
}

#[test]
fn check_loads_the_certificate_and_key_as_serve_would() {
    let dir = temp_dir("check-tls");
    let (cert, key) = pair(&dir.join("a"));
    let (_, other_key) = pair(&dir.join("b"));
    let tls = |cert: &Path, key: &Path| {
        format!(
            "data_dir = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("data").display(),
            cert.display(),
            key.display()
        )
    };
    let out = check(&dir, &tls(&cert, &key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = dir.join("missing.pem");
    let out = check(&dir, &tls(&missing, &key));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("hearth: check: "), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = check(&dir, &tls(&cert, &other_key));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(
        stderr.contains(&other_key.display().to_string()),
        "{stderr}"
    );

    // No files configured and none generated yet: serve would make them; check makes nothing.
    let out = check(
        &dir,
        &format!("data_dir = \"{}\"\n", dir.join("data").display()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("data").exists());
    // The self-signed pair, once there, is loaded too: a damaged one fails the check.
    std::fs::create_dir_all(dir.join("data/tls")).unwrap();
    std::fs::copy(&cert, dir.join("data/tls/cert.pem")).unwrap();
    std::fs::copy(&other_key, dir.join("data/tls/key.pem")).unwrap();
    let out = check(
        &dir,
        &format!("data_dir = \"{}\"\n", dir.join("data").display()),
    );
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `(section, key, value)` of every `# key = "value"  (derived…)` comment in `toml`.
fn derived_values(toml: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in toml.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some(comment) = line.strip_prefix("# ") {
            let Some((assignment, _)) = comment.split_once("  (derived") else {
                continue;
            };
            // The assignment is TOML itself: parse it rather than cut strings.
            let table: toml::Table = assignment.parse().unwrap();
            for (key, value) in table {
                let value = value.as_str().unwrap().to_owned();
                found.push((section.clone(), key, value));
            }
        }
    }
    found
}

#[test]
fn check_shows_derived_values_as_comments_and_stays_a_config_file() {
    let dir = temp_dir("check-derived");
    let data = dir.join("data");
    let text = format!(
        "domain = \"example.lan\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    let out = check(&dir, &text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let derived = derived_values(&printed);
    let expected = [
        ("muc", "domain", "rooms.example.lan".to_owned()),
        ("upload", "url", "https://example.lan:5281".to_owned()),
        ("upload", "dir", data.join("upload").display().to_string()),
        ("proxy", "host", "example.lan".to_owned()),
        ("stun", "host", "example.lan".to_owned()),
    ];
    let expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(section, key, value)| (section.into(), key.into(), value))
        .collect();
    assert_eq!(derived, expected, "{printed}");

    // The output is a config file, and the same one again when checked.
    let out = check(&dir, &printed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);

    // A value that is set is printed as a key, not as a derived comment.
    let set = format!("{text}[muc]\ndomain = \"chat.example.lan\"\n[stun]\nhost = \"10.0.0.2\"\n");
    let printed = String::from_utf8(check(&dir, &set).stdout).unwrap();
    let table: toml::Table = printed.parse().unwrap();
    assert_eq!(table["muc"]["domain"].as_str(), Some("chat.example.lan"));
    assert_eq!(table["stun"]["host"].as_str(), Some("10.0.0.2"));
    let derived = derived_values(&printed);
    assert!(
        !derived.iter().any(|(s, _, _)| s == "muc" || s == "stun"),
        "{derived:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
