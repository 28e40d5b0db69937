//! Fuzz target: arbitrary bytes as an HTTP request body, read as Python's
//! `json.loads` reads it (`tokend::http::pyjson`). Nothing may panic, a
//! value read is written as a 422 echoes it (`pyjson::dumps`, Python's
//! floats) and reads back the same, and an error's position lies within
//! the decoded text. Whether bodies read as CPython reads them is
//! the differential test `bodies_are_read_as_cpython_reads_them`
//! (tests/http_api.rs).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run http_body` (see the README).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::http::pyjson::{self, Bad};

fuzz_target!(|data: &[u8]| {
    match pyjson::loads(data) {
        Ok(v) => {
            let written = pyjson::dumps(&v);
            assert_eq!(pyjson::loads(written.as_bytes()).as_ref(), Ok(&v), "{written}");
        }
        Err(Bad::Decode(pos, _)) => {
            let text = pyjson::decode(data).expect("only decoded text is parsed");
            assert!(pos <= text.chars().count(), "{pos}");
        }
        Err(Bad::Unreadable) => {}
    }
});
