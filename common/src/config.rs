//! The layered configuration shared by every signalbox program.
//!
//! Each setting comes from, in order of precedence: its command-line flag,
//! its `SIGNALBOX_*` environment variable, the TOML config file, or the
//! built-in default. [`Config::resolve`] records where each value came from
//! so that `signalbox config` can show it, with secrets masked.
//!
//! The config file is `--config FILE`, else `$SIGNALBOX_CONFIG`, else the
//! platform's config directory (`~/.config/signalbox/config.toml` on Linux).
//! An explicitly named file must exist; the default one is optional.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::sign::SignaturePolicy;

/// Default broker URL: the embedded broker or a local mosquitto.
pub const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";
/// Default deployment environment (the second topic level).
pub const DEFAULT_ENV: &str = "dev";
/// Default topic prefix (the first topic level).
pub const DEFAULT_PREFIX: &str = "signalbox";
/// Default interval between health reports, in seconds.
pub const DEFAULT_HEALTH_INTERVAL_S: u64 = 10;
/// Default MQTT keepalive, in seconds.
pub const DEFAULT_KEEPALIVE_S: u64 = 30;
/// Default time allowed to reach a broker, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
/// Default re-send window, in seconds: messages the broker confirmed this
/// recently are sent again after a reconnect, because a broker that dies
/// can lose what it acknowledged but had not yet saved (mosquitto saves
/// every `autosave_interval` seconds). Longer than the broker's save
/// interval; listeners drop the repeats by message id.
pub const DEFAULT_RESEND_WINDOW_S: u64 = 10;

