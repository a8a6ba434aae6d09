//! SIGHUP reload: owns reading the config file and the TLS certificate again, deciding
//! which changes take effect now and which wait for a restart, and handing the result to
//! [`Server::replace_config`]. A reload has one outcome: all of it or none of it.
//!
//! It must never stop the server or end a session: a file that does not load, or a
//! certificate and key that do not (missing, unreadable, not a pair), is one error line
//! and the old settings and certificate stay in effect. It never binds or opens anything —
//! settings tied to sockets, directories or service domains keep their start-up values;
//! the one thing it may create is the self-signed certificate, when its files are gone.

use crate::config::{self, Config};
use crate::server::Server;
use crate::tls;
use log::{error, info, warn};
use std::path::Path;

/// Reads `path` (or the embedded defaults when the server started without a file) and the
/// certificate it names, validates both as start-up does and applies what can change live.
pub fn reload(server: &Server, path: Option<&Path>) {
    let source = path.map_or("the built-in defaults".into(), |p| p.display().to_string());
    let old = server.config();
    let loaded = config::load(path).and_then(|wanted| {
        let mut effective = wanted.clone();
        keep_restart_only(&old, &mut effective);
        let material = tls::load_for(&effective)?;
        Ok((wanted, effective, material))
    });
    let (wanted, effective, material) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("config reload failed, keeping the old settings: {e}");
            return;
        }
    };
    for key in changed_keys(&effective, &wanted) {
        warn!("config reload: {key} changed; restart to apply (the old value stays in effect)");
    }
    let applied = changed_keys(&old, &effective);
    if applied.is_empty() {
        info!("config reloaded from {source}: no setting changed");
    } else {
        info!(
            "config reloaded from {source}: {} now in effect",
            applied.join(", ")
        );
    }
    tls::log_fingerprints(&material);
    if effective.s2s.enabled {
        crate::s2s::federation(server).set_identity(&material.identity);
    }
    server.replace_config(effective, material.config);
}

/// Puts back what only a restart can change: the domain and the data directory, the
/// listening sockets, and whether a service with its own domain or port runs at all (and
/// where it lives). Everything else — limits, rates, timeouts, registration, roster, MUC,
/// PEP, SM, MAM and upload quotas, TLS file paths — is read by handlers as they run.
fn keep_restart_only(old: &Config, new: &mut Config) {
    new.domain.clone_from(&old.domain);
    new.data_dir.clone_from(&old.data_dir);
    new.listen.clone_from(&old.listen);
    new.muc.enabled = old.muc.enabled;
    new.muc.domain.clone_from(&old.muc.domain);
    new.upload.enabled = old.upload.enabled;
    new.upload.listen.clone_from(&old.upload.listen);
    // The slot URL base, the proxy's advertised host and the files' directory are set once
    // when the listeners start.
    new.upload.url.clone_from(&old.upload.url);
    new.upload.dir.clone_from(&old.upload.dir);
    new.proxy.enabled = old.proxy.enabled;
    new.proxy.listen.clone_from(&old.proxy.listen);
    new.proxy.host.clone_from(&old.proxy.host);
    new.stun.enabled = old.stun.enabled;
    new.stun.listen.clone_from(&old.stun.listen);
    // Federation's listeners; its routes, pins, lists and limits change live.
    new.s2s.enabled = old.s2s.enabled;
    new.s2s.listen.clone_from(&old.s2s.listen);
    // The component port, bound at start only when a component was configured; the
    // components themselves (domains, secrets, rates) change live while it is.
    new.component.listen.clone_from(&old.component.listen);
    if old.components.is_empty() {
        new.components.clear();
    }
}

