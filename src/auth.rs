//! The daemon's side of authentication: the file the server secret lives
//! in. The token format, its checks and UDP keys are `heartline_proto::auth`,
//! re-exported here for the daemon's modules and tools.
//!
//! Owns reading, creating and permission-checking the secret file. It must
//! not print or log the file's contents.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub use heartline_proto::auth::*;

const LEN: usize = SECRET_LEN;

/// Reads the secret at `path`, or creates the file with a fresh random
/// secret if there is none.
///
/// On disk: 64 hex digits and an optional newline, in a file only its owner
/// may access.
pub fn load_or_create_secret(path: &Path) -> io::Result<Secret> {
    match load_secret(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        loaded => loaded,
    }
}

/// Reads an existing secret file (a rotation's previous secret must not
/// be made up).
pub fn load_secret(path: &Path) -> io::Result<Secret> {
    let file = File::open(path)?;
    // Checked on the open file, so the file read is the file checked.
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let message = format!(
            "secret file {} has mode {mode:03o}, so others may read it; restrict it with `chmod 600 {0}`",
            path.display()
        );
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
    }
    // One byte more than the longest valid content, so an overlong file is
    // refused without reading all of it.
    let mut text = Vec::with_capacity(2 * LEN + 2);
    file.take(2 * LEN as u64 + 2).read_to_end(&mut text)?;
    let digits = text.strip_suffix(b"\n").unwrap_or(&text);
    let mut bytes = [0; LEN];
    hex::decode_to_slice(digits, &mut bytes).map_err(|_| {
        let message =
            format!("secret file {} must hold exactly {} hex digits and an optional newline", path.display(), 2 * LEN);
        io::Error::new(io::ErrorKind::InvalidData, message)
    })?;
    Ok(Secret::from_bytes(bytes))
}

/// Writes a new secret to a private temporary file, then links it into
/// place: readers never see a partial file, and a link (unlike a rename)
/// never replaces a secret another process created meanwhile.
fn create(path: &Path) -> io::Result<Secret> {
    let mut secret = [0u8; LEN];
    getrandom::getrandom(&mut secret)?;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut suffix = [0; 8];
    getrandom::getrandom(&mut suffix)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));

    let linked =
        write_private(&tmp, format!("{}\n", hex::encode(secret)).as_bytes()).and_then(|()| fs::hard_link(&tmp, path));
    let removed = fs::remove_file(&tmp);
    match linked {
        // Another process created the file meanwhile; its secret wins.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        linked => linked?,
    }
    removed?;
    File::open(dir)?.sync_all()?;
    // Read back, so every process that raced here uses the winner's secret.
    load_secret(path)
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("heartline-auth-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn created_private_and_read_back_identically() {
        let dir = TempDir::new("create");
        let path = dir.0.join("secret");
        let created = load_or_create_secret(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let digits = fs::read_to_string(&path).unwrap();
        assert!(digits.len() == 2 * LEN + 1 && digits.ends_with('\n'), "{digits:?}");
        assert_eq!(load_or_create_secret(&path).unwrap().fingerprint(), created.fingerprint());
        assert_eq!(load_secret(&path).unwrap().fingerprint(), created.fingerprint());
        // The temporary file is gone.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = TempDir::new("mode");
        let path = dir.0.join("secret");
        write_with_mode(&path, format!("{}\n", "ab".repeat(LEN)).as_bytes(), 0o644);
        let err = load_or_create_secret(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_secret(&path).unwrap().fingerprint(), Secret::from_bytes([0xab; LEN]).fingerprint());
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused() {
        let dir = TempDir::new("format");
        let path = dir.0.join("secret");
        let digits = "0f".repeat(LEN);
        write_with_mode(&path, digits.as_bytes(), 0o600);
        assert_eq!(load_secret(&path).unwrap().fingerprint(), Secret::from_bytes([0x0f; LEN]).fingerprint());
        for bad in [
            String::new(),
            digits[2..].to_owned(),
            format!("{digits}00"),
            format!("{digits}\n\n"),
            format!("{digits} "),
            format!("zz{}", &digits[2..]),
            "\u{1}".repeat(LEN),
        ] {
            write_with_mode(&path, bad.as_bytes(), 0o600);
            let err = load_secret(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    #[test]
    fn load_does_not_create() {
        let dir = TempDir::new("missing");
        let err = load_secret(&dir.0.join("secret")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
