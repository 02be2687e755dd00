//! Editing the guest kernel's command line.
//!
//! The engine adds parameters its own devices need (`virtio_mmio.device=`, the TSC
//! settings under TCG). They must go before a standalone `--`: Linux hands everything
//! after it to `/init` as arguments. (QEMU's own `microvm` cmdline editing appends at the
//! very end, after any `--`, which is why the engine does this itself.)

/// Linux's x86 `COMMAND_LINE_SIZE`, including the terminating NUL.
pub(crate) const MAX_CMDLINE: usize = 2048;

/// Byte ranges of the parameters of `cmdline`, split the way Linux's `next_arg` does:
/// on whitespace, except inside double quotes.
fn tokens(cmdline: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut in_quote = false;
    for (i, c) in cmdline.char_indices() {
        if c == '"' {
            in_quote = !in_quote;
        }
        if c.is_ascii_whitespace() && !in_quote {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, cmdline.len()));
    }
    out
}

/// The byte offset where the init arguments' `--` starts, if there is one.
fn init_separator(cmdline: &str) -> Option<usize> {
    tokens(cmdline)
        .into_iter()
        .find(|&(s, e)| &cmdline[s..e] == "--")
        .map(|(s, _)| s)
}

/// Whether the kernel part of `cmdline` (before any `--`) sets parameter `name`
/// (as `name` or `name=...`).
pub(crate) fn sets_param(cmdline: &str, name: &str) -> bool {
    let end = init_separator(cmdline).unwrap_or(cmdline.len());
    tokens(&cmdline[..end]).into_iter().any(|(s, e)| {
        let t = &cmdline[s..e];
        t == name || t.strip_prefix(name).is_some_and(|r| r.starts_with('='))
    })
}

/// `cmdline` with every kernel parameter (before any `--`) equal to `from` written as
/// `to` instead.
pub(crate) fn replace_param(cmdline: &str, from: &str, to: &str) -> String {
    let end = init_separator(cmdline).unwrap_or(cmdline.len());
    let mut out = String::with_capacity(cmdline.len() + to.len());
    let mut last = 0;
    for (s, e) in tokens(&cmdline[..end]) {
        if &cmdline[s..e] == from {
            out.push_str(&cmdline[last..s]);
            out.push_str(to);
            last = e;
        }
    }
    out.push_str(&cmdline[last..]);
    out
}

/// `cmdline` with `params` added at the end of the kernel parameters, before any `--`.
pub(crate) fn add_kernel_params(cmdline: &str, params: &[String]) -> String {
    if params.is_empty() {
        return cmdline.to_string();
    }
    let extra = params.join(" ");
    match init_separator(cmdline) {
        Some(at) => {
            let head = cmdline[..at].trim_end();
            let tail = &cmdline[at..];
            if head.is_empty() {
                format!("{extra} {tail}")
            } else {
                format!("{head} {extra} {tail}")
            }
        }
        None => {
            let head = cmdline.trim_end();
            if head.is_empty() {
                extra
            } else {
                format!("{head} {extra}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_a_parameter_leaves_the_init_arguments() {
        assert_eq!(
            replace_param(
                "console=ttyS0 quiet -- console=ttyS0",
                "console=ttyS0",
                "console=ttyAMA0"
            ),
            "console=ttyAMA0 quiet -- console=ttyS0"
        );
        assert_eq!(
            replace_param("a console=ttyS0,115200 b", "console=ttyS0", "x"),
            "a console=ttyS0,115200 b"
        );
        assert_eq!(replace_param("", "a", "b"), "");
    }

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn appends_at_the_end_without_init_args() {
        assert_eq!(
            add_kernel_params("console=ttyS0 quiet", &p(&["a=1", "b"])),
            "console=ttyS0 quiet a=1 b"
        );
        assert_eq!(add_kernel_params("", &p(&["a=1"])), "a=1");
        assert_eq!(add_kernel_params("  x  ", &p(&["a=1"])), "  x a=1");
        assert_eq!(add_kernel_params("x", &[]), "x");
    }

    #[test]
    fn inserts_before_init_args() {
        assert_eq!(
            add_kernel_params("console=ttyS0 -- loop -- x", &p(&["a=1"])),
            "console=ttyS0 a=1 -- loop -- x"
        );
        assert_eq!(add_kernel_params("-- loop", &p(&["a=1"])), "a=1 -- loop");
        // `--x` and a quoted ` -- ` are not the separator.
        assert_eq!(
            add_kernel_params("--x y=\"a -- b\"", &p(&["a=1"])),
            "--x y=\"a -- b\" a=1"
        );
    }

    #[test]
    fn finds_parameters_only_before_the_separator() {
        assert!(sets_param("console=ttyS0 tsc=unstable", "tsc"));
        assert!(sets_param("tsc", "tsc"));
        assert!(!sets_param("tsc_early_khz=1 notsc", "tsc"));
        assert!(!sets_param("quiet -- tsc=reliable", "tsc"));
        assert!(!sets_param("x=\"tsc=1\"", "tsc"));
        assert!(sets_param("\ttsc=reliable\n", "tsc"));
    }

    #[test]
    fn tokens_respect_quotes_and_unicode() {
        let c = "a=\"x y\" é  b";
        let t: Vec<&str> = tokens(c).into_iter().map(|(s, e)| &c[s..e]).collect();
        assert_eq!(t, ["a=\"x y\"", "é", "b"]);
    }
}
