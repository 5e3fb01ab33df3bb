//! Bodies of the services' fuzz targets under `fuzz/` (`accounts_request`, `db_input`, `files_request`, `push_request`, `xnat_input`), as plain
//! functions that ordinary tests also run over a corpus and random inputs. Each returns
//! normally for every input.

/// Decodes `data` (made UTF-8) as the JSON request of every accounts command, and checks
/// each name and password in it as the commands would.
pub fn accounts_request(data: &[u8]) {
    let text = zs::Text::from(String::from_utf8_lossy(data).into_owned());
    crate::accounts::decode_any(&text);
}

/// Reads `data` as the data store reads what peers send: command requests, predicates
/// (tested on documents), stored records, resume tokens, rows and change pushes.
pub fn db_input(data: &[u8]) {
    crate::db::decode_any(data);
}

/// Decodes `data` (made UTF-8) as the JSON request of every file command, and checks each
/// path in it as the sandbox would.
pub fn files_request(data: &[u8]) {
    let text = zs::Text::from(String::from_utf8_lossy(data).into_owned());
    crate::files::decode_any(&text);
}

/// Decodes `data` (made UTF-8) as the JSON request of every push and inbox command, and
/// checks each topic and command name in it as the commands would.
pub fn push_request(data: &[u8]) {
    crate::push::decode_any(&String::from_utf8_lossy(data));
}

/// Reads `data` as a cluster node reads its NATS messages (gossip applied to a registry
/// entry, carried deliveries) and as a login token of the cluster.
pub fn cluster_input(data: &[u8]) {
    crate::cluster::decode_any(data);
}

/// Decodes `data` as XNat's files, register requests and UDP frames.
pub fn xnat_input(data: &[u8]) {
    crate::xnat::decode_any(data);
}

/// Reads the corpus of `target` under `root/fuzz/corpus`, plus `n` inputs derived from it
/// and random ones (the same generator as zs-wire's targets).
pub fn inputs(root: &std::path::Path, target: &str, n: usize) -> Vec<Vec<u8>> {
    zs::wire::fuzzing::inputs(root, target, n)
}
