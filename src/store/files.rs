//! Owner-only files under the data dir: the process umask, the database file's mode, the
//! warning about a data dir others can read, and the server secret kept beside the
//! database. It never writes anything but the secret, and never loosens a mode.

use log::warn;
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The server secret's file in the data dir.
const SECRET_FILE: &str = "server-secret";
pub const SECRET_LEN: usize = 32;

/// Every file and directory this process creates from now on is owner-only, whatever
/// umask it was started with (the database, uploads, the TLS key, the control socket).
#[allow(unsafe_code)] // umask takes a plain integer, touches no memory and cannot fail
pub fn restrict_new_files() {
    // SAFETY: see above.
    unsafe {
        libc::umask(0o077);
    }
}

/// Warns when the data dir can be read by group or others: it holds credentials.
pub fn warn_if_readable(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        warn!(
            "data directory {} has mode {mode:o}: others on this machine may read it \
             (credentials, messages); `chmod 700` it",
            dir.display()
        );
    }
}

/// Makes an existing file owner-only (redb cannot be told a mode, and an older version of
/// the server may have created it under a loose umask).
pub fn make_private(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The server's long-term secret: read from the data dir, or created there once (0600).
/// Things derived from it (decoy salts) stay the same across restarts.
pub fn server_secret(dir: &Path) -> Result<[u8; SECRET_LEN], String> {
    let path = dir.join(SECRET_FILE);
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut secret = [0u8; SECRET_LEN];
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            file.read_exact(&mut secret).map_err(failed)?;
            make_private(&path).map_err(failed)?;
            return Ok(secret);
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        Err(_) => {}
    }
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| format!("{}: no system randomness", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_created_once_owner_only() {
        let dir = std::env::temp_dir().join(format!("hearth-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = server_secret(&dir).unwrap();
        assert_eq!(server_secret(&dir).unwrap(), first);
        let mode = std::fs::metadata(dir.join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
