//! `-` as the input: stdin copied to a temporary file first, because an import reads its
//! input more than once (a check before anything starts, then the import, which may re-read
//! to resume) and stdin can be read only once. Deleted when the command ends.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file a command reads its URLs from.
pub struct Resolved {
    pub path: PathBuf,
    /// How errors and messages name it: the path, or "stdin".
    pub name: String,
    spool: Option<PathBuf>,
}

impl Resolved {
    /// The default job name: the file's stem, or "stdin".
    pub fn job_name(&self) -> String {
        match self.spool {
            Some(_) => "stdin".into(),
            None => crate::job_name_for(&self.path),
        }
    }
}

impl Resolved {
    /// `inputs::check` with errors naming the input as the user gave it.
    pub fn check(&self) -> anyhow::Result<super::Counts> {
        let spooled = self.path.display().to_string();
        super::check(&self.path).map_err(|e| anyhow::anyhow!(format!("{e:#}").replace(&spooled, &self.name)))
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        if let Some(p) = &self.spool {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `file` as given, or stdin (`-`) copied to a temporary file.
pub fn resolve(file: &Path) -> anyhow::Result<Resolved> {
    if file != Path::new("-") {
        let name = file.display().to_string();
        return Ok(Resolved { path: file.to_path_buf(), name, spool: None });
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let path = std::env::temp_dir().join(format!("facesweep-stdin-{}-{nanos}", std::process::id()));
    let resolved = Resolved { path: path.clone(), name: "stdin".into(), spool: Some(path.clone()) };
    let mut f = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut f).context("read stdin")?;
    Ok(resolved)
}
