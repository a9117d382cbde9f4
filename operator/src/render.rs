//! (being built)
use std::path::{Path, PathBuf};

pub fn print_crds(out_dir: Option<&Path>) -> anyhow::Result<()> {
    match out_dir {
        Some(dir) => {
            for (file, crd) in infergate_crds::crdgen::all() {
                std::fs::write(dir.join(file), infergate_crds::crdgen::to_yaml(&crd))?;
            }
        }
        None => {
            for (_, crd) in infergate_crds::crdgen::all() {
                print!("---\n{}", infergate_crds::crdgen::to_yaml(&crd));
            }
        }
    }
    Ok(())
}

pub fn render(_files: &[PathBuf], _now: Option<&str>) -> anyhow::Result<()> {
    anyhow::bail!("`render` is being built")
}
