//! The host's package manager and file locks, as the kernel build needs them.

use super::KernelError;
use std::path::Path;
use std::process::{Command, Stdio};

/// The installed version of the kernel source package, remembered in `cache` by the
/// identity of the tarball it installs (`dpkg-query` costs ~10 ms per boot; an
/// upgrade replaces the tarball, which changes its identity).
pub fn source_version(cache: &Path, package: &str, tarball: &Path) -> Option<String> {
    ec1_engine::remembered(
        &cache.join("kernel"),
        "source-version",
        tarball,
        |t| (!t.is_empty()).then(|| t.to_string()),
        || package_version(package).ok_or(()),
    )
    .ok()
}

/// The installed version of a Debian package, or `None` if it is not installed.
pub fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Version}", package])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_dpkg_status(&String::from_utf8_lossy(&out.stdout))
}

/// `installed 6.1.192-2` → `Some("6.1.192-2")`; anything else → `None`.
fn parse_dpkg_status(s: &str) -> Option<String> {
    let (status, version) = s.trim().split_once(' ')?;
    (status == "installed" && !version.is_empty()).then(|| version.to_string())
}

/// Installs whichever of `packages` are missing with apt-get (refreshing the package
/// lists once if apt cannot find them).
pub fn ensure_packages(
    packages: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<(), KernelError> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| package_version(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    progress(&format!("installing {list} with apt-get"));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let fail = |detail: String| KernelError::Install {
        packages: list.clone(),
        detail,
    };
    let first = install().map_err(|e| fail(e.to_string()))?;
    if first.status.success() {
        return Ok(());
    }
    progress("apt-get install failed; running apt-get update and retrying");
    let _ = Command::new("apt-get")
        .args(["update", "-q"])
        .stdin(Stdio::null())
        .output();
    let second = install().map_err(|e| fail(e.to_string()))?;
    if second.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&second.stderr);
        Err(fail(
            err.lines().last().unwrap_or("unknown error").to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_version_is_remembered_by_the_tarballs_identity() {
        let d = tempfile::tempdir().unwrap();
        let tarball = d.path().join("src.tar.xz");
        // Not installed and nothing remembered: no version, nothing cached.
        std::fs::write(&tarball, "v1").unwrap();
        assert_eq!(
            source_version(d.path(), "ec1-no-such-package", &tarball),
            None
        );
        assert!(!d.path().join("kernel").exists());
        // A remembered answer for this tarball is used without asking dpkg.
        let id = ec1_engine::file_identity(&tarball).unwrap();
        std::fs::create_dir_all(d.path().join("kernel")).unwrap();
        std::fs::write(
            ec1_engine::remembered_path(&d.path().join("kernel"), "source-version", &id),
            "9.9-1",
        )
        .unwrap();
        assert_eq!(
            source_version(d.path(), "ec1-no-such-package", &tarball).as_deref(),
            Some("9.9-1")
        );
        // A replaced tarball is another identity: asked again.
        std::fs::write(&tarball, "version two").unwrap();
        assert_eq!(
            source_version(d.path(), "ec1-no-such-package", &tarball),
            None
        );
        // An installed package's version is asked once and remembered.
        let dpkg = package_version("dpkg").expect("dpkg is installed on Debian");
        assert_eq!(
            source_version(d.path(), "dpkg", &tarball).as_deref(),
            Some(&*dpkg)
        );
        assert_eq!(
            std::fs::read_dir(d.path().join("kernel")).unwrap().count(),
            2
        );
        // No tarball at all: the package manager decides.
        assert_eq!(
            source_version(d.path(), "ec1-no-such-package", &d.path().join("gone")),
            None
        );
    }

    #[test]
    fn dpkg_status_parsing() {
        assert_eq!(
            parse_dpkg_status("installed 6.1.192-2\n"),
            Some("6.1.192-2".into())
        );
        assert_eq!(parse_dpkg_status("not-installed "), None);
        assert_eq!(parse_dpkg_status("config-files 1.0"), None);
        assert_eq!(parse_dpkg_status(""), None);
    }

    #[test]
    fn installed_and_missing_packages() {
        assert!(package_version("dpkg").is_some());
        assert!(package_version("ec1-no-such-package").is_none());
        let mut seen = Vec::new();
        ensure_packages(&["dpkg"], &mut |l| seen.push(l.to_string())).unwrap();
        assert!(seen.is_empty(), "nothing to install: {seen:?}");
    }
}