/// Errors reading or interpreting the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file named explicitly (flag or `SIGNALBOX_CONFIG`) is missing.
    #[error("config file {path} does not exist")]
    MissingFile {
        /// The file that was asked for.
        path: PathBuf,
    },
    /// The config file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a wrongly typed value.
    #[error("config file {path} is invalid: {reason}")]
    Parse {
        /// The offending file.
        path: PathBuf,
        /// The TOML parser's explanation, with line and column.
        reason: String,
    },
    /// The config file has a top-level key signalbox does not know.
    #[error("config file {path}: unknown key `{}` (known keys: {known})", .key.escape_debug())]
    UnknownKey {
        /// The offending file.
        path: PathBuf,
        /// The key that is not known.
        key: String,
        /// The keys that are known, for the error message.
        known: String,
    },
    /// A value (from any source) is not valid for its setting.
    #[error("invalid {setting} {value:?} (from {source_name}): {reason}")]
    InvalidValue {
        /// The setting's name, e.g. `health_interval`.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// Where the value came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No home directory could be determined to place default directories.
    #[error("cannot determine a home directory for default paths; set --state-dir or SIGNALBOX_STATE_DIR")]
    NoHome,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable (its name).
    Env(&'static str),
    /// The config file (its path).
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The effective value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

/// Values given on the command line; `None` means "not given".
///
/// Binaries fill this from their clap flags; the resolution order is then
/// the same for every program.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--broker URL[,URL…]`.
    pub broker: Option<String>,
    /// `--env NAME`.
    pub env: Option<String>,
    /// `--prefix P`.
    pub prefix: Option<String>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--spool DIR`.
    pub spool: Option<PathBuf>,
    /// `--health-interval SECS`.
    pub health_interval: Option<u64>,
    /// `--client-id ID`.
    pub client_id: Option<String>,
    /// `--username USER`.
    pub username: Option<String>,
    /// `--password-file FILE` (the password itself is never a flag: it
    /// would show in `ps`).
    pub password_file: Option<PathBuf>,
    /// `--ca-file FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--mqtt-version 3|5`.
    pub mqtt_version: Option<u8>,
    /// `--client-cert FILE`.
    pub client_cert: Option<PathBuf>,
    /// `--client-key FILE`.
    pub client_key: Option<PathBuf>,
    /// `--sign-key FILE`.
    pub sign_key: Option<PathBuf>,
    /// `--trust DIR`.
    pub trust_dir: Option<PathBuf>,
    /// `--signature-policy require|mark`.
    pub signature_policy: Option<SignaturePolicy>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file consulted (whether or not it exists); empty when
    /// `SIGNALBOX_CONFIG` is set to the empty string (no file at all).
    pub file: PathBuf,
    /// Whether that file exists and was read.
    pub file_loaded: bool,
    /// Broker URLs, tried in order (failover).
    pub brokers: Sourced<Vec<String>>,
    /// Deployment environment: the second topic level.
    pub env: Sourced<String>,
    /// Topic prefix: the first topic level(s).
    pub prefix: Sourced<String>,
    /// Directory for state (spool, seen-sets, keys).
    pub state_dir: Sourced<PathBuf>,
    /// Directory of the durable publish spool.
    pub spool: Sourced<PathBuf>,
    /// Seconds between health reports of daemons.
    pub health_interval: Sourced<u64>,
    /// MQTT client id; generated per program when absent.
    pub client_id: Sourced<Option<String>>,
    /// Broker user name (a user in the broker URL wins over this).
    pub username: Sourced<Option<String>>,
    /// Broker password; never printed.
    pub password: Sourced<Option<String>>,
    /// CA certificate file (PEM) for `mqtts://`; the system roots otherwise.
    pub ca_file: Sourced<Option<PathBuf>>,
    /// Client certificate (PEM) presented to an `mqtts://` broker that
    /// asks for one; needs `client_key`.
    pub client_cert: Sourced<Option<PathBuf>>,
    /// The client certificate's private key (PEM); its content is never
    /// printed.
    pub client_key: Sourced<Option<PathBuf>>,
    /// Secret ed25519 key file that signs what this program publishes
    /// (`signalbox keygen`); unsigned when absent.
    pub sign_key: Sourced<Option<PathBuf>>,
    /// Directory of trusted public keys (`*.pub`): listeners and the
    /// console check signatures against it.
    pub trust_dir: Sourced<Option<PathBuf>>,
    /// What listeners do with unsigned or badly signed messages when a
    /// trust directory is set.
    pub signature_policy: Sourced<SignaturePolicy>,
    /// MQTT protocol version: 3 (3.1.1) or 5.
    pub mqtt_version: Sourced<u8>,
    /// MQTT keepalive in seconds.
    pub keepalive: Sourced<u64>,
    /// Seconds allowed to reach a broker.
    pub connect_timeout: Sourced<u64>,
    /// Seconds of confirmed publishes sent again after a reconnect (0: none).
    pub resend_window: Sourced<u64>,
    /// Tables of the config file that belong to other tools (e.g. `[theme]`),
    /// kept verbatim for them.
    pub sections: BTreeMap<String, toml::Value>,
}

/// The top-level keys of the config file.
#[derive(Debug, Default, Deserialize)]
struct FileValues {
    broker: Option<BrokerList>,
    env: Option<String>,
    prefix: Option<String>,
    state_dir: Option<PathBuf>,
    spool: Option<PathBuf>,
    health_interval: Option<u64>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    sign_key: Option<PathBuf>,
    trust_dir: Option<PathBuf>,
    signature_policy: Option<String>,
    mqtt_version: Option<u8>,
    keepalive: Option<u64>,
    connect_timeout: Option<u64>,
    resend_window: Option<u64>,
}

const KNOWN_KEYS: &[&str] = &[
    "broker",
    "env",
    "prefix",
    "state_dir",
    "spool",
    "health_interval",
    "client_id",
    "username",
    "password",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
    "sign_key",
    "trust_dir",
    "signature_policy",
    "mqtt_version",
    "keepalive",
    "connect_timeout",
    "resend_window",
];

/// `broker = "url"` or `broker = ["url", "url"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BrokerList {
    One(String),
    Many(Vec<String>),
}

