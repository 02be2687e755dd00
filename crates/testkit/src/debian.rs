//! A real distribution for the integration tests: a small Debian 12 root image
//! (`debootstrap --variant=minbase` with `systemd-sysv`, so that hand-off mode boots
//! systemd as PID 1), built once and cached under ec1's cache directory (`images/`)
//! like the default kernel. Tests that write to it work on a copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The suite, variant and extra packages: a change makes a new image.
const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "systemd-sysv";
/// The image's size (sparse: the tree takes about 230 MB of it).
const SIZE: &str = "1G";
/// Bumped when the recipe below changes.
const RECIPE: u32 = 1;

/// The URI of the Debian archive this machine's apt sources use for `suite` (deb822
/// `.sources` files first, then one-line `.list` entries): no package host is named
/// in the repository.
pub fn debian_mirror(suite: &str) -> Option<String> {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            texts.extend(files.into_iter().filter_map(|f| {
                let text = std::fs::read_to_string(&f).ok()?;
                Some((f.extension().is_some_and(|e| e == "sources"), text))
            }));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, text));
    }
    mirror_in(&texts, suite)
}

/// [`debian_mirror`] over `(is_deb822, text)` pairs.
fn mirror_in(texts: &[(bool, String)], suite: &str) -> Option<String> {
    let deb822 = texts.iter().filter(|(d, _)| *d).flat_map(|(_, t)| {
        t.split("\n\n").filter_map(move |stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            let suites = field("Suites")?;
            suites
                .split_whitespace()
                .any(|s| s == suite)
                .then(|| field("URIs")?.split_whitespace().next().map(String::from))?
        })
    });
    let one_line = texts.iter().filter(|(d, _)| !*d).flat_map(|(_, t)| {
        t.lines().filter_map(move |l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.first() != Some(&"deb") || !words.contains(&suite) {
                return None;
            }
            words
                .iter()
                .find(|w| w.contains("://"))
                .map(|w| w.to_string())
        })
    });
    deb822.chain(one_line).next()
}

/// The cached Debian image, built first if needed (a few minutes, once per machine).
/// Panics saying what is missing: a test that needs it must fail, not skip.
pub fn debian_image() -> PathBuf {
    let cache = ec1_guest::kernel::cache_root()
        .expect("no cache directory: set HOME")
        .join("images");
    let key: String = Sha256::digest(format!("{RECIPE} {SUITE} {VARIANT} {INCLUDE} {SIZE}"))[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let img = cache.join(format!("debian-{SUITE}-{key}.ext4"));
    if img.is_file() {
        return img;
    }
    std::fs::create_dir_all(&cache).expect("creating the image cache");
    let _lock = ec1_guest::lock::FileLock::exclusive(&cache.join(".debian.lock"))
        .expect("locking the image cache");
    if img.is_file() {
        return img; // another test process built it while we waited
    }
    let mirror = debian_mirror(SUITE).unwrap_or_else(|| {
        panic!("no Debian {SUITE} source in /etc/apt: the Debian test image is built from it")
    });
    let tree = cache.join(format!(".tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    let t0 = std::time::Instant::now();
    let out = Command::new("debootstrap")
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(&tree)
        .arg(&mirror)
        .output()
        .expect("this test needs debootstrap: apt-get install debootstrap");
    assert!(
        out.status.success(),
        "debootstrap {SUITE} from {mirror}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(tree.join("etc/hostname"), "debian\n").unwrap();
    let partial = img.with_extension("partial");
    crate::ext4_image(&tree, &partial, SIZE);
    std::fs::rename(&partial, &img).expect("moving the Debian image into place");
    let _ = std::fs::remove_dir_all(&tree);
    eprintln!(
        "built the Debian test image {} in {:.0} s",
        img.display(),
        t0.elapsed().as_secs_f64()
    );
    img
}

/// A private copy of `img` at `to`, sparse (or a reflink where the filesystem can).
pub fn copy_image(img: &Path, to: &Path) {
    let out = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(img)
        .arg(to)
        .output()
        .expect("cp");
    assert!(
        out.status.success(),
        "cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_either_source_format() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in(&[(true, deb822.into())], "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in(&[(true, deb822.into())], "bookworm-security").as_deref(),
            Some("http://security.example/debian-security")
        );
        let list = "# comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(&[(false, list.into())], "bookworm").as_deref(),
            Some("http://old.example/debian")
        );
        assert_eq!(mirror_in(&[(false, list.into())], "trixie"), None);
        assert!(debian_mirror(SUITE).is_some(), "this machine's sources");
    }
}
