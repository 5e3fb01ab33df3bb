//! Bodies of the CLI's fuzz targets under `fuzz/` (`config_file`), as plain functions that
//! ordinary tests also run over a corpus and random inputs. Each returns normally for every
//! input.

/// Checks `data` (made UTF-8) as a `zs serve --config` file: a file that checks is TOML
/// with as many settings as it says; one that does not names at least one problem.
pub fn config_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match crate::config::check(&text) {
        Ok(n) => {
            let table: toml::Table = toml::from_str(&text).expect("a file that checks is TOML");
            assert_eq!(table.len(), n, "{text:?}");
        }
        Err(problems) => assert!(!problems.is_empty() && problems.iter().all(|p| !p.is_empty())),
    }
}

/// Whether `text` checks as a `zs serve --config` file.
pub fn checks(text: &str) -> bool {
    crate::config::check(text).is_ok()
}