/// The platform's default config file path.
pub fn default_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "signalbox").map(|d| d.config_dir().join("config.toml"))
}

/// The platform's default state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "signalbox").map(|d| {
        d.state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| d.data_local_dir().to_path_buf())
    })
}

impl Config {
    /// Resolves the configuration from flags, the process environment, the
    /// config file and defaults.
    pub fn resolve(flags: &Overrides) -> Result<Config, ConfigError> {
        Self::resolve_with(flags, |name| std::env::var(name).ok())
    }

    /// Like [`Config::resolve`], reading environment variables through
    /// `env` (tests pass a map instead of mutating the process environment).
    pub fn resolve_with(
        flags: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // SIGNALBOX_CONFIG set but empty means "no config file at all"
        // (scripts and tests that must not read the user's file).
        let no_file =
            flags.config_file.is_none() && env("SIGNALBOX_CONFIG").is_some_and(|v| v.is_empty());
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let (file, explicit) = match (&flags.config_file, env("SIGNALBOX_CONFIG")) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(path)) => (PathBuf::from(path), true),
            (None, None) if no_file => (PathBuf::new(), false),
            (None, None) => (
                default_config_file().unwrap_or_else(|| PathBuf::from("signalbox.toml")),
                false,
            ),
        };
        let (values, sections, file_loaded) = if no_file {
            (FileValues::default(), BTreeMap::new(), false)
        } else {
            read_file(&file, explicit)?
        };
        let from_file = |present: bool| {
            if present {
                Some(Origin::File(file.clone()))
            } else {
                None
            }
        };

        let brokers = pick(
            flags.broker.clone().map(|b| split_brokers(&b)),
            "SIGNALBOX_BROKER",
            env("SIGNALBOX_BROKER").map(|b| split_brokers(&b)),
            values.broker.map(|b| match b {
                BrokerList::One(s) => split_brokers(&s),
                BrokerList::Many(v) => v,
            }),
            &from_file,
            vec![DEFAULT_BROKER.to_string()],
        );
        if brokers.value.is_empty() {
            return Err(ConfigError::InvalidValue {
                setting: "broker",
                value: String::new(),
                source_name: brokers.origin.to_string(),
                reason: "no broker URL given".into(),
            });
        }
        let text =
            |flag: &Option<String>, var: &'static str, file: Option<String>, default: &str| {
                pick(
                    flag.clone(),
                    var,
                    env(var),
                    file,
                    &from_file,
                    default.to_string(),
                )
            };
        let env_name = text(&flags.env, "SIGNALBOX_ENV", values.env, DEFAULT_ENV);
        let prefix = text(
            &flags.prefix,
            "SIGNALBOX_PREFIX",
            values.prefix,
            DEFAULT_PREFIX,
        );
        check_topic_level("env", &env_name, false)?;
        check_topic_level("prefix", &prefix, true)?;

        let state_dir = match pick_opt(
            flags.state_dir.clone(),
            "SIGNALBOX_STATE_DIR",
            env("SIGNALBOX_STATE_DIR").map(PathBuf::from),
            values.state_dir,
            &from_file,
        ) {
            Some(s) => s,
            None => Sourced {
                value: default_state_dir().ok_or(ConfigError::NoHome)?,
                origin: Origin::Default,
            },
        };
        let spool = pick_opt(
            flags.spool.clone(),
            "SIGNALBOX_SPOOL",
            env("SIGNALBOX_SPOOL").map(PathBuf::from),
            values.spool,
            &from_file,
        )
        .unwrap_or_else(|| Sourced {
            value: state_dir.value.join("spool"),
            origin: Origin::Default,
        });

        let number =
            |setting: &'static str,
             flag: Option<u64>,
             var: &'static str,
             file: Option<u64>,
             default: u64,
             min: u64|
             -> Result<Sourced<u64>, ConfigError> {
                let from_env =
                    match env(var) {
                        Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
                            ConfigError::InvalidValue {
                                setting,
                                value: raw.clone(),
                                source_name: format!("env {var}"),
                                reason: "expected a whole number of seconds".into(),
                            }
                        })?),
                        None => None,
                    };
                let chosen = pick(flag, var, from_env, file, &from_file, default);
                if chosen.value < min {
                    return Err(ConfigError::InvalidValue {
                        setting,
                        value: chosen.value.to_string(),
                        source_name: chosen.origin.to_string(),
                        reason: format!("must be at least {min}"),
                    });
                }
                Ok(chosen)
            };
        let health_interval = number(
            "health_interval",
            flags.health_interval,
            "SIGNALBOX_HEALTH_INTERVAL",
            values.health_interval,
            DEFAULT_HEALTH_INTERVAL_S,
            1,
        )?;
        let keepalive = number(
            "keepalive",
            None,
            "SIGNALBOX_KEEPALIVE",
            values.keepalive,
            DEFAULT_KEEPALIVE_S,
            5,
        )?;
        let connect_timeout = number(
            "connect_timeout",
            None,
            "SIGNALBOX_CONNECT_TIMEOUT",
            values.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT_S,
            1,
        )?;
        let resend_window = number(
            "resend_window",
            None,
            "SIGNALBOX_RESEND_WINDOW",
            values.resend_window,
            DEFAULT_RESEND_WINDOW_S,
            0,
        )?;
        let mqtt_version = number(
            "mqtt_version",
            flags.mqtt_version.map(u64::from),
            "SIGNALBOX_MQTT_VERSION",
            values.mqtt_version.map(u64::from),
            3,
            3,
        )?;
        if mqtt_version.value != 3 && mqtt_version.value != 5 {
            return Err(ConfigError::InvalidValue {
                setting: "mqtt_version",
                value: mqtt_version.value.to_string(),
                source_name: mqtt_version.origin.to_string(),
                reason: "must be 3 (MQTT 3.1.1) or 5".into(),
            });
        }
        let mqtt_version = Sourced {
            value: mqtt_version.value as u8,
            origin: mqtt_version.origin,
        };

        let optional = |flag: Option<String>, var: &'static str, file: Option<String>| {
            pick(
                flag.map(Some),
                var,
                env(var).map(Some),
                file.map(Some),
                &from_file,
                None,
            )
        };
        let client_id = optional(
            flags.client_id.clone(),
            "SIGNALBOX_CLIENT_ID",
            values.client_id,
        );
        let username = optional(
            flags.username.clone(),
            "SIGNALBOX_USERNAME",
            values.username,
        );
        let password = resolve_password(
            flags,
            &env,
            values.password,
            values.password_file,
            &from_file,
        )?;
        let ca_file = pick(
            flags.ca_file.clone().map(Some),
            "SIGNALBOX_CA_FILE",
            env("SIGNALBOX_CA_FILE").map(|p| Some(PathBuf::from(p))),
            values.ca_file.map(Some),
            &from_file,
            None,
        );

        let path_setting = |flag: &Option<PathBuf>, var: &'static str, file: Option<PathBuf>| {
            pick(
                flag.clone().map(Some),
                var,
                env(var).map(|p| Some(PathBuf::from(p))),
                file.map(Some),
                &from_file,
                None,
            )
        };
        let client_cert = path_setting(
            &flags.client_cert,
            "SIGNALBOX_CLIENT_CERT",
            values.client_cert,
        );
        let client_key = path_setting(&flags.client_key, "SIGNALBOX_CLIENT_KEY", values.client_key);
        if client_cert.value.is_some() != client_key.value.is_some() {
            let (given, origin) = if client_cert.value.is_some() {
                ("client_cert", &client_cert)
            } else {
                ("client_key", &client_key)
            };
            return Err(ConfigError::InvalidValue {
                setting: given,
                value: origin
                    .value
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source_name: origin.origin.to_string(),
                reason: "a client certificate needs its key: give both client_cert and client_key"
                    .into(),
            });
        }
        let sign_key = path_setting(&flags.sign_key, "SIGNALBOX_SIGN_KEY", values.sign_key);
        let trust_dir = path_setting(&flags.trust_dir, "SIGNALBOX_TRUST", values.trust_dir);
        let policy_env = match env("SIGNALBOX_SIGNATURE_POLICY") {
            Some(raw) => Some(raw.parse::<SignaturePolicy>().map_err(|reason| {
                ConfigError::InvalidValue {
                    setting: "signature_policy",
                    value: raw.clone(),
                    source_name: "env SIGNALBOX_SIGNATURE_POLICY".into(),
                    reason,
                }
            })?),
            None => None,
        };
        let policy_file = match values.signature_policy {
            Some(raw) => Some(raw.parse::<SignaturePolicy>().map_err(|reason| {
                ConfigError::InvalidValue {
                    setting: "signature_policy",
                    value: raw.clone(),
                    source_name: Origin::File(file.clone()).to_string(),
                    reason,
                }
            })?),
            None => None,
        };
        let signature_policy = pick(
            flags.signature_policy,
            "SIGNALBOX_SIGNATURE_POLICY",
            policy_env,
            policy_file,
            &from_file,
            SignaturePolicy::default(),
        );

        Ok(Config {
            file,
            file_loaded,
            brokers,
            env: env_name,
            prefix,
            state_dir,
            spool,
            health_interval,
            client_id,
            username,
            password,
            ca_file,
            client_cert,
            client_key,
            sign_key,
            trust_dir,
            signature_policy,
            mqtt_version,
            keepalive,
            connect_timeout,
            resend_window,
            sections,
        })
    }

    /// The settings as `(name, shown value, origin)` rows, secrets masked:
    /// what `signalbox config` prints.
    pub fn rows(&self) -> Vec<(&'static str, String, String)> {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into())
        }
        let brokers = self
            .brokers
            .value
            .iter()
            .map(|b| mask_url_password(b))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            ("broker", brokers, self.brokers.origin.to_string()),
            ("env", self.env.value.clone(), self.env.origin.to_string()),
            (
                "prefix",
                self.prefix.value.clone(),
                self.prefix.origin.to_string(),
            ),
            (
                "state_dir",
                self.state_dir.value.display().to_string(),
                self.state_dir.origin.to_string(),
            ),
            (
                "spool",
                self.spool.value.display().to_string(),
                self.spool.origin.to_string(),
            ),
            (
                "health_interval",
                self.health_interval.value.to_string(),
                self.health_interval.origin.to_string(),
            ),
            (
                "client_id",
                opt(&self.client_id.value),
                self.client_id.origin.to_string(),
            ),
            (
                "username",
                opt(&self.username.value),
                self.username.origin.to_string(),
            ),
            (
                "password",
                if self.password.value.is_some() {
                    "********".into()
                } else {
                    "(none)".into()
                },
                self.password.origin.to_string(),
            ),
            (
                "ca_file",
                opt(&self.ca_file.value.as_ref().map(|p| p.display())),
                self.ca_file.origin.to_string(),
            ),
            (
                "client_cert",
                opt(&self.client_cert.value.as_ref().map(|p| p.display())),
                self.client_cert.origin.to_string(),
            ),
            (
                "client_key",
                opt(&self.client_key.value.as_ref().map(|p| p.display())),
                self.client_key.origin.to_string(),
            ),
            (
                "sign_key",
                opt(&self.sign_key.value.as_ref().map(|p| p.display())),
                self.sign_key.origin.to_string(),
            ),
            (
                "trust_dir",
                opt(&self.trust_dir.value.as_ref().map(|p| p.display())),
                self.trust_dir.origin.to_string(),
            ),
            (
                "signature_policy",
                self.signature_policy.value.to_string(),
                self.signature_policy.origin.to_string(),
            ),
            (
                "mqtt_version",
                self.mqtt_version.value.to_string(),
                self.mqtt_version.origin.to_string(),
            ),
            (
                "keepalive",
                self.keepalive.value.to_string(),
                self.keepalive.origin.to_string(),
            ),
            (
                "connect_timeout",
                self.connect_timeout.value.to_string(),
                self.connect_timeout.origin.to_string(),
            ),
            (
                "resend_window",
                self.resend_window.value.to_string(),
                self.resend_window.origin.to_string(),
            ),
        ]
    }
}

