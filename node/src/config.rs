//! `DATA_DIR/config.json`: the settings a node started on a data directory takes from it,
//! whether the daemon or the window starts it. Every key is optional; a key this build does
//! not know is refused by name (a misspelt limit must not silently fall back to the default).
//!
//! ```json
//! {"bootstrap": ["/ip4/198.51.100.7/tcp/4001/p2p/12D3Koo..."],
//!  "relay": {"max_circuit_secs": 3600, "max_circuit_bytes": 1073741824,
//!            "max_reservations": 128, "max_circuits": 64},
//!  "download_limit": 1073741824}
//! ```
//!
//! `download_limit`: incoming files up to this many bytes download at once; larger ones wait
//! for `encrypto fetch` (0: every file waits).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{Multiaddr, NodeConfig};

/// The config file's name in the data directory.
pub const FILE_NAME: &str = "config.json";

/// A config file larger than this is not a config file.
const MAX_LEN: u64 = 1024 * 1024;

/// Why `config.json` cannot be used. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is there but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too large to be a config file.
    #[error("{} is over {MAX_LEN} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not JSON.
    #[error("{} is not valid JSON: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A key is unknown or its value is wrong (the message names the key).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What `config.json` sets (every field optional; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Peers to dial at start, besides `--bootstrap` and the peers the node remembers.
    #[serde(default, deserialize_with = "bootstrap_list")]
    pub bootstrap: Vec<Multiaddr>,
    /// Limits of the circuit relay served with `--relay-server`.
    #[serde(default)]
    pub relay: RelayLimits,
    /// Incoming files up to this many bytes download by themselves.
    #[serde(default, deserialize_with = "byte_count")]
    pub download_limit: Option<u64>,
}

/// `relay` in `config.json`: each limit a positive whole number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayLimits {
    /// How long one relayed connection may last, in seconds.
    #[serde(default, deserialize_with = "max_circuit_secs")]
    pub max_circuit_secs: Option<u64>,
    /// How many bytes one relayed connection may carry.
    #[serde(default, deserialize_with = "max_circuit_bytes")]
    pub max_circuit_bytes: Option<u64>,
    /// How many peers may hold a reservation at once.
    #[serde(default, deserialize_with = "max_reservations")]
    pub max_reservations: Option<u64>,
    /// How many relayed connections may run at once.
    #[serde(default, deserialize_with = "max_circuits")]
    pub max_circuits: Option<u64>,
}

impl ConfigFile {
    /// Reads `DATA_DIR/config.json`, or the defaults when there is none.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file (and the key, for a key that is unknown or wrong).
    pub fn load(data_dir: &Path) -> Result<ConfigFile, ConfigError> {
        ConfigFile::read(&data_dir.join(FILE_NAME))
    }

    /// Reads the config file at `path`, or the defaults when there is none.
    ///
    /// # Errors
    /// As [`ConfigFile::load`].
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => return Err(read_error(e)),
            Ok(meta) if meta.len() > MAX_LEN => {
                return Err(ConfigError::TooLarge {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => std::fs::read_to_string(path).map_err(read_error)?,
        };
        ConfigFile::parse(&text).map_err(|e| {
            let path = path.to_path_buf();
            let message = e.to_string();
            if e.is_data() {
                ConfigError::Invalid { path, message }
            } else {
                ConfigError::Syntax { path, message }
            }
        })
    }

    /// Parses the file's text.
    ///
    /// # Errors
    /// serde's error: a syntax error, or a data error naming the key.
    pub fn parse(text: &str) -> Result<ConfigFile, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Applies the file to a node's configuration: its bootstrap peers are added to those
    /// already there (without duplicates), its limits replace the defaults.
    pub fn apply(&self, config: &mut NodeConfig) {
        for addr in &self.bootstrap {
            if !config.bootstrap.contains(addr) {
                config.bootstrap.push(addr.clone());
            }
        }
        let relay = &self.relay;
        if let Some(secs) = relay.max_circuit_secs {
            config.swarm.relay_max_circuit_duration = Duration::from_secs(secs);
        }
        if let Some(bytes) = relay.max_circuit_bytes {
            config.swarm.relay_max_circuit_bytes = bytes;
        }
        if let Some(n) = relay.max_reservations {
            config.swarm.relay_max_reservations = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = relay.max_circuits {
            config.swarm.relay_max_circuits = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(limit) = self.download_limit {
            config.auto_download_max = limit;
        }
    }
}

fn bootstrap_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
    let Value::Array(list) = Value::deserialize(d)? else {
        return Err(D::Error::custom(
            "\"bootstrap\" must be a list of multiaddrs",
        ));
    };
    list.iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_default()
                .parse::<Multiaddr>()
                .map_err(|e| {
                    D::Error::custom(format!("bootstrap entry {v} is not a multiaddr ({e})"))
                })
        })
        .collect()
}

