//! Structured logging with `tracing`: text for people, JSON for collectors.
//! Log lines carry identifiers (file id, data set, topic, partition, offset),
//! never record values.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Libraries whose INFO lines are per-operation chatter: the Delta kernel
/// logs every snapshot and scan (84 % of a sink's lines over a seed day).
/// Kept at WARN unless `log.level` names them; `RUST_LOG` overrides all.
const QUIET_LIBRARIES: [&str; 2] = ["buoyant_kernel", "delta_kernel"];

/// The filter of `log.level`, with [`QUIET_LIBRARIES`] at WARN.
fn level_filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for library in QUIET_LIBRARIES.iter().filter(|l| !level.contains(*l)) {
        if let Ok(directive) = format!("{library}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber. `RUST_LOG` overrides `config.level`.
/// Logs go to stderr, so stdout stays free for tools' output.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| level_filter(&config.level));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests running several services in-process) keeps the first.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delta_kernel_speaks_at_warn_unless_the_level_names_it() {
        let filter = level_filter("info").to_string();
        assert!(filter.contains("buoyant_kernel=warn"), "{filter}");
        assert!(filter.contains("delta_kernel=warn"), "{filter}");
        assert!(filter.contains("info"), "{filter}");
        let filter = level_filter("info,buoyant_kernel=debug").to_string();
        assert!(filter.contains("buoyant_kernel=debug"), "{filter}");
        assert!(!filter.contains("buoyant_kernel=warn"), "{filter}");
        // A level that does not parse falls back to info, still quiet.
        let filter = level_filter("not a level ===").to_string();
        assert!(filter.contains("buoyant_kernel=warn"), "{filter}");
    }
}

/// How logs and error messages name a remote file: `name#` and the first 12
/// hex digits of the SHA-256 of its name, never the name itself. Facilities
/// name exports after patients or wards at times, and a name may hold
/// control characters that forge log lines; the name stays in the ledger
/// (`_files.file_name`) and the raw file's headers. To find a name's
/// reference: `printf %s 'NAME' | sha256sum | cut -c1-12`.
pub fn file_name_ref(name: &str) -> String {
    format!(
        "name#{}",
        &crate::raw_file::sha256_hex(name.as_bytes())[..12]
    )
}

#[cfg(test)]
mod name_ref_tests {
    use super::*;

    #[test]
    fn a_file_name_is_logged_as_its_digest() {
        let reference = file_name_ref("Smith_John_\n2024.zip");
        assert_eq!(reference.len(), "name#".len() + 12);
        assert!(reference.starts_with("name#"));
        assert!(!reference.contains("Smith"));
        assert_eq!(reference, file_name_ref("Smith_John_\n2024.zip"));
        assert_ne!(reference, file_name_ref("Smith_John_2024.zip"));
        // The documented shell recipe gives the same digest.
        assert_eq!(file_name_ref("a.zip"), "name#d42cf35afe0b");
    }
}
