//! How a guest command ended.

use ec1_proto::Termination;

/// The end of a command: an exit code or a signal, and whether the agent killed it
/// for running past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    how: Termination,
    timed_out: bool,
}

impl ExitStatus {
    pub(crate) fn new(how: Termination, timed_out: bool) -> ExitStatus {
        ExitStatus { how, timed_out }
    }

    /// Exited with status 0 (and was not killed for a timeout).
    pub fn success(&self) -> bool {
        self.how == Termination::Code(0) && !self.timed_out
    }

    /// The exit status, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self.how {
            Termination::Code(c) => Some(c),
            Termination::Signal { .. } => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.how {
            Termination::Signal { signal, .. } => Some(signal),
            Termination::Code(_) => None,
        }
    }

    /// Whether it dumped core.
    pub fn core_dumped(&self) -> bool {
        matches!(
            self.how,
            Termination::Signal {
                core_dumped: true,
                ..
            }
        )
    }

    /// Whether the agent killed it because its timeout passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The status a shell would report: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match self.how {
            Termination::Code(c) => c,
            Termination::Signal { signal, .. } => 128 + signal,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.how {
            Termination::Code(c) => write!(f, "exit status {c}")?,
            Termination::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal}")?;
                if core_dumped {
                    write!(f, " (core dumped)")?;
                }
            }
        }
        if self.timed_out {
            write!(f, " after its timeout")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_a_shell() {
        let ok = ExitStatus::new(Termination::Code(0), false);
        assert!(ok.success());
        assert_eq!(ok.code(), Some(0));
        assert_eq!(ok.signal(), None);
        assert_eq!(ok.to_string(), "exit status 0");
        let k = ExitStatus::new(
            Termination::Signal {
                signal: 9,
                core_dumped: true,
            },
            true,
        );
        assert!(!k.success());
        assert_eq!(k.code(), None);
        assert_eq!(k.signal(), Some(9));
        assert!(k.core_dumped() && k.timed_out());
        assert_eq!(k.shell_code(), 137);
        assert_eq!(
            k.to_string(),
            "killed by signal 9 (core dumped) after its timeout"
        );
        assert_eq!(ExitStatus::new(Termination::Code(3), false).shell_code(), 3);
        assert!(!ExitStatus::new(Termination::Code(0), true).success());
    }
}
