//! Arbitrary bytes as a configuration document: import never panics, and an
//! accepted document exports (plaintext) to one that imports equal.
#![no_main]

use config_export::{Export, Import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Import::new().import(data) else {
        return;
    };
    let exported = Export::new(&config).plaintext().expect("an imported config exports");
    let again = Import::new()
        .import(exported.document.as_bytes())
        .expect("an exported config imports");
    assert_eq!(again, config);
});
