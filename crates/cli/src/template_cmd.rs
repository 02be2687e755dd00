//! `ec1 template ls|rm|prune`: the boot templates `ec1 run` restores.

use crate::args::TemplateAction;
use ec1_sandbox::template::TemplateInfo;
use ec1_sandbox::TemplateCache;

pub fn run(action: &TemplateAction) -> i32 {
    match TemplateCache::default_location().and_then(|c| run_in(&c, action, &mut std::io::stdout()))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ec1 template: {e}");
            1
        }
    }
}

/// Runs `action` on `cache`, printing to `out`.
pub(crate) fn run_in(
    cache: &TemplateCache,
    action: &TemplateAction,
    out: &mut dyn std::io::Write,
) -> Result<(), ec1_sandbox::SandboxError> {
    let w = |e| ec1_sandbox::SandboxError::Io {
        context: "writing to stdout".into(),
        source: e,
    };
    match action {
        TemplateAction::Ls => {
            let all = cache.list()?;
            if all.is_empty() {
                writeln!(out, "no templates in {}", cache.root().display()).map_err(w)?;
            }
            for t in all {
                writeln!(out, "{}", line(&t)).map_err(w)?;
            }
        }
        TemplateAction::Rm { key } => {
            let key = cache.resolve(key)?;
            cache.remove(&key)?;
            writeln!(out, "removed {key}").map_err(w)?;
        }
        TemplateAction::Prune => {
            let removed = cache.prune()?;
            for k in &removed {
                writeln!(out, "removed {k}").map_err(w)?;
            }
            writeln!(out, "{} stale template(s) removed", removed.len()).map_err(w)?;
        }
    }
    Ok(())
}

/// One `ls` line: key, disk use, machine, kernel, and whether it is stale.
fn line(t: &TemplateInfo) -> String {
    let mib = t.disk_bytes as f64 / (1 << 20) as f64;
    let what = match &t.meta {
        Some(m) => format!(
            "{} vcpu {} MiB {} {} kernel {}",
            m.inputs.vcpus,
            m.inputs.mem_mib,
            m.inputs.mode.to_lowercase(),
            m.inputs.engine,
            m.inputs.kernel.path.display()
        ),
        None => "(no meta.json)".into(),
    };
    let state = if t.stale.is_empty() {
        String::new()
    } else {
        format!(
            "  STALE: changed {}",
            t.stale
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!("{}  {mib:7.1} MiB on disk  {what}{state}", t.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(cache: &TemplateCache, a: TemplateAction) -> Result<String, String> {
        let mut buf = Vec::new();
        run_in(cache, &a, &mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8(buf).unwrap())
    }

    #[test]
    fn ls_rm_and_prune_on_a_cache() {
        let d = tempfile::tempdir().unwrap();
        let c = TemplateCache::at(d.path());
        assert!(out(&c, TemplateAction::Ls)
            .unwrap()
            .starts_with("no templates"));
        std::fs::create_dir(c.dir("0123abcd")).unwrap();
        let ls = out(&c, TemplateAction::Ls).unwrap();
        assert!(
            ls.starts_with("0123abcd") && ls.contains("no meta.json") && ls.contains("STALE"),
            "{ls}"
        );
        assert!(out(&c, TemplateAction::Rm { key: "zz".into() }).is_err());
        assert_eq!(
            out(&c, TemplateAction::Prune).unwrap(),
            "removed 0123abcd\n1 stale template(s) removed\n"
        );
        std::fs::create_dir(c.dir("4567")).unwrap();
        assert_eq!(
            out(&c, TemplateAction::Rm { key: "45".into() }).unwrap(),
            "removed 4567\n"
        );
        assert!(c.list().unwrap().is_empty());
    }
}
