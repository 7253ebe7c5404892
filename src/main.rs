//! The `encrypto` binary: parses the command line, calls `encrypto-node`, prints the result.
//!
//! Errors end here: every failure becomes one line `error: <message>` on stderr and exit code
//! 1; command-line usage errors keep clap's exit code 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use encrypto_crypto::RsaBits;

mod commands;
mod gui_cmd;
mod output;
mod passphrase;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "encrypto",
    version,
    about = "Serverless end-to-end encrypted messenger.\n\
        With no command, `encrypto` opens the window (as `encrypto gui`).",
    long_about = "Serverless end-to-end encrypted messenger.\n\n\
        With no command, `encrypto` opens the window (as `encrypto gui`): create or unlock your \
        identity there and chat. The other commands create, unlock and re-seal your identity \
        from the terminal.",
    after_help = "Environment:\n  \
        ENCRYPTO_DATA_DIR        the data directory (as --data-dir)\n  \
        ENCRYPTO_PASSPHRASE      the passphrase (before --passphrase-file and the prompt)\n  \
        ENCRYPTO_NEW_PASSPHRASE  the new passphrase for `passwd`"
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
    /// Unlock the identity and show its name, peer id and fingerprint
    Whoami,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Prints usage (exit 2) or the requested help/version (exit 0).
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the cause chain with ": "; a stray newline must not split the line.
            let message = format!("{e:#}").replace(['\n', '\r'], " ");
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
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
    fn global_flags_go_before_or_after_the_command() {
        let cli =
            Cli::try_parse_from(["encrypto", "whoami", "--json", "--data-dir", "/d"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.data_dir, Some(PathBuf::from("/d")));
    }
}
