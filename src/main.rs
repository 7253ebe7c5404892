//! The `encrypto` binary: parses the command line, calls `encrypto-node`, prints the result.
//!
//! `daemon` runs the node headless with its control socket; the other network commands are
//! thin clients of that socket (`client`). Errors end here: every failure becomes one line
//! `error: <message>` on stderr and exit code 1; usage errors (clap's, a bad multiaddr, bad
//! parameters) exit with 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use encrypto_crypto::{Cipher, RsaBits};
use encrypto_node::rpc::{self, params::Source};

mod client;
mod commands;
mod daemon;
mod gui_cmd;
mod human;
mod methods;
mod output;
mod passphrase;

/// A usage error found after parsing (a bad multiaddr): exit code 2, like clap's.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "encrypto",
    version,
    about = "Serverless end-to-end encrypted messenger.\n\
        `encrypto daemon` runs your node headless; the other commands talk to it. With no \
        command, `encrypto` opens the window (as `encrypto gui`).",
    long_about = "Serverless end-to-end encrypted messenger.\n\n\
        With no command, `encrypto` opens the window (as `encrypto gui`): it creates or unlocks \
        your identity and runs your node in-process. Or create an identity with `encrypto init`, \
        run your node with `encrypto daemon` (it keeps running), and use the other commands from \
        another terminal or a script: they talk to the daemon through its socket in the data \
        directory. `--json` prints one JSON object per line.",
    after_help = "Environment:\n  \
        ENCRYPTO_DATA_DIR        the data directory (as --data-dir)\n  \
        ENCRYPTO_PASSPHRASE      the passphrase (before --passphrase-file and the prompt)\n  \
        ENCRYPTO_NEW_PASSPHRASE  the new passphrase for `passwd`\n  \
        ENCRYPTO_LOG             the daemon's log filter (e.g. info, debug; default warn)"
)]
struct Cli {
    /// Where the keystore lives [env: ENCRYPTO_DATA_DIR] [default: the platform data
    /// directory, e.g. ~/.local/share/encrypto]
    // Not clap's `env`: that would reject an empty ENCRYPTO_DATA_DIR, which means "unset".
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    json: bool,

