//! Property checks shared by the fuzz targets. Each check panics (= a libFuzzer crash) with a
//! message naming the property that failed.

use std::sync::OnceLock;

pub mod reference_soap;
pub mod render_soap;

use keygate_core::ids::SfId;
use keygate_core::soap::{fault, FaultCode};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Properties switched off by name through `KEYGATE_FUZZ_ALLOW` (comma-separated), so a target
/// whose known, reported bug is not fixed yet can still be fuzzed for other bugs. Names in use:
/// `config-header-safe`, `differential`, `fault-xml-chars`, `id-canonical`. Off by default: every
/// property is checked.
pub fn allowed(name: &str) -> bool {
    static ALLOW: OnceLock<Vec<String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("KEYGATE_FUZZ_ALLOW")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|a| a == name)
}

/// Salesforce's 15→18 suffix alphabet.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Longest text an error message may carry: our own words plus a few 64-character excerpts.
pub const MAX_REASON_CHARS: usize = 400;

/// Text meant for a log line or a fault: no control character (no CR/LF log injection).
pub fn assert_no_control(what: &str, s: &str) {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        panic!("{what} contains control character {c:?}: {s:?}");
    }
}

/// An error message: printable and short.
pub fn assert_reason(what: &str, s: &str) {
    assert_no_control(what, s);
    let n = s.chars().count();
    assert!(
        n <= MAX_REASON_CHARS,
        "{what} is {n} characters long: {s:?}"
    );
}

/// The 18-character form computed independently of keygate (differential check of `to_18`).
pub fn reference_to_18(base15: &str) -> String {
    let mut out = base15.to_owned();
    for chunk in base15.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        out.push(char::from(SUFFIX_ALPHABET[bits]));
    }
    out
}

/// The exact 15-character form, independently of keygate: a 15-character id as is; an
/// 18-character id with its first 15 characters re-cased from the suffix (`None` for a suffix
/// character outside the alphabet, in either case).
pub fn reference_canonical15(s: &str) -> Option<String> {
    let b = s.as_bytes();
    match b.len() {
        15 => Some(s.to_owned()),
        18 => {
            let mut out = b[..15].to_vec();
            for (chunk, c) in b[15..].iter().enumerate() {
                let bits = SUFFIX_ALPHABET
                    .iter()
                    .position(|a| *a == c.to_ascii_uppercase())?;
                for i in 0..5 {
                    let x = &mut out[chunk * 5 + i];
                    *x = if bits & (1 << i) != 0 {
                        x.to_ascii_uppercase()
                    } else {
                        x.to_ascii_lowercase()
                    };
                }
            }
            String::from_utf8(out).ok()
        }
        _ => None,
    }
}

fn same_record_reference(a: &SfId, b: &SfId) -> bool {
    let ca = reference_canonical15(a.as_str());
    ca.is_some() && ca == reference_canonical15(b.as_str())
}

