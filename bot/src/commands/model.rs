//! `bankbot model fetch|verify|path`.

use anyhow::bail;
use bankbot_models::base::BaseModelDir;

use crate::cli::ModelCommand;
use crate::fetch;
use crate::paths::Paths;

pub fn run(paths: &Paths, cmd: ModelCommand) -> anyhow::Result<bool> {
    match cmd {
        ModelCommand::Fetch { force } => {
            if !paths.base_model_is_default {
                bail!(
                    "--base-model / BANKBOT_BASE_MODEL names {}: fetch only installs into the default \
                     location; unset it, or use --cache-dir to choose where the default lives",
                    paths.base_model.display()
                );
            }
            let installed = fetch::fetch(&paths.base_model, force, |m| eprintln!("{m}"))?;
            if !installed {
                eprintln!(
                    "the base model is already installed and verified in {}",
                    paths.base_model.display()
                );
            }
            println!("{}", paths.base_model.display());
            Ok(true)
        }
        ModelCommand::Verify => {
            let dir = BaseModelDir::open(&paths.base_model)?;
            dir.verify_pinned()?;
            println!(
                "{}: matches the pinned all-MiniLM-L6-v2 revision",
                paths.base_model.display()
            );
            Ok(true)
        }
        ModelCommand::Path => {
            println!("{}", paths.base_model.display());
            Ok(true)
        }
    }
}