    /// Read the passphrase from the first line of FILE
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new identity (Ed25519 and RSA keys, a storage key), sealed with a passphrase
    Init {
        /// Your display name: 1 to 64 bytes, not unique (people are told apart by fingerprint)
        #[arg(long)]
        name: String,

        /// Size of the RSA encryption key
        #[arg(long, value_name = "BITS", default_value = "3072", value_parser = rsa_bits_parser())]
        rsa_bits: RsaBits,
    },
    /// Show your name, peer id, fingerprint and listen addresses (asks the daemon if one runs,
    /// else unlocks the identity)
    Whoami,
    /// Run the node headless and serve the control socket DATA_DIR/encrypto.sock until
    /// SIGINT or SIGTERM
    Daemon {
        /// Listen on this address (repeatable) [default: TCP and QUIC on every interface]
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Dial this peer at start (repeatable), e.g. /ip4/198.51.100.7/tcp/4001/p2p/12D3...
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// Do not discover peers on the local network
        #[arg(long)]
        no_mdns: bool,
        /// Serve circuit relay for other peers (an always-on node with a public address)
        #[arg(long)]
        relay_server: bool,
        /// An address at which others reach this node (a public address, a port forward)
        #[arg(long, value_name = "MULTIADDR")]
        external_addr: Vec<String>,
    },
    /// Connected and discovered peers, with how they were found
    Peers,
    /// Find people by name: contacts and known peers (name prefix), and the DHT name
    /// directory (the whole name; case and spacing do not matter)
    Search {
        /// The name
        name: String,
        /// Only the DHT
        #[arg(long, conflicts_with = "local")]
        dht: bool,
        /// Only contacts and known peers
        #[arg(long)]
        local: bool,
    },
    /// Add a contact by /.../p2p/PEER_ID multiaddr (or a peer id the node knows an address
    /// for): dials it and pins its signed profile
    Add {
        /// A multiaddr ending in /p2p/PEER_ID, or a peer id
        peer: String,
    },
    /// Your contacts
    Contacts,
    /// Show the safety number with a contact and mark it verified (compare the number with
    /// your contact first, in person or on a call)
    Verify {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// Only show the safety number; do not mark the contact verified
        #[arg(long)]
        show: bool,
    },
    /// Mark a contact as a relay for your files: when a recipient is offline, files go
    /// (sealed; it never gets the key) to the contacts marked so, which pass them on
    Relay {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// Clear the mark instead
        #[arg(long)]
        off: bool,
    },
    /// Send a text message (queued durably when this returns)
    Send {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// The message
        text: String,
        /// Seal this message with this cipher instead of the chat's
        #[arg(long, value_parser = cipher_parser())]
        cipher: Option<Cipher>,
        /// Wait until the peer has acknowledged the message
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after SECS seconds (the message stays queued) [default: 60]
        #[arg(long, value_name = "SECS", requires = "wait", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: Option<u64>,
    },
    /// The chat with a contact, oldest first
    History {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// Only the newest N messages
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Switch a chat's cipher (the contact is told)
    Cipher {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// The cipher
        #[arg(value_parser = cipher_parser())]
        cipher: Cipher,
    },
    /// Delete a chat's history here (and with --for-both, ask the contact to delete it too)
    DeleteChat {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// Also delete it on the contact's side
        #[arg(long)]
        for_both: bool,
    },
    /// Send a file (sealed chunk by chunk; the contact pulls it, or fetches it from relays)
    SendFile {
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
        /// The file
        path: PathBuf,
        /// Also hand the sealed chunks to this contact, which serves them while you are
        /// offline and can never read them (repeatable)
        #[arg(long, value_name = "CONTACT")]
        via: Vec<String>,
        /// Wait until the contact has the whole file, with a progress bar on a terminal
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after SECS seconds (the transfer goes on)
        #[arg(long, value_name = "SECS", requires = "wait", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// Download a file offered to you (one over the automatic limit, or one that failed),
    /// waiting until it is complete
    Fetch {
        /// The file id, as `encrypto files` shows it
        file_id: String,
        /// Save it here (a file name or a directory) instead of DATA_DIR/downloads
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Give up waiting after SECS seconds (the download goes on)
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// File transfers, newest first
    Files,
    /// Send a file you hold (received or sent) to another contact, without sealing it again
    Forward {
        /// The file id, as `encrypto files` shows it
        file_id: String,
        /// The contact: a peer id, or the name of exactly one contact
        to: String,
    },
    /// Print events (messages, deliveries, peers, files) as they happen, until interrupted
    Watch,
    /// Change the passphrase that seals the keystore
    Passwd {
        /// Read the new passphrase from the first line of FILE
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Open the window (the default with no command)
    Gui,
}

fn rsa_bits_parser() -> impl TypedValueParser<Value = RsaBits> {
    PossibleValuesParser::new(["2048", "3072", "4096"]).try_map(|bits| {
        bits.parse()
            .ok()
            .and_then(RsaBits::from_bits)
            .ok_or("expected 2048, 3072 or 4096")
    })
}

fn cipher_parser() -> impl TypedValueParser<Value = Cipher> {
    PossibleValuesParser::new(["aes", "rsa"]).try_map(|name| name.parse::<Cipher>())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A usage error: clap's message, on one line like every other error.
            let _ = writeln!(std::io::stderr(), "{}", one_line_usage_error(&e));
            return ExitCode::from(2);
        }
        // The requested help or version (exit 0).
        Err(e) => e.exit(),
    };
    let command = cli.command.unwrap_or(Command::Gui);
    let global = commands::Global {
        data_dir: cli.data_dir,
        json: cli.json,
        passphrase_file: cli.passphrase_file,
    };
    let result = match command {
        Command::Init { name, rsa_bits } => commands::init(&global, &name, rsa_bits),
        Command::Whoami => commands::whoami(&global),
        Command::Passwd {
            new_passphrase_file,
        } => commands::passwd(&global, new_passphrase_file.as_deref()),
        Command::Gui => gui_cmd::gui(&global),
        Command::Daemon {
            listen,
            bootstrap,
            no_mdns,
            relay_server,
            external_addr,
        } => {
            init_logging();
            daemon::run(
                &global,
                daemon::Options {
                    listen,
                    bootstrap,
                    no_mdns,
                    relay_server,
                    external_addr,
                },
            )
        }
        Command::Peers => client::peers(&global),
        Command::Search { name, dht, local } => {
            let source = if dht {
                Some(Source::Dht)
            } else if local {
                Some(Source::Local)
            } else {
                None
            };
            client::search(&global, name, source)
        }
        Command::Add { peer } => client::add(&global, peer),
        Command::Contacts => client::contacts(&global),
        Command::Verify { to, show } => client::verify(&global, to, show),
        Command::Relay { to, off } => client::relay(&global, to, off),
        Command::Send {
            to,
            text,
            cipher,
            wait,
            timeout,
        } => client::send(&global, to, text, cipher, wait, timeout),
        Command::SendFile {
            to,
            path,
            via,
            wait,
            timeout,
        } => client::send_file(&global, &to, &path, &via, wait, timeout),
        Command::Fetch {
            file_id,
            out,
            timeout,
        } => client::fetch(&global, &file_id, out.as_deref(), timeout),
        Command::Files => client::files(&global),
        Command::Forward { file_id, to } => client::forward(&global, file_id, to),
        Command::History { to, limit } => client::history(&global, to, limit),
        Command::Cipher { to, cipher } => client::cipher(&global, to, cipher),
        Command::DeleteChat { to, for_both } => client::delete_chat(&global, to, for_both),
        Command::Watch => client::watch(&global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the cause chain with ": "; a stray newline must not split the line.
            let message = format!("{e:#}").replace(['\n', '\r'], " ");
            let _ = writeln!(std::io::stderr(), "error: {message}");
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<rpc::RpcError>()
                    .is_some_and(|r| r.code == rpc::code::INVALID_PARAMS);
            if usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Clap's multi-line usage error as one line: its message, the possible values and the usage,
/// without the blank lines and the "For more information" footer.
fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let line = parts.join(" ");
    let line = if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    };
    format!("{line} (see --help)")
}

/// The daemon logs to stderr, filtered by `ENCRYPTO_LOG` (default: warnings and errors).
fn init_logging() {
    use std::io::IsTerminal;
    // Kademlia warns at every start of a node without bootstrap peers: expected on a LAN.
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENCRYPTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rsa_bits_accepts_only_supported_sizes() {
        let parse = |bits: &str| {
            Cli::try_parse_from(["encrypto", "init", "--name", "A", "--rsa-bits", bits])
        };
        for (bits, want) in [
            ("2048", RsaBits::B2048),
            ("3072", RsaBits::B3072),
            ("4096", RsaBits::B4096),
        ] {
            match parse(bits).unwrap().command {
                Some(Command::Init { rsa_bits, .. }) => assert_eq!(rsa_bits, want),
                other => panic!("{other:?}"),
            }
        }
        for bad in ["1024", "3000", "", "abc"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn rsa_bits_defaults_to_3072() {
        let cli = Cli::try_parse_from(["encrypto", "init", "--name", "A"]).unwrap();
        match cli.command {
            Some(Command::Init { rsa_bits, .. }) => assert_eq!(rsa_bits, RsaBits::B3072),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        for args in [
            vec!["encrypto", "cipher", "bob", "des"],
            vec!["encrypto", "send", "bob"],
            vec!["encrypto", "--frobnicate"],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            let line = one_line_usage_error(&e);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.starts_with("error: "), "{line}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = Cli::try_parse_from(["encrypto", "cipher", "bob", "des"]).unwrap_err();
        assert!(one_line_usage_error(&e).contains("aes"));
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli =
            Cli::try_parse_from(["encrypto", "whoami", "--json", "--data-dir", "/d"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.data_dir, Some(PathBuf::from("/d")));
    }
}