/// Replaces the password of a broker URL by `****`, for display and logs.
pub fn mask_url_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have one, which
            // this one evidently can.
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn split_brokers(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Chooses flag > env > file > default.
fn pick<T>(
    flag: Option<T>,
    var: &'static str,
    from_env: Option<T>,
    from_file_value: Option<T>,
    file_origin: &dyn Fn(bool) -> Option<Origin>,
    default: T,
) -> Sourced<T> {
    pick_opt(flag, var, from_env, from_file_value, file_origin).unwrap_or(Sourced {
        value: default,
        origin: Origin::Default,
    })
}

fn pick_opt<T>(
    flag: Option<T>,
    var: &'static str,
    from_env: Option<T>,
    from_file_value: Option<T>,
    file_origin: &dyn Fn(bool) -> Option<Origin>,
) -> Option<Sourced<T>> {
    if let Some(value) = flag {
        return Some(Sourced {
            value,
            origin: Origin::Flag,
        });
    }
    if let Some(value) = from_env {
        return Some(Sourced {
            value,
            origin: Origin::Env(var),
        });
    }
    let present = from_file_value.is_some();
    match (from_file_value, file_origin(present)) {
        (Some(value), Some(origin)) => Some(Sourced { value, origin }),
        _ => None,
    }
}

fn resolve_password(
    flags: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file_password: Option<String>,
    file_password_file: Option<PathBuf>,
    from_file: &dyn Fn(bool) -> Option<Origin>,
) -> Result<Sourced<Option<String>>, ConfigError> {
    let read = |path: &Path, origin: Origin| -> Result<Sourced<Option<String>>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::InvalidValue {
            setting: "password_file",
            value: path.display().to_string(),
            source_name: origin.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Sourced {
            value: Some(text.trim_end_matches(['\n', '\r']).to_string()),
            origin,
        })
    };
    if let Some(path) = &flags.password_file {
        return read(path, Origin::Flag);
    }
    if let Some(pw) = env("SIGNALBOX_PASSWORD") {
        return Ok(Sourced {
            value: Some(pw),
            origin: Origin::Env("SIGNALBOX_PASSWORD"),
        });
    }
    if let Some(path) = env("SIGNALBOX_PASSWORD_FILE") {
        return read(Path::new(&path), Origin::Env("SIGNALBOX_PASSWORD_FILE"));
    }
    if let (Some(pw), Some(origin)) = (file_password, from_file(true)) {
        return Ok(Sourced {
            value: Some(pw),
            origin,
        });
    }
    if let (Some(path), Some(origin)) = (file_password_file, from_file(true)) {
        return read(&path, origin);
    }
    Ok(Sourced {
        value: None,
        origin: Origin::Default,
    })
}

