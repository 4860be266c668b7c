//! What every `signalbox-bridge` command shares: the global options (the
//! same flags and help as `signalbox`'s), the error type that carries an
//! exit code, and logging.

use std::path::PathBuf;

use clap::Args;
use signalbox_common::config::{Config, ConfigError, Overrides};
use signalbox_common::sign::SignaturePolicy;

/// Exit code of a usage or configuration error (as for `signalbox`).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// sysexits.h EX_DATAERR: the input is not usable (empty mail, malformed
/// hook lines).
pub const EXIT_DATAERR: u8 = 65;
/// sysexits.h EX_TEMPFAIL: neither published nor spooled; the caller (the
/// MTA) should try again later.
pub const EXIT_TEMPFAIL: u8 = 75;

/// Options shared by every command of both binaries (`signalbox` uses this
/// struct too); see `signalbox config`. clap types cannot live in
/// signalbox-common, which has no clap.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [env: SIGNALBOX_CONFIG] [default: ~/.config/signalbox/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Broker URL(s), comma-separated for failover: mqtt://host:port or mqtts://… [env: SIGNALBOX_BROKER] [default: mqtt://127.0.0.1:1883]
    #[arg(long, global = true, value_name = "URL")]
    pub broker: Option<String>,
    /// Deployment environment, the second topic level [env: SIGNALBOX_ENV] [default: dev]
    #[arg(long, global = true, value_name = "NAME")]
    pub env: Option<String>,
    /// Topic prefix, the first topic level [env: SIGNALBOX_PREFIX] [default: signalbox]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// State directory (spool, seen-sets) [env: SIGNALBOX_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Spool directory [env: SIGNALBOX_SPOOL] [default: STATE_DIR/spool]
    #[arg(long, global = true, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// MQTT client id [env: SIGNALBOX_CLIENT_ID] [default: generated]
    #[arg(long, global = true, value_name = "ID")]
    pub client_id: Option<String>,
    /// Broker user name [env: SIGNALBOX_USERNAME]
    #[arg(long, global = true, value_name = "USER")]
    pub username: Option<String>,
    /// File holding the broker password [env: SIGNALBOX_PASSWORD_FILE; or SIGNALBOX_PASSWORD]
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for mqtts:// [env: SIGNALBOX_CA_FILE] [default: system roots]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one; needs --client-key and --ca-file [env: SIGNALBOX_CLIENT_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) [env: SIGNALBOX_CLIENT_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Sign every envelope published with this secret key (made by `signalbox keygen`) [env: SIGNALBOX_SIGN_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Directory of trusted public keys (*.pub): listeners and the console check signatures [env: SIGNALBOX_TRUST]
    #[arg(long = "trust", global = true, value_name = "DIR")]
    pub trust_dir: Option<PathBuf>,
    /// With --trust, listeners refuse unsigned or badly signed messages (require: failure record "bad signature") or only mark them [env: SIGNALBOX_SIGNATURE_POLICY] [default: mark]
    #[arg(long, global = true, value_name = "require|mark")]
    pub signature_policy: Option<SignaturePolicy>,
    /// MQTT protocol version: 3 (3.1.1) or 5 [env: SIGNALBOX_MQTT_VERSION] [default: 3]
    #[arg(long, global = true, value_name = "3|5")]
    pub mqtt_version: Option<u8>,
    /// More log output on stderr (-v info, -vv debug); or SIGNALBOX_LOG=filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            broker: self.broker.clone(),
            env: self.env.clone(),
            prefix: self.prefix.clone(),
            state_dir: self.state_dir.clone(),
            spool: self.spool.clone(),
            health_interval: None,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            mqtt_version: self.mqtt_version,
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            sign_key: self.sign_key.clone(),
            trust_dir: self.trust_dir.clone(),
            signature_policy: self.signature_policy,
        }
    }

    /// Resolves the effective configuration (flags > env > file > defaults).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        Config::resolve(&self.overrides())
    }
}

/// An error with the exit code it should produce; printed as one line.
#[derive(Debug)]
pub struct BridgeError {
    /// The process exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl BridgeError {
    /// An error that exits with `code`.
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> BridgeError {
        BridgeError {
            code,
            error: error.into(),
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> BridgeError {
        BridgeError::new(EXIT_USAGE, error)
    }

    /// A runtime failure (exit 1).
    pub fn failure(error: impl Into<anyhow::Error>) -> BridgeError {
        BridgeError::new(EXIT_FAILURE, error)
    }
}

/// Result of a command: its exit code.
pub type BridgeResult = Result<u8, BridgeError>;

/// Sets up logging on stderr: warnings by default, more with -v, or the
/// filter in SIGNALBOX_LOG.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        // rumqttc warns about every refused publish it sees; signalbox
        // reports those itself, as one clear line.
        0 => "warn,rumqttc=error",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNALBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// A `--timeout` value as a duration: positive, finite, at most a day.
pub fn timeout_arg(secs: f64) -> Result<std::time::Duration, BridgeError> {
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(BridgeError::usage(anyhow::anyhow!(
            "--timeout must be a number of seconds between 0 and 86400, not {secs}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// An error and its causes on one line (reqwest's and lettre's top errors
/// only say "error sending request"), without repeating a cause that the
/// message already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
