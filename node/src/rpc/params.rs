//! Each method's parameters (the request's `params` object, by name). Every struct refuses
//! members it does not know, so a misspelt parameter is an error instead of a silent default.
//! An optional parameter may be left out or sent as `null`.

use encrypto_crypto::Cipher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Method, RpcError};

/// `send` with `wait` and no `timeout` waits this many seconds.
pub const DEFAULT_WAIT_SECS: u64 = 60;
/// The longest `send` with `wait` may wait, in seconds.
pub const MAX_WAIT_SECS: u64 = 24 * 60 * 60;

/// No parameters (`whoami`, `peers`, `contacts`, `subscribe`): an empty or absent object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Where `search` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Contacts and known peers (name prefix).
    Local,
    /// The DHT name directory (the whole name).
    Dht,
}

/// `search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The name (or, locally, its start).
    pub name: String,
    /// Only there; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddParams {
    /// A multiaddr ending in `/p2p/PEER_ID`, or a peer id the node knows an address for.
    pub peer: String,
}

/// `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The contact: a peer id, or the name of exactly one contact.
    pub to: String,
    /// Only show the safety number (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<bool>,
}

/// `relay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayParams {
    /// The contact.
    pub to: String,
    /// Set the mark (default) or clear it (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
}

/// `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// The contact.
    pub to: String,
    /// The message.
    pub text: String,
    /// This message's cipher instead of the chat's.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "any_case::optional"
    )]
    pub cipher: Option<Cipher>,
    /// Answer once the peer acknowledged it (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// With `wait`: seconds to wait at most (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// The contact.
    pub to: String,
    /// Only the newest N messages (0 or absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `cipher`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CipherParams {
    /// The contact.
    pub to: String,
    /// The chat's new cipher.
    #[serde(deserialize_with = "any_case::required")]
    pub cipher: Cipher,
}

/// `delete-chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteChatParams {
    /// The contact.
    pub to: String,
    /// Ask the contact to delete it too (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_both: Option<bool>,
}

/// `passwd`. Its `Debug` shows no passphrase.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswdParams {
    /// The current passphrase.
    pub passphrase: String,
    /// The new one.
    pub new_passphrase: String,
}

impl std::fmt::Debug for PasswdParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswdParams(..)")
    }
}

/// `send-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendFileParams {
    /// The contact.
    pub to: String,
    /// The file, as an absolute path (the daemon's working directory is not the caller's).
    pub path: String,
    /// Contacts asked to hold the sealed chunks for the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Vec<String>>,
}

/// `fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    /// The file id (32 hex digits).
    pub file_id: String,
    /// Save it here (an absolute path: a file name or a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
}

/// `files`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesParams {
    /// Only this file's transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// `forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardParams {
    /// The file id.
    pub file_id: String,
    /// The contact to send it to.
    pub to: String,
}

/// A request's method with its parameters, checked: what the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `whoami`.
    Whoami,
    /// `peers`.
    Peers,
    /// `search`.
    Search(SearchParams),
    /// `add`.
    Add(AddParams),
    /// `contacts`.
    Contacts,
    /// `verify`.
    Verify(VerifyParams),
    /// `relay`.
    Relay(RelayParams),
    /// `send`.
    Send(SendParams),
    /// `history`.
    History(HistoryParams),
    /// `cipher`.
    Cipher(CipherParams),
    /// `delete-chat`.
    DeleteChat(DeleteChatParams),
    /// `send-file`.
    SendFile(SendFileParams),
    /// `fetch`.
    Fetch(FetchParams),
    /// `files`.
    Files(FilesParams),
    /// `forward`.
    Forward(ForwardParams),
    /// `subscribe`.
    Subscribe,
    /// `passwd`.
    Passwd(PasswdParams),
}

