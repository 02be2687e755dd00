//! The kernel config fragment: parsing it and checking that every line survived
//! `olddefconfig` (an option whose dependencies are unmet vanishes silently).

/// One line of a fragment: an option set to a value, or explicitly unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentLine {
    /// `CONFIG_X=value`
    Set { name: String, value: String },
    /// `# CONFIG_X is not set`
    Unset { name: String },
}

/// Parses a fragment; comments other than `# CONFIG_X is not set` and blank lines are
/// ignored.
pub fn parse(text: &str) -> Vec<FragmentLine> {
    text.lines()
        .filter_map(|raw| {
            let line = raw.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.strip_suffix(" is not set")?;
                return name.starts_with("CONFIG_").then(|| FragmentLine::Unset {
                    name: name.to_string(),
                });
            }
            let (name, value) = line.split_once('=')?;
            name.starts_with("CONFIG_").then(|| FragmentLine::Set {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

/// Returns the fragment lines that the final `.config` does not honour, each as a
/// sentence a user can act on.
pub fn missing(fragment: &[FragmentLine], final_config: &str) -> Vec<String> {
    let finals = parse(final_config);
    let value_of = |name: &str| {
        finals.iter().find_map(|l| match l {
            FragmentLine::Set { name: n, value } if n == name => Some(value.as_str()),
            _ => None,
        })
    };
    fragment
        .iter()
        .filter_map(|line| match line {
            FragmentLine::Set { name, value } => match value_of(name) {
                Some(v) if v == value => None,
                Some(v) => Some(format!("{name}={value} became {name}={v}")),
                None => Some(format!(
                    "{name}={value} was dropped (its dependencies are not met)"
                )),
            },
            FragmentLine::Unset { name } => match value_of(name) {
                None | Some("n") => None,
                Some(v) => Some(format!("{name} should be unset but is {v}")),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_unset_and_ignores_comments() {
        let f = parse(
            "# a comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_N=32\nFOO=1\n# not CONFIG\n",
        );
        assert_eq!(
            f,
            vec![
                FragmentLine::Set {
                    name: "CONFIG_A".into(),
                    value: "y".into()
                },
                FragmentLine::Unset {
                    name: "CONFIG_B".into()
                },
                FragmentLine::Set {
                    name: "CONFIG_N".into(),
                    value: "32".into()
                },
            ]
        );
    }

    #[test]
    fn reports_dropped_changed_and_wrongly_set_options() {
        let f = parse(
            "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=8\n# CONFIG_D is not set\n# CONFIG_E is not set\n",
        );
        let fin = "CONFIG_A=y\nCONFIG_C=16\nCONFIG_D=y\n# CONFIG_E is not set\n";
        let m = missing(&f, fin);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("CONFIG_B=y was dropped"));
        assert!(m[1].contains("CONFIG_C=8 became CONFIG_C=16"));
        assert!(m[2].contains("CONFIG_D should be unset"));
    }

    #[test]
    fn the_shipped_fragment_parses() {
        let f = parse(super::super::FRAGMENT);
        assert!(f.len() > 50);
        assert!(f.contains(&FragmentLine::Set {
            name: "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES".into(),
            value: "y".into()
        }));
        // ACPI is per architecture: x86_64's machine with more devices needs it,
        // arm64's device tree does not.
        let x86 = parse(super::super::FRAGMENT_X86_64);
        assert!(x86.contains(&FragmentLine::Set {
            name: "CONFIG_ACPI".into(),
            value: "y".into()
        }));
        let arm = parse(super::super::FRAGMENT_AARCH64);
        assert!(arm.contains(&FragmentLine::Unset {
            name: "CONFIG_ACPI".into()
        }));
    }
}