fn byte_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Value::deserialize(d)?
        .as_u64()
        .map(Some)
        .ok_or_else(|| D::Error::custom("download_limit must be a whole number of bytes"))
}

/// A relay limit: a positive whole number, the error naming the key.
fn positive<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Option<u64>, D::Error> {
    Value::deserialize(d)?
        .as_u64()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("relay.{key} must be a positive whole number")))
}

fn max_circuit_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive(d, "max_circuit_secs")
}

fn max_circuit_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive(d, "max_circuit_bytes")
}

fn max_reservations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive(d, "max_reservations")
}

fn max_circuits<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive(d, "max_circuits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_sets_bootstrap_and_relay_limits_and_names_what_is_wrong() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(ConfigFile::load(dir.path()).unwrap(), ConfigFile::default());
        std::fs::write(
            &path,
            r#"{"bootstrap": ["/ip4/127.0.0.1/tcp/4001"], "relay": {"max_circuit_secs": 60, "max_circuits": 3}, "download_limit": 0}"#,
        )
        .unwrap();
        let file = ConfigFile::load(dir.path()).unwrap();
        assert_eq!(file.bootstrap.len(), 1);
        assert_eq!(file.relay.max_circuit_secs, Some(60));
        assert_eq!(file.relay.max_circuits, Some(3));
        assert_eq!(file.relay.max_circuit_bytes, None);
        assert_eq!(file.download_limit, Some(0));

        let mut config = NodeConfig::new(dir.path().to_path_buf());
        config.bootstrap = file.bootstrap.clone();
        file.apply(&mut config);
        assert_eq!(
            config.bootstrap, file.bootstrap,
            "no duplicate bootstrap peer"
        );
        assert_eq!(
            config.swarm.relay_max_circuit_duration,
            Duration::from_secs(60)
        );
        assert_eq!(config.swarm.relay_max_circuits, 3);
        assert_eq!(config.auto_download_max, 0);

        for (bad, want) in [
            ("{", "not valid JSON"),
            (r#"{"bootstrap": "x"}"#, "must be a list"),
            (
                r#"{"bootstrap": ["nonsense"]}"#,
                "bootstrap entry \"nonsense\"",
            ),
            (r#"{"relay": {"max_circuits": -1}}"#, "relay.max_circuits"),
            (
                r#"{"relay": {"max_circuit_secs": 0}}"#,
                "relay.max_circuit_secs",
            ),
            (r#"{"download_limit": "1G"}"#, "download_limit"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = ConfigFile::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(FILE_NAME), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(FILE_NAME);
        for (bad, key) in [
            (
                r#"{"bootstrap": [], "downlaod_limit": 5}"#,
                "downlaod_limit",
            ),
            (r#"{"relay": {"max_circuit": 5}}"#, "max_circuit"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = ConfigFile::load(dir.path()).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(&format!("unknown field `{key}`")) && err.contains(FILE_NAME),
                "{err}"
            );
        }
    }
}