fn check_topic_level(
    setting: &'static str,
    value: &Sourced<String>,
    allow_slash: bool,
) -> Result<(), ConfigError> {
    let bad = value.value.is_empty()
        || value.value.starts_with('$')
        || value
            .value
            .chars()
            .any(|c| c == '+' || c == '#' || c.is_control() || (!allow_slash && c == '/'))
        || value.value.split('/').any(str::is_empty);
    if bad {
        return Err(ConfigError::InvalidValue {
            setting,
            value: value.value.clone(),
            source_name: value.origin.to_string(),
            reason: if allow_slash {
                "must be non-empty topic levels without + # $ or control characters".into()
            } else {
                "must be one non-empty topic level without / + # $ or control characters".into()
            },
        });
    }
    Ok(())
}

type FileRead = (FileValues, BTreeMap<String, toml::Value>, bool);

fn read_file(path: &Path, explicit: bool) -> Result<FileRead, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if explicit {
                return Err(ConfigError::MissingFile {
                    path: path.to_path_buf(),
                });
            }
            return Ok((FileValues::default(), BTreeMap::new(), false));
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: toml_reason(&e, Some(&text)),
        })?;
    let mut known = toml::Table::new();
    let mut sections = BTreeMap::new();
    for (key, value) in table {
        if KNOWN_KEYS.contains(&key.as_str()) {
            known.insert(key, value);
        } else if value.is_table() {
            sections.insert(key, value);
        } else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known: KNOWN_KEYS.join(", "),
            });
        }
    }
    let values: FileValues = known
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: toml_reason(&e, None),
        })?;
    Ok((values, sections, true))
}

