//! A strict, zero-copy XML 1.0 pull reader for the two documents the plugin reads: the Outbound
//! Message (hundreds of elements per request, on every worker) and the license server's replies.
//!
//! Why not a general crate: quick-xml's namespace reader cost ~35 instructions per byte here
//! (UTF-8 re-validated per event, a resolver buffer, owned names), which put the parse of a
//! 100-notification message at 3× the rest of the request. This reader borrows every name and
//! value from the input (validated as UTF-8 once, by the caller), checks well-formedness as it
//! goes, and leaves namespaces to the caller, which knows the three it cares about.
//!
//! What it refuses (a document is either well-formed or an error, never "best effort"):
//! mismatched or unclosed tags, duplicate attributes, names that are not XML names, `<` in
//! attribute values, undefined entities, character references to non-characters, control
//! characters, `]]>` in text, `--` in comments, a misplaced XML declaration, and more than
//! `max_depth` open elements. DOCTYPE and processing instructions are reported as tokens so the
//! caller refuses them with its own words; entities are never expanded beyond the predefined five.

use std::borrow::Cow;
use std::fmt;

/// Attributes accepted on one element: a bound on the quadratic duplicate check.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest entity or character reference name looked for before `;` (`&#x10FFFF;` needs 8).
const MAX_REFERENCE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed; the byte offset is into the document given to the reader.
    Syntax { what: &'static str, at: usize },
    /// `&name;` other than the five predefined entities.
    UndefinedEntity(String),
    /// More than `max_depth` open elements.
    TooDeep,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Syntax { what, at } => write!(f, "{what} (at byte {at})"),
            XmlError::UndefinedEntity(name) => write!(f, "undefined entity '&{name};'"),
            XmlError::TooDeep => write!(f, "elements nested too deep"),
        }
    }
}

fn syntax<T>(what: &'static str, at: usize) -> Result<T, XmlError> {
    Err(XmlError::Syntax { what, at })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// `<?xml …?>` at the very start; its pseudo-attributes.
    Decl(Attrs<'a>),
    /// Any other processing instruction.
    ProcessingInstruction,
    Doctype,
    Comment,
    /// A start tag; `empty` for `<a/>`, which has no matching `End`.
    Start {
        name: &'a str,
        attrs: Attrs<'a>,
        empty: bool,
    },
    End {
        name: &'a str,
    },
    /// Character data between tags, references not yet resolved (see [`Text::content`]).
    Text(Text<'a>),
    /// The content of a CDATA section, taken literally.
    CData(Text<'a>),
    Eof,
}

/// Character data as it appears in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a> {
    raw: &'a str,
    /// No `&` and no `\r`: the raw text is the content.
    plain: bool,
    cdata: bool,
}

impl<'a> Text<'a> {
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_whitespace(&self) -> bool {
        self.raw.bytes().all(is_space)
    }

    /// The text with references resolved and line ends normalised (XML 1.0 §2.11).
    pub fn content(&self) -> Cow<'a, str> {
        if self.plain {
            return Cow::Borrowed(self.raw);
        }
        let mut out = String::with_capacity(self.raw.len());
        push_resolved(self.raw, !self.cdata, false, &mut out);
        Cow::Owned(out)
    }
}

/// The attributes of a start tag (already checked: the iterator cannot fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs<'a> {
    raw: &'a str,
}

