//! The guest kernel's command line as a type: kernel parameters, then (after a
//! standalone `--`) the init's arguments.
//!
//! Every layer adds to it — the user's `boot_args`, the API (`pci=off`), the sandbox
//! (its root mode), the engine (what its machine needs: `virtio_mmio.device=`, the TSC
//! settings under TCG, the console's name) — and reads it (`i8042.noaux` frees a
//! transport) through these methods, split the way Linux splits it, instead of each
//! appending to and searching a string. Additions go before a standalone `--`: Linux
//! hands everything after it to `/init` as arguments. The text is kept as given where
//! nothing was changed, so what the user wrote is what the guest gets.

/// Linux's `COMMAND_LINE_SIZE` on x86 (arm64's is the same), including the terminating
/// NUL.
pub const MAX_CMDLINE: usize = 2048;

/// A kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Cmdline(String);

impl Cmdline {
    /// The command line `text`, as given.
    pub fn new(text: impl Into<String>) -> Cmdline {
        Cmdline(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (without the terminating NUL).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// Whether the kernel parameters (before any `--`) set `name`, as `name` or
    /// `name=...`.
    pub fn has(&self, name: &str) -> bool {
        sets_param(&self.0, name)
    }

    /// Adds kernel parameters at the end of the kernel's part (before any `--`).
    pub fn push_params<S: AsRef<str>>(&mut self, params: &[S]) {
        let params: Vec<String> = params.iter().map(|p| p.as_ref().to_string()).collect();
        self.0 = add_kernel_params(&self.0, &params);
    }

    /// Adds one kernel parameter (see [`Cmdline::push_params`]).
    pub fn push(&mut self, param: &str) {
        self.push_params(&[param]);
    }

    /// This command line with `params` added (see [`Cmdline::push_params`]).
    pub fn with_params<S: AsRef<str>>(&self, params: &[S]) -> Cmdline {
        let mut c = self.clone();
        c.push_params(params);
        c
    }

    /// This command line with every kernel parameter equal to `from` written `to`.
    pub fn replacing(&self, from: &str, to: &str) -> Cmdline {
        Cmdline(replace_param(&self.0, from, to))
    }
}

impl std::fmt::Display for Cmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Cmdline {
    fn from(s: &str) -> Cmdline {
        Cmdline::new(s)
    }
}

impl From<String> for Cmdline {
    fn from(s: String) -> Cmdline {
        Cmdline(s)
    }
}

impl PartialEq<str> for Cmdline {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Cmdline {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Cmdline {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

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
fn sets_param(cmdline: &str, name: &str) -> bool {
    let end = init_separator(cmdline).unwrap_or(cmdline.len());
    tokens(&cmdline[..end]).into_iter().any(|(s, e)| {
        let t = &cmdline[s..e];
        t == name || t.strip_prefix(name).is_some_and(|r| r.starts_with('='))
    })
}

/// `cmdline` with every kernel parameter (before any `--`) equal to `from` written as
/// `to` instead.
fn replace_param(cmdline: &str, from: &str, to: &str) -> String {
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
fn add_kernel_params(cmdline: &str, params: &[String]) -> String {
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
    fn the_type_edits_through_the_same_rules() {
        let mut c = Cmdline::from("console=ttyS0 quiet -- init-arg");
        assert!(c.has("quiet") && !c.has("init-arg") && !c.is_empty());
        c.push("pci=off");
        assert_eq!(c, "console=ttyS0 quiet pci=off -- init-arg");
        let arm = c.replacing("console=ttyS0", "console=ttyAMA0");
        assert_eq!(arm.as_str(), "console=ttyAMA0 quiet pci=off -- init-arg");
        assert_eq!(
            c.with_params(&["a=1", "b"]).to_string(),
            "console=ttyS0 quiet pci=off a=1 b -- init-arg"
        );
        assert_eq!(c.len(), c.as_str().len());
        assert!(Cmdline::default().is_empty() && Cmdline::from("  ").is_empty());
        assert_eq!(Cmdline::from(String::from("x")), String::from("x"));
    }

    #[test]
    fn tokens_respect_quotes_and_unicode() {
        let c = "a=\"x y\" é  b";
        let t: Vec<&str> = tokens(c).into_iter().map(|(s, e)| &c[s..e]).collect();
        assert_eq!(t, ["a=\"x y\"", "é", "b"]);
    }
}