/// The TOML parser's error as one line: where (when `text` is the parsed
/// document) and what. Its own multi-line text quotes the offending line,
/// control characters and all, which must not reach a terminal.
fn toml_reason(e: &toml::de::Error, text: Option<&str>) -> String {
    let place = e
        .span()
        .zip(text)
        .and_then(|(span, text)| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    let message: String = e
        .message()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "{place}{}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flags: &Overrides, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve_with(flags, |name| vars.get(name).cloned())
    }

    fn with_file(text: &str) -> (tempfile::TempDir, Overrides) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        let flags = Overrides {
            config_file: Some(path),
            ..Default::default()
        };
        (dir, flags)
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = Overrides {
            state_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let cfg = resolve(&flags, &[("SIGNALBOX_CONFIG", "")]).expect("resolves");
        assert_eq!(cfg.brokers.value, vec![DEFAULT_BROKER.to_string()]);
        assert_eq!(cfg.brokers.origin, Origin::Default);
        assert_eq!(cfg.env.value, "dev");
        assert_eq!(cfg.prefix.value, "signalbox");
        assert_eq!(cfg.health_interval.value, 10);
        assert_eq!(cfg.spool.value, dir.path().join("spool"));
        assert_eq!(cfg.spool.origin, Origin::Default);
        assert_eq!(cfg.state_dir.origin, Origin::Flag);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, mut flags) = with_file(
            "env = \"file\"\nprefix = \"fp\"\nbroker = \"mqtt://file:1\"\nhealth_interval = 7\n",
        );
        flags.env = Some("flag".into());
        let cfg = resolve(
            &flags,
            &[
                ("SIGNALBOX_ENV", "envvar"),
                ("SIGNALBOX_PREFIX", "ep"),
                ("SIGNALBOX_STATE_DIR", "/tmp/x"),
            ],
        )
        .expect("resolves");
        assert_eq!(cfg.env.value, "flag");
        assert_eq!(cfg.env.origin, Origin::Flag);
        assert_eq!(cfg.prefix.value, "ep");
        assert_eq!(cfg.prefix.origin, Origin::Env("SIGNALBOX_PREFIX"));
        assert_eq!(cfg.brokers.value, vec!["mqtt://file:1".to_string()]);
        assert!(matches!(cfg.brokers.origin, Origin::File(_)));
        assert_eq!(cfg.health_interval.value, 7);
        assert_eq!(cfg.mqtt_version.origin, Origin::Default);
    }

    #[test]
    fn broker_lists_from_env_and_file() {
        let (_dir, flags) =
            with_file("broker = [\"mqtt://a:1\", \"mqtt://b:2\"]\nstate_dir = \"/tmp/s\"\n");
        let cfg = resolve(&flags, &[]).expect("resolves");
        assert_eq!(cfg.brokers.value, vec!["mqtt://a:1", "mqtt://b:2"]);
        let cfg =
            resolve(&flags, &[("SIGNALBOX_BROKER", "mqtt://c:3, mqtt://d:4")]).expect("resolves");
        assert_eq!(cfg.brokers.value, vec!["mqtt://c:3", "mqtt://d:4"]);
    }

    #[test]
    fn unknown_key_is_rejected_but_tables_are_kept() {
        let (_dir, flags) = with_file("brokr = \"x\"\n");
        let err = resolve(&flags, &[]).expect_err("unknown key");
        assert!(err.to_string().contains("unknown key `brokr`"), "{err}");
        let (_dir, flags) = with_file("state_dir = \"/tmp/s\"\n[theme]\nselection_bg = \"blue\"\n");
        let cfg = resolve(&flags, &[]).expect("resolves");
        assert!(cfg.sections.contains_key("theme"));
    }

    #[test]
    fn invalid_files_and_values_give_precise_errors() {
        let (_dir, flags) = with_file("health_interval = \"soon\"\n");
        let err = resolve(&flags, &[]).expect_err("wrong type");
        assert!(err.to_string().contains("is invalid"), "{err}");
        let (_dir, flags) = with_file("env = [\n");
        assert!(matches!(
            resolve(&flags, &[]),
            Err(ConfigError::Parse { .. })
        ));
        let (_dir, flags) = with_file("state_dir = \"/tmp/s\"\nenv = \"a/b\"\n");
        let err = resolve(&flags, &[]).expect_err("slash in env");
        assert!(err.to_string().contains("invalid env"), "{err}");
        let (_dir, flags) = with_file("state_dir = \"/tmp/s\"\n");
        let err = resolve(&flags, &[("SIGNALBOX_HEALTH_INTERVAL", "ten")]).expect_err("bad number");
        assert!(
            err.to_string().contains("SIGNALBOX_HEALTH_INTERVAL"),
            "{err}"
        );
        let err = resolve(&flags, &[("SIGNALBOX_MQTT_VERSION", "4")]).expect_err("bad version");
        assert!(err.to_string().contains("3 (MQTT 3.1.1) or 5"), "{err}");
    }

    #[test]
    fn an_empty_signalbox_config_means_no_file() {
        let cfg = resolve(
            &Overrides::default(),
            &[("SIGNALBOX_CONFIG", ""), ("SIGNALBOX_STATE_DIR", "/tmp/s")],
        )
        .expect("resolves");
        assert!(!cfg.file_loaded);
        assert_eq!(cfg.file, PathBuf::new());
        assert_eq!(cfg.env.origin, Origin::Default);
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_missing_is_not() {
        let flags = Overrides {
            config_file: Some(PathBuf::from("/nonexistent/signalbox.toml")),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&flags, &[]),
            Err(ConfigError::MissingFile { .. })
        ));
        let err = resolve(
            &Overrides::default(),
            &[("SIGNALBOX_CONFIG", "/nonexistent/x.toml")],
        );
        assert!(matches!(err, Err(ConfigError::MissingFile { .. })));
    }

    #[test]
    fn passwords_are_masked_everywhere_they_are_shown() {
        let (dir, flags) = with_file(
            "state_dir = \"/tmp/s\"\npassword = \"hunter2\"\nbroker = \"mqtt://u:sekrit@h:1\"\n",
        );
        let cfg = resolve(&flags, &[]).expect("resolves");
        assert_eq!(cfg.password.value.as_deref(), Some("hunter2"));
        let shown = format!("{:?}", cfg.rows());
        assert!(
            !shown.contains("hunter2") && !shown.contains("sekrit"),
            "{shown}"
        );
        let pw_file = dir.path().join("pw");
        std::fs::write(&pw_file, "from-file\n").expect("write");
        let cfg = resolve(
            &flags,
            &[(
                "SIGNALBOX_PASSWORD_FILE",
                pw_file.to_str().unwrap_or_default(),
            )],
        )
        .expect("resolves");
        assert_eq!(cfg.password.value.as_deref(), Some("from-file"));
    }
}