impl<'a> Attrs<'a> {
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

impl<'a> Iterator for Attrs<'a> {
    /// (qualified name, raw value between the quotes).
    type Item = (&'a str, AttrValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.raw.as_bytes();
        let start = skip_spaces(b, 0);
        let mut i = start;
        while b.get(i).is_some_and(|&c| c != b'=' && !is_space(c)) {
            i += 1;
        }
        let name = self.raw.get(start..i)?;
        i = skip_spaces(b, i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_spaces(b, i + 1);
        let quote = *b.get(i)?;
        let value_start = i + 1;
        let len = b.get(value_start..)?.iter().position(|&c| c == quote)?;
        let value = self.raw.get(value_start..value_start + len)?;
        self.raw = self.raw.get(value_start + len + 1..)?;
        Some((name, AttrValue { raw: value }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrValue<'a> {
    raw: &'a str,
}

impl<'a> AttrValue<'a> {
    /// The normalised value (XML 1.0 §3.3.3: references resolved, each white-space character
    /// becomes a space).
    pub fn value(&self) -> Cow<'a, str> {
        let r = self.raw;
        if !r.bytes().any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r')) {
            return Cow::Borrowed(r);
        }
        let mut out = String::with_capacity(r.len());
        push_resolved(r, true, true, &mut out);
        Cow::Owned(out)
    }
}

/// Append `raw` with (already validated) references resolved and line ends normalised; in an
/// attribute value, also white space to spaces.
fn push_resolved(raw: &str, references: bool, attribute: bool, out: &mut String) {
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\r', '\t', '\n']) {
        out.push_str(rest.get(..i).unwrap_or(""));
        let tail = rest.get(i..).unwrap_or("");
        let mut chars = tail.chars();
        match chars.next() {
            Some('&') if references => {
                let end = tail.find(';').unwrap_or(tail.len());
                let name = tail.get(1..end).unwrap_or("");
                if let Some(c) = reference(name) {
                    out.push(c);
                }
                rest = tail.get(end + 1..).unwrap_or("");
                continue;
            }
            Some('\r') => {
                out.push(if attribute { ' ' } else { '\n' });
                rest = chars.as_str().strip_prefix('\n').unwrap_or(chars.as_str());
                continue;
            }
            Some('\t' | '\n') if attribute => out.push(' '),
            Some(c) => out.push(c),
            None => break,
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
}

/// The character a reference name (between `&` and `;`) stands for, if it is allowed.
fn reference(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
            return None;
        }
        let c = char::from_u32(u32::from_str_radix(digits, radix).ok()?)?;
        return is_xml_char(c).then_some(c);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// XML 1.0 `Char`, for characters reached through references (raw text is checked bytewise).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Could `c` continue a name (so that the name read so far is only a prefix of it)?
fn class_is_name(c: u8) -> bool {
    !c.is_ascii() || ASCII_NAME.get(usize::from(c)).is_some_and(|&k| k != 0)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_space(c)) {
        i += 1;
    }
    i
}

fn is_plain_text(b: u8) -> bool {
    PLAIN_TEXT.get(usize::from(b)).copied().unwrap_or(false)
}

fn is_space_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z' | '_' | ':'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}'
        | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}'
        | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

const NAME_START: u8 = 2;
/// ASCII name characters: `NAME_START` for those a name may start with, 1 for the others.
// Indexing in a const block is checked by the compiler: out of range fails the build.
#[allow(clippy::indexing_slicing)]
const ASCII_NAME: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = match b as u8 {
            b'A'..=b'Z' | b'a'..=b'z' | b'_' | b':' => NAME_START,
            b'0'..=b'9' | b'-' | b'.' => 1,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// Text bytes the scanner passes over without a second look: not markup (`<`, `&`, `>`), not a
/// control character or CR, not `EF` (the lead byte of U+FFFE and U+FFFF).
#[allow(clippy::indexing_slicing)]
const PLAIN_TEXT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'\t' | b'\n' | 0x20..=0x25 | 0x27..=0x3B | 0x3D | 0x3F..=0xEE | 0xF0..=0xFF);
        b += 1;
    }
    t
};

/// Length in bytes of the XML Name at the start of `s` (0: none).
fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    // ASCII fast path, one table load per byte: almost every name in practice.
    let class = |b: &u8| ASCII_NAME.get(usize::from(*b)).copied().unwrap_or(0);
    let mut n = 0;
    if bytes.first().map(class) == Some(NAME_START) {
        n = 1 + bytes
            .get(1..)
            .unwrap_or(&[])
            .iter()
            .take_while(|b| class(b) != 0)
            .count();
    }
    if bytes.get(n).is_none_or(|b| b.is_ascii()) {
        return n;
    }
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            is_name_start(c)
        } else {
            is_name_char(c)
        };
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