/// A parsed id: 15/18 ASCII alphanumerics; `to_18` computes Salesforce's suffix and is
/// idempotent; `same_record` is symmetric and agrees with an independent implementation; and
/// (`id-canonical`) ids that are the same record have the same `to_18`, which keygate uses as the
/// key of shared state (ledger lines, order claims, notification de-duplication).
pub fn check_id(what: &str, id: &SfId) {
    let s = id.as_str();
    assert!(
        (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{what} {s:?} is not 15/18 ASCII alphanumerics"
    );
    // The exact 15-character form: for an 18-character id, re-cased from its suffix (an
    // 18-character id is case-insensitive), so every spelling of one record has one `to_18`.
    let canonical = reference_canonical15(s)
        .unwrap_or_else(|| panic!("{what}: {s:?} parsed but its suffix is not a checksum"));
    let base = canonical.as_str();
    let full = id.to_18();
    assert_eq!(full, reference_to_18(base), "{what}: to_18 of {s:?}");
    let reparsed =
        SfId::parse(&full).unwrap_or_else(|| panic!("{what}: to_18 {full:?} does not parse"));
    assert_eq!(
        reparsed.to_18(),
        full,
        "{what}: to_18 not idempotent for {s:?}"
    );
    let short =
        SfId::parse(base).unwrap_or_else(|| panic!("{what}: 15-char base of {s:?} does not parse"));
    assert_eq!(
        short.to_18(),
        full,
        "{what}: 15 and 18 forms of {s:?} differ"
    );
    assert!(short.same_record(&reparsed), "{what}: {base:?} vs {full:?}");
    assert_eq!(id.key_prefix(), &s[..3], "{what}: key prefix of {s:?}");
    assert_eq!(id.to_string(), s, "{what}: Display of {s:?}");

    let mut variants = vec![reparsed, short];
    for v in [s.to_ascii_lowercase(), s.to_ascii_uppercase()] {
        variants.extend(SfId::parse(&v));
    }
    variants.push(id.clone());
    for other in &variants {
        let same = id.same_record(other);
        assert_eq!(
            same,
            other.same_record(id),
            "same_record({s:?}, {other}) not symmetric"
        );
        assert_eq!(
            same,
            same_record_reference(id, other),
            "same_record({s:?}, {other}) = {same}"
        );
        if same && !allowed("id-canonical") {
            assert_eq!(
                id.to_18(),
                other.to_18(),
                "{s:?} and {other} are the same record but their to_18 differ"
            );
        }
    }
}

/// `SfId::parse` accepts exactly the 15/18-alphanumeric strings whose 18-character suffix is made
/// of checksum characters (A–Z, 0–5, either case), and what it accepts is sound.
pub fn fuzz_id(s: &str) {
    let valid = (s.len() == 15 || s.len() == 18)
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && reference_canonical15(s).is_some();
    match SfId::parse(s) {
        Some(id) => {
            assert!(valid, "SfId::parse accepted {s:?}");
            assert_eq!(id.as_str(), s);
            check_id("SfId", &id);
        }
        None => assert!(!valid, "SfId::parse refused {s:?}"),
    }
}

/// What `escape_into` is documented to produce from `reason`, once read back by an XML reader.
fn expected_fault_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '\t' | '\n' => c,
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// XML 1.0 `Char`: what a well-formed document may contain.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// A SOAP fault document: well-formed, exactly Envelope/Body/Fault/{faultcode,faultstring}, no
/// markup in the reason (every `<` of the input is escaped), and the faultstring reads back as
/// `reason` (control characters replaced).
pub fn check_fault_body(body: &str, code: &str, reason: &str) {
    const PREFIX: &str = "<faultstring>";
    const SUFFIX: &str = "</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>";
    let start = body.find(PREFIX).expect("fault has no <faultstring>") + PREFIX.len();
    assert!(
        body.ends_with(SUFFIX),
        "fault does not end with its closing tags: {body:?}"
    );
    let inner = &body[start..body.len() - SUFFIX.len()];
    assert!(
        !inner.contains(['<', '>']),
        "raw markup in faultstring: {inner:?} (reason {reason:?})"
    );
    for (i, _) in inner.match_indices('&') {
        let rest = &inner[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "unescaped '&' in faultstring: {inner:?}"
        );
    }

    if let Some(c) = body
        .chars()
        .find(|c| !is_xml_char(*c) && !allowed("fault-xml-chars"))
    {
        panic!("fault contains {c:?}, not an XML 1.0 character (reason {reason:?})");
    }

    let mut reader = Reader::from_str(body);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    let mut path: Vec<String> = Vec::new();
    let mut elements: Vec<String> = Vec::new();
    let mut faultcode = String::new();
    let mut faultstring = String::new();
    loop {
        let ev = reader
            .read_event()
            .unwrap_or_else(|e| panic!("fault is not well-formed XML ({e}): {body:?}"));
        let text: Option<String> = match ev {
            Event::Eof => break,
            Event::Decl(_) => None,
            Event::Start(e) => {
                let name = e.name().as_ref().to_owned();
                elements.push(name.clone());
                path.push(name);
                None
            }
            Event::End(_) => {
                path.pop();
                None
            }
            Event::Empty(e) => panic!("unexpected empty element {:?} in fault", e.name()),
            Event::Text(t) => Some(t.xml10_content().into_owned()),
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten()
                } else {
                    predefined_entity(&r.xml10_content())
                };
                Some(
                    c.unwrap_or_else(|| panic!("bad reference in fault: {body:?}"))
                        .to_string(),
                )
            }
            other => panic!("unexpected {other:?} in fault: {body:?}"),
        };
        if let Some(t) = text {
            match path.last().map(String::as_str) {
                Some("faultcode") => faultcode.push_str(&t),
                Some("faultstring") => faultstring.push_str(&t),
                _ => assert!(t.is_empty(), "text {t:?} outside faultcode/faultstring"),
            }
        }
    }
    assert!(path.is_empty(), "fault ends with open elements {path:?}");
    assert_eq!(
        elements,
        [
            "soapenv:Envelope",
            "soapenv:Body",
            "soapenv:Fault",
            "faultcode",
            "faultstring"
        ],
        "fault structure"
    );
    assert_eq!(faultcode, code, "faultcode");
    assert_eq!(
        faultstring,
        expected_fault_text(reason),
        "faultstring does not read back as the reason"
    );
}

/// `soap::fault(code, reason)` renders a well-formed fault whose faultstring is `reason`.
pub fn check_fault(code: FaultCode, reason: &str) {
    let body = fault(code, reason);
    let name = match code {
        FaultCode::Client => "soapenv:Client",
        FaultCode::Server => "soapenv:Server",
    };
    check_fault_body(&body, name, reason);
}

/// Splits `data` into at most `n` fields on `sep`; missing fields are empty.
pub fn fields(data: &[u8], sep: u8, n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == sep).collect();
    out.resize(n, &[]);
    out
}

/// True when `hay` contains `needle` as bytes.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