impl Call {
    /// Reads `params` as the parameters of the method named `method`.
    ///
    /// # Errors
    /// [`super::code::METHOD_NOT_FOUND`] for a name that is no method (the message lists
    /// them); [`super::code::INVALID_PARAMS`] for a parameter that is missing, unknown or of
    /// the wrong type (the message names it).
    pub fn parse(method: &str, params: Map<String, Value>) -> Result<Call, RpcError> {
        let method = Method::from_name(method).ok_or_else(|| Method::not_found(method))?;
        Ok(match method {
            Method::Whoami => read::<NoParams>(params).map(|_| Call::Whoami)?,
            Method::Peers => read::<NoParams>(params).map(|_| Call::Peers)?,
            Method::Contacts => read::<NoParams>(params).map(|_| Call::Contacts)?,
            Method::Subscribe => read::<NoParams>(params).map(|_| Call::Subscribe)?,
            Method::Search => Call::Search(read(params)?),
            Method::Add => Call::Add(read(params)?),
            Method::Verify => Call::Verify(read(params)?),
            Method::Relay => Call::Relay(read(params)?),
            Method::Send => Call::Send(read(params)?),
            Method::History => Call::History(read(params)?),
            Method::Cipher => Call::Cipher(read(params)?),
            Method::DeleteChat => Call::DeleteChat(read(params)?),
            Method::SendFile => Call::SendFile(read(params)?),
            Method::Fetch => Call::Fetch(read(params)?),
            Method::Files => Call::Files(read(params)?),
            Method::Forward => Call::Forward(read(params)?),
            Method::Passwd => Call::Passwd(read(params)?),
        })
    }

    /// The method this call runs.
    pub fn method(&self) -> Method {
        match self {
            Call::Whoami => Method::Whoami,
            Call::Peers => Method::Peers,
            Call::Search(_) => Method::Search,
            Call::Add(_) => Method::Add,
            Call::Contacts => Method::Contacts,
            Call::Verify(_) => Method::Verify,
            Call::Relay(_) => Method::Relay,
            Call::Send(_) => Method::Send,
            Call::History(_) => Method::History,
            Call::Cipher(_) => Method::Cipher,
            Call::DeleteChat(_) => Method::DeleteChat,
            Call::SendFile(_) => Method::SendFile,
            Call::Fetch(_) => Method::Fetch,
            Call::Files(_) => Method::Files,
            Call::Forward(_) => Method::Forward,
            Call::Subscribe => Method::Subscribe,
            Call::Passwd(_) => Method::Passwd,
        }
    }

    /// The call's parameters as the `params` object a client sends.
    pub fn params(&self) -> Value {
        use super::to_value;
        match self {
            Call::Whoami | Call::Peers | Call::Contacts | Call::Subscribe => to_value(&NoParams {}),
            Call::Search(p) => to_value(p),
            Call::Add(p) => to_value(p),
            Call::Verify(p) => to_value(p),
            Call::Relay(p) => to_value(p),
            Call::Send(p) => to_value(p),
            Call::History(p) => to_value(p),
            Call::Cipher(p) => to_value(p),
            Call::DeleteChat(p) => to_value(p),
            Call::SendFile(p) => to_value(p),
            Call::Fetch(p) => to_value(p),
            Call::Files(p) => to_value(p),
            Call::Forward(p) => to_value(p),
            Call::Passwd(p) => to_value(p),
        }
    }
}

/// A cipher by name in any case (`aes`, `RSA`), as the CLI has always accepted.
mod any_case {
    use encrypto_crypto::Cipher;
    use serde::{Deserialize, Deserializer};

    fn parse<E: serde::de::Error>(name: &str) -> Result<Cipher, E> {
        name.parse()
            .map_err(|_| E::custom(format!("unknown cipher {name:?}: aes or rsa")))
    }

    pub(super) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Cipher, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cipher>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| parse::<D::Error>(&name))
            .transpose()
    }
}

/// `params` as `P`, or an invalid-params error that says what is wrong: serde names an
/// unknown or missing member (and lists the known ones); a member of the wrong type is named
/// by its path.
fn read<P: DeserializeOwned>(params: Map<String, Value>) -> Result<P, RpcError> {
    serde_path_to_error::deserialize(Value::Object(params)).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner().to_string();
        // serde's own message names an unknown or missing member already.
        RpcError::invalid_params(if path == "." || error.starts_with("unknown field") {
            format!("invalid params: {error}")
        } else {
            format!("invalid params: \"{path}\": {error}")
        })
    })
}