/// Dotted keys (`limits.max_stanza_bytes`) whose values differ, in file order. Compares
/// the [`Config::to_toml`] renderings, which name every setting, so a key added to the
/// config is covered without a change here.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (old, new) = (settings(&old.to_toml()), settings(&new.to_toml()));
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(key, value)| new.iter().find(|(k, _)| k == key).map(|(_, v)| v) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    // Optional keys only the new file sets.
    keys.extend(
        new.iter()
            .filter(|(key, _)| !old.iter().any(|(k, _)| k == key))
            .map(|(key, _)| key.clone()),
    );
    keys
}

/// `(section.key, value)` for each assignment of a rendered config.
fn settings(toml: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in toml.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some((key, value)) = line.split_once(" = ") {
            if !line.starts_with('#') {
                let key = match section {
                    "" => key.to_owned(),
                    _ => format!("{section}.{key}"),
                };
                out.push((key, value.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_old_values() {
        let old = Config::default();
        let mut new = Config {
            domain: "example.org".into(),
            ..Config::default()
        };
        new.listen.starttls = vec!["127.0.0.1:6222".parse().unwrap()];
        new.upload.enabled = false;
        new.muc.domain = Some("chat.example.org".into());
        new.rate.stanzas_per_sec = 7;
        new.registration.per_ip_per_hour = 1;
        let wanted = new.clone();
        keep_restart_only(&old, &mut new);
        assert_eq!(
            changed_keys(&new, &wanted),
            // muc.domain is unset in the old settings: new keys come last.
            ["domain", "listen.starttls", "upload.enabled", "muc.domain"]
        );
        assert_eq!(
            changed_keys(&old, &new),
            ["rate.stanzas_per_sec", "registration.per_ip_per_hour"]
        );
    }

    #[test]
    fn every_live_setting_survives_keep_restart_only() {
        // A config differing from the defaults in every live key loses none of them.
        let text = "[limits]\nmax_stanza_bytes = 5000\n[keepalive]\nidle_secs = 9\n\
                    [roster]\nmax_items = 3\n[muc]\ncreators = \"admins\"\n[pep]\nmax_nodes = 2\n\
                    [sm]\nmax_unacked = 4\n[mam]\nretention_days = 1\n[upload]\nexpire_days = 2\n\
                    [proxy]\nmax_relays = 1\n[tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\n";
        let path = std::env::temp_dir().join(format!("hearth-reload-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let wanted = config::load(Some(&path)).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut effective = wanted.clone();
        keep_restart_only(&Config::default(), &mut effective);
        assert_eq!(effective, wanted);
        assert_eq!(changed_keys(&Config::default(), &effective).len(), 11);
    }

    #[test]
    fn components_change_live_only_once_their_port_is_bound() {
        let path =
            std::env::temp_dir().join(format!("hearth-reload-c-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[component]\nlisten = [\"127.0.0.1:6000\"]\n\
             [[components]]\ndomain = \"irc.localhost\"\nsecret = \"s\"\n",
        )
        .unwrap();
        let wanted = config::load(Some(&path)).unwrap();
        let _ = std::fs::remove_file(&path);
        // No component at start: no port was bound, so the new one waits for a restart.
        let mut effective = wanted.clone();
        keep_restart_only(&Config::default(), &mut effective);
        assert!(effective.components.is_empty());
        assert_eq!(
            effective.component.listen,
            Config::default().component.listen
        );
        // With one at start, the list (domains, secrets, rates) follows the file.
        let mut old = wanted.clone();
        old.components[0].stanzas_per_sec = 1;
        let mut effective = wanted.clone();
        keep_restart_only(&old, &mut effective);
        assert_eq!(effective, wanted);
    }

    #[test]
    fn optional_keys_set_or_cleared_are_changes() {
        let old = Config::default();
        let mut new = Config::default();
        new.proxy.host = Some("xmpp.example.org".into());
        assert_eq!(changed_keys(&old, &new), ["proxy.host"]);
        assert_eq!(changed_keys(&new, &old), ["proxy.host"]);
        assert!(changed_keys(&old, &old).is_empty());
    }
}
