//! `signalbox keygen NAME`: make an ed25519 key pair for signing messages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::sign::{write_key_pair, SignError};

use super::{CliError, CliResult};

/// Flags of `signalbox keygen`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes NAME.key (the secret key, mode 0600) and NAME.pub (the public key) into
DIR (default STATE_DIR/keys, created mode 0700). Never overwrites a key.
NAME is the signer name that every signed message carries: use one per host or
bridge, e.g. git-pkgs01.

Publish with the secret key (`--sign-key DIR/NAME.key`, or sign_key in the
config file); copy NAME.pub into the trust directory (--trust DIR) of every
listener and console that should accept it.

Examples:
  signalbox keygen git-pkgs01
  signalbox keygen console --dir /etc/signalbox/keys
  cp ~/.local/state/signalbox/keys/git-pkgs01.pub /etc/signalbox/trusted/")]
pub struct KeygenArgs {
    /// Signer name: letters, digits, '-', '_' or '.' (at most 64)
    #[arg(value_name = "NAME")]
    name: String,
    /// Directory to write the pair into [default: STATE_DIR/keys]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Makes the key pair and prints where it is.
pub fn run(config: &Config, args: KeygenArgs) -> CliResult {
    let dir = args
        .dir
        .unwrap_or_else(|| config.state_dir.value.join("keys"));
    let (secret, public) = write_key_pair(&dir, &args.name).map_err(|e| match e {
        SignError::InvalidName { .. } | SignError::Exists { .. } => CliError::usage(e),
        other => CliError::failure(other),
    })?;
    println!(
        "secret key: {} (keep it private; sign with --sign-key)",
        secret.display()
    );
    println!(
        "public key: {} (copy it into the trust directories)",
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}
