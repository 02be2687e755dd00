//! Giving up root: the jailer's `--uid/--gid`, and `ec1 run --user NAME`.

use std::ffi::{CStr, CString};

/// A system call's result as an `io::Result`.
pub(crate) fn cvt(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes this process `uid`/`gid` for good: no supplementary groups, real, effective
/// and saved ids all changed, and `no_new_privs` so that nothing it runs gains
/// privileges back. Call before any thread starts.
pub(crate) fn drop_to(uid: u32, gid: u32) -> Result<(), String> {
    let err = |what: String| move |e: std::io::Error| format!("{what}: {e}");
    // SAFETY: these change only this process's credentials.
    unsafe {
        cvt(libc::setgroups(0, std::ptr::null())).map_err(err("dropping groups".into()))?;
        cvt(libc::setresgid(gid, gid, gid)).map_err(err(format!("becoming gid {gid}")))?;
        cvt(libc::setresuid(uid, uid, uid)).map_err(err(format!("becoming uid {uid}")))?;
        cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            .map_err(err("setting no_new_privs".into()))?;
    }
    Ok(())
}

/// A user of the host, from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

/// Looks `name` up in the password database.
pub(crate) fn lookup(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("user {name:?} contains a NUL byte"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is valid for getpwnam_r to overwrite.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`'s
    // strings below.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(format!("no user {name:?} on this host"));
    }
    // SAFETY: getpwnam_r succeeded: pw_dir points to a NUL-terminated string in `buf`.
    let home = unsafe { CStr::from_ptr(pw.pw_dir) };
    Ok(User {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home: std::path::PathBuf::from(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(home.to_bytes()),
        ),
    })
}

/// `ec1 run --user NAME` as root: this process (and so the engine it starts) becomes
/// NAME before it does anything else, with NAME's cache (its home's, unless
/// `XDG_CACHE_HOME` names one). Refused without root, and for root itself.
pub(crate) fn become_user(name: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "--user {name} needs root; without it, ec1 run and its engine already run as you"
        ));
    }
    let user = lookup(name)?;
    if user.uid == 0 {
        return Err(format!(
            "--user {name} is root; name an unprivileged user for the engine"
        ));
    }
    drop_to(user.uid, user.gid)?;
    if std::env::var_os("XDG_CACHE_HOME").is_none() {
        // Single-threaded still (run before anything starts a thread).
        std::env::set_var("HOME", &user.home);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_and_root_or_strangers_refused() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(lookup("no-such-user-ec1").unwrap_err().contains("no user"));
        assert!(lookup("a\0b").unwrap_err().contains("NUL"));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(become_user("root").unwrap_err().contains("is root"));
        } else {
            assert!(become_user("nobody").unwrap_err().contains("needs root"));
        }
    }
}