pub struct Reader<'a> {
    src: &'a str,
    pos: usize,
    open: Vec<&'a str>,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    /// `src` is the whole document (BOM already removed).
    pub fn new(src: &'a str, max_depth: usize) -> Reader<'a> {
        Reader {
            src,
            pos: 0,
            open: Vec::with_capacity(8),
            max_depth,
        }
    }

    /// Number of open elements.
    pub fn depth(&self) -> usize {
        self.open.len()
    }

    pub fn next_token(&mut self) -> Result<Token<'a>, XmlError> {
        let bytes = self.src.as_bytes();
        let from = |n: usize| self.src.get(self.pos + n..).unwrap_or("");
        match (bytes.get(self.pos), bytes.get(self.pos + 1)) {
            (None, _) if !self.open.is_empty() => syntax("unexpected end of document", self.pos),
            (None, _) => Ok(Token::Eof),
            (Some(b'<'), Some(b'/')) => self.end_tag(from(2)),
            (Some(b'<'), Some(b'?')) => self.processing_instruction(from(2)),
            (Some(b'<'), Some(b'!')) => self.markup_declaration(from(2)),
            (Some(b'<'), _) => self.start_tag(from(1)),
            (Some(_), _) => self.text(from(0)),
        }
    }

    fn text(&mut self, rest: &'a str) -> Result<Token<'a>, XmlError> {
        let bytes = rest.as_bytes();
        let mut plain = true;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if is_plain_text(b) {
                i += 1;
                continue;
            }
            match b {
                b'<' => break,
                b'&' => {
                    plain = false;
                    i += check_reference(rest.get(i..).unwrap_or(""), self.pos + i)?;
                    continue;
                }
                b'\r' => plain = false,
                b'>' if i >= 2 && rest.get(i - 2..i) == Some("]]") => {
                    return syntax("']]>' in text", self.pos + i - 2)
                }
                _ => check_char_byte(bytes, i, self.pos)?,
            }
            i += 1;
        }
        let raw = rest.get(..i).unwrap_or("");
        self.pos += i;
        Ok(Token::Text(Text {
            raw,
            plain,
            cdata: false,
        }))
    }

    fn end_tag(&mut self, tag: &'a str) -> Result<Token<'a>, XmlError> {
        let at = self.pos;
        let Some(open) = self.open.pop() else {
            return syntax("end tag without a start tag", at);
        };
        // The open element's name was checked when it started: comparing bytes is enough, as
        // long as the name ends right there.
        let Some(after) = tag.strip_prefix(open) else {
            return syntax("end tag does not match the open element", at);
        };
        let b = after.as_bytes();
        let spaces = skip_spaces(b, 0);
        match b.get(spaces) {
            Some(b'>') => {}
            Some(&c) if spaces == 0 && class_is_name(c) => {
                return syntax("end tag does not match the open element", at)
            }
            _ => return syntax("malformed end tag", at),
        }
        // "</" + name + spaces + ">"
        self.pos += 2 + open.len() + spaces + 1;
        Ok(Token::End { name: open })
    }

    fn processing_instruction(&mut self, pi: &'a str) -> Result<Token<'a>, XmlError> {
        let at = self.pos;
        let Some(end) = pi.find("?>") else {
            return syntax("unterminated processing instruction", at);
        };
        let body = pi.get(..end).unwrap_or("");
        let n = name_len(body);
        let target = body.get(..n).unwrap_or("");
        let tail = body.get(n..).unwrap_or("");
        if n == 0 || !(tail.is_empty() || tail.starts_with(is_space_char)) {
            return syntax("processing instruction without a target", at);
        }
        self.pos += 2 + end + 2;
        if !target.eq_ignore_ascii_case("xml") {
            return Ok(Token::ProcessingInstruction);
        }
        if target != "xml" || at != 0 {
            return syntax("XML declaration not at the start of the document", at);
        }
        let attrs = self.attributes(tail, at + 5)?;
        let mut names = attrs.map(|(name, _)| name);
        if names.next() != Some("version") {
            return syntax("XML declaration without a version", at);
        }
        if names.any(|n| n != "encoding" && n != "standalone") {
            return syntax("unknown pseudo-attribute in the XML declaration", at);
        }
        Ok(Token::Decl(attrs))
    }

    fn markup_declaration(&mut self, decl: &'a str) -> Result<Token<'a>, XmlError> {
        let at = self.pos;
        if let Some(comment) = decl.strip_prefix("--") {
            let Some(end) = comment.find("--") else {
                return syntax("unterminated comment", at);
            };
            if !comment.get(end + 2..).unwrap_or("").starts_with('>') {
                return syntax("'--' inside a comment", at + 4 + end);
            }
            let body = comment.get(..end).unwrap_or("");
            check_chars(body, at + 4)?;
            self.pos += 4 + end + 3;
            return Ok(Token::Comment);
        }
        if let Some(cdata) = decl.strip_prefix("[CDATA[") {
            let Some(end) = cdata.find("]]>") else {
                return syntax("unterminated CDATA section", at);
            };
            let raw = cdata.get(..end).unwrap_or("");
            check_chars(raw, at + 9)?;
            self.pos += 9 + end + 3;
            return Ok(Token::CData(Text {
                raw,
                plain: !raw.contains('\r'),
                cdata: true,
            }));
        }
        if decl.starts_with("DOCTYPE") {
            return Ok(Token::Doctype);
        }
        syntax("unknown markup declaration", at)
    }

    fn start_tag(&mut self, tag: &'a str) -> Result<Token<'a>, XmlError> {
        let at = self.pos;
        let n = name_len(tag);
        if n == 0 {
            return syntax("'<' not followed by a name", at);
        }
        let name = tag.get(..n).unwrap_or("");
        let after = tag.get(n..).unwrap_or("");
        // Most tags have no attributes: `<name>` / `<name/>` skip the attribute scanner.
        let scanned = match after.as_bytes() {
            [b'>', ..] => Some((0, false)),
            [b'/', b'>', ..] => Some((0, true)),
            _ => scan_attributes(after, at + 1 + n)?,
        };
        let Some((attrs_len, empty)) = scanned else {
            return syntax("unterminated start tag", at);
        };
        let attrs = Attrs {
            raw: after.get(..attrs_len).unwrap_or(""),
        };
        // "<" + name + attributes + ("/>" | ">")
        self.pos += 1 + n + attrs_len + if empty { 2 } else { 1 };
        if !empty {
            if self.open.len() >= self.max_depth {
                return Err(XmlError::TooDeep);
            }
            self.open.push(name);
        }
        Ok(Token::Start { name, attrs, empty })
    }

    /// Pseudo-attributes of the XML declaration, checked like a tag's attributes.
    fn attributes(&self, s: &'a str, at: usize) -> Result<Attrs<'a>, XmlError> {
        let trimmed = s.trim_end_matches(is_space_char);
        // Reuse the tag scanner by giving it the terminator it expects.
        let mut owned = String::with_capacity(trimmed.len() + 1);
        owned.push_str(trimmed);
        owned.push('>');
        match scan_attributes(&owned, at)? {
            Some((len, false)) if len == trimmed.len() => Ok(Attrs { raw: trimmed }),
            _ => syntax("malformed XML declaration", at),
        }
    }
}

/// Scan a start tag after its name: attributes, then `>` or `/>`. Returns the length of the
/// attribute part and whether the tag is empty; `None` when the document ends first.
fn scan_attributes(s: &str, at: usize) -> Result<Option<(usize, bool)>, XmlError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut count = 0;
    loop {
        let after_spaces = skip_spaces(bytes, i);
        let spaced = after_spaces > i;
        i = after_spaces;
        let end = match bytes.get(i) {
            None => return Ok(None),
            Some(b'>') => Some((i, false)),
            Some(b'/') => match bytes.get(i + 1) {
                Some(b'>') => Some((i, true)),
                None => return Ok(None),
                Some(_) => return syntax("'/' not followed by '>' in a tag", at + i),
            },
            Some(_) => None,
        };
        if let Some((len, empty)) = end {
            if count > 1 {
                check_unique(s.get(..len).unwrap_or(""), at)?;
            }
            return Ok(Some((len, empty)));
        }
        if !spaced {
            return syntax("attributes must be separated by white space", at + i);
        }
        let rest = s.get(i..).unwrap_or("");
        let n = name_len(rest);
        if n == 0 {
            return syntax("malformed attribute name", at + i);
        }
        if count == MAX_ATTRIBUTES {
            return syntax("too many attributes on one element", at + i);
        }
        count += 1;
        i += n;
        i = skip_spaces(bytes, i);
        if bytes.get(i) != Some(&b'=') {
            return syntax("attribute without '='", at + i);
        }
        i += 1;
        i = skip_spaces(bytes, i);
        let quote = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            None => return Ok(None),
            Some(_) => return syntax("attribute value without quotes", at + i),
        };
        i += 1;
        loop {
            match bytes.get(i) {
                None => return Ok(None),
                Some(&b) if b == quote => break,
                Some(b'<') => return syntax("'<' in an attribute value", at + i),
                Some(b'&') => {
                    i += check_reference(s.get(i..).unwrap_or(""), at + i)?;
                    continue;
                }
                Some(_) => check_char_byte(bytes, i, at)?,
            }
            i += 1;
        }
        i += 1;
    }
}

/// Check the reference at the start of `s` (which begins with `&`); its length in bytes.
fn check_reference(s: &str, at: usize) -> Result<usize, XmlError> {
    let window = s.get(1..).unwrap_or("");
    let Some(end) = window
        .bytes()
        .take(MAX_REFERENCE + 1)
        .position(|b| b == b';')
    else {
        return syntax("'&' that does not start a reference", at);
    };
    let name = window.get(..end).unwrap_or("");
    if reference(name).is_some() {
        return Ok(end + 2);
    }
    if name.starts_with('#') {
        return syntax("invalid character reference", at);
    }
    if name.is_empty() || name_len(name) != name.len() {
        return syntax("'&' that does not start a reference", at);
    }
    Err(XmlError::UndefinedEntity(name.to_owned()))
}

/// Refuse an attribute that appears twice (quadratic, over at most `MAX_ATTRIBUTES`).
fn check_unique(raw: &str, at: usize) -> Result<(), XmlError> {
    let mut attrs = Attrs { raw };
    while let Some((name, _)) = attrs.next() {
        let mut later = attrs; // a copy: the outer walk goes on from here
        if later.any(|(other, _)| other == name) {
            return syntax("duplicate attribute", at);
        }
    }
    Ok(())
}

/// Refuse the raw characters XML does not allow: C0 controls other than tab, CR, LF, and the
/// non-characters U+FFFE and U+FFFF (`EF BF BE`, `EF BF BF`). Input is valid UTF-8.
fn check_char_byte(bytes: &[u8], i: usize, base: usize) -> Result<(), XmlError> {
    match bytes.get(i) {
        Some(&b) if b < 0x20 && !is_space(b) => syntax("control character", base + i),
        Some(0xEF)
            if bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) =>
        {
            syntax("non-character U+FFFE or U+FFFF", base + i)
        }
        _ => Ok(()),
    }
}

fn check_chars(s: &str, base: usize) -> Result<(), XmlError> {
    let bytes = s.as_bytes();
    (0..bytes.len()).try_for_each(|i| check_char_byte(bytes, i, base))
}

/// Split a QName into (prefix, local part); `None` when it is not a QName (XML Namespaces §4:
/// at most one colon, neither part empty).
pub fn split_qname(name: &str) -> Option<(&str, &str)> {
    let Some(colon) = name.bytes().position(|b| b == b':') else {
        return Some(("", name));
    };
    let (p, l) = (name.get(..colon)?, name.get(colon + 1..)?);
    let ok = !p.is_empty() && !l.is_empty() && !l.bytes().any(|b| b == b':');
    ok.then_some((p, l))
}
