//! The XML layer for the two documents the plugin reads: the Outbound Message and the license
//! server's replies. quick-xml tokenizes (borrowed events from the body, no copies); this module
//! adds the XML 1.0 rules quick-xml leaves to its caller and hands out [`Token`]s whose names
//! and values borrow from the document.
//!
//! quick-xml refuses: unclosed or mismatched tags, malformed markup and attributes, duplicate
//! attributes, a `&` without `;`, `--` in a comment (with `check_comments`), undefined entities
//! in attribute values. On top of its events, this module refuses: names that are not XML
//! names, `<` in attribute values, references to undefined entities or to characters XML does
//! not allow, control characters and U+FFFE/U+FFFF anywhere, `]]>` in text, a misplaced or
//! malformed XML declaration, more than [`MAX_ATTRIBUTES`] attributes on one element and more
//! than `max_depth` open elements. DOCTYPE and processing instructions come out as tokens so
//! the caller refuses them in its own words; no entity is ever expanded beyond the predefined
//! five. Namespaces are the caller's (it knows the three it cares about).

use std::borrow::Cow;
use std::fmt;

use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::{Attribute, Attributes};
use quick_xml::events::{BytesRef, Event};
use quick_xml::name::QName;
use quick_xml::XmlVersion;

/// Attributes accepted on one element: a bound on quick-xml's duplicate check, which is
/// quadratic below its own threshold.
pub const MAX_ATTRIBUTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed; the byte offset is into the document given to the reader.
    Syntax { what: Cow<'static, str>, at: usize },
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

fn syntax<T>(what: impl Into<Cow<'static, str>>, at: usize) -> Result<T, XmlError> {
    Err(XmlError::Syntax {
        what: what.into(),
        at,
    })
}

#[derive(Debug, Clone)]
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
    /// Character data between tags: one run of text and references, resolved, line ends
    /// normalised (XML 1.0 §2.11).
    Text(Text<'a>),
    /// The content of a CDATA section, taken literally (line ends normalised).
    CData(Text<'a>),
    Eof,
}

/// Character data, borrowed from the document when it needed no resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a> {
    content: Cow<'a, str>,
}

impl<'a> Text<'a> {
    pub fn is_whitespace(&self) -> bool {
        self.content.bytes().all(is_space)
    }

    pub fn content(self) -> Cow<'a, str> {
        self.content
    }
}

/// The attributes of a start tag or declaration, checked and collected as the tag was read
/// (one walk over them): iterating cannot fail.
#[derive(Debug, Clone, Default)]
pub struct Attrs<'a> {
    list: std::vec::IntoIter<(&'a str, AttrValue<'a>)>,
}

impl Attrs<'_> {
    pub fn is_empty(&self) -> bool {
        self.list.len() == 0
    }
}

impl<'a> Iterator for Attrs<'a> {
    /// (qualified name, value).
    type Item = (&'a str, AttrValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.list.next()
    }
}

/// An attribute's value as written between the quotes.
#[derive(Debug, Clone, Copy)]
pub struct AttrValue<'a> {
    raw: &'a str,
}

impl<'a> AttrValue<'a> {
    /// The normalised value (XML 1.0 §3.3.3: references resolved, each white-space character
    /// becomes a space). Checked when the tag was read, so it cannot fail here.
    pub fn value(&self) -> Cow<'a, str> {
        if !self
            .raw
            .bytes()
            .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'))
        {
            return Cow::Borrowed(self.raw);
        }
        normalize_value(self.raw).unwrap_or(Cow::Borrowed(""))
    }
}

/// XML 1.0 `Char`.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
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

/// Is `s` an XML `Name` (quick-xml takes whatever stands before white space or `>`)?
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    // ASCII names (almost all of them): one table load per byte, in one pass.
    match b.first() {
        Some(&c) if c.is_ascii() && ascii_class(c) != NAME_START => return false,
        Some(&c) if c.is_ascii() => {}
        _ => return is_unicode_name(s),
    }
    for &c in b.get(1..).unwrap_or(&[]) {
        if !c.is_ascii() {
            return is_unicode_name(s);
        }
        if ascii_class(c) == 0 {
            return false;
        }
    }
    true
}

fn is_unicode_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
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

fn ascii_class(b: u8) -> u8 {
    ASCII_NAME.get(usize::from(b)).copied().unwrap_or(0)
}

/// Bytes of text that need no second look: not a control character other than tab, LF;
/// not CR (line ends to normalise); not `>` (for `]]>`); not `EF` (the lead byte of U+FFFE and
/// U+FFFF). So one pass tells both whether the text is allowed and whether it needs a copy.
const PLAIN_TEXT: [bool; 256] = plain_table(b'>', b'\r');
/// Bytes of an attribute value that need no second look: as in text, but `<` and `&` instead
/// of `>` and CR, so one pass over the value finds everything to check.
const PLAIN_VALUE: [bool; 256] = plain_table(b'<', b'&');

#[allow(clippy::indexing_slicing)] // const evaluation: out of range fails the build
const fn plain_table(not_a: u8, not_b: u8) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = matches!(c, b'\t' | b'\n' | b'\r' | 0x20..=0xEE | 0xF0..=0xFF)
            && c != not_a
            && c != not_b;
        b += 1;
    }
    t
}

/// What [`check_chars`] found that its caller still has to deal with.
#[derive(Clone, Copy, Default)]
struct Found {
    /// A `&` (attribute values: references to check).
    reference: bool,
    /// A CR (text and CDATA: line ends to normalise, XML 1.0 §2.11).
    carriage_return: bool,
}

/// What a text or attribute value may not contain.
#[derive(Clone, Copy, PartialEq)]
enum Chars {
    /// Text: also no `]]>`.
    Text,
    /// An attribute value: also no `<`; references are checked by the caller.
    Value,
    /// CDATA and comments: characters only.
    Raw,
}

/// Refuse the raw characters XML does not allow: C0 controls other than tab, CR, LF, and the
/// non-characters U+FFFE and U+FFFF (`EF BF BE`, `EF BF BF`), and what `kind` forbids besides.
/// Says whether `s` holds a reference or a CR.
fn check_chars(s: &str, base: usize, kind: Chars) -> Result<Found, XmlError> {
    let b = s.as_bytes();
    let table = if kind == Chars::Value {
        &PLAIN_VALUE
    } else {
        &PLAIN_TEXT
    };
    let mut found = Found::default();
    if b.iter().all(|&c| table.get(usize::from(c)) == Some(&true)) {
        return Ok(found);
    }
    for (i, &c) in b.iter().enumerate() {
        match c {
            0xEF if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) => {
                return syntax("non-character U+FFFE or U+FFFF", base + i)
            }
            b'>' if kind == Chars::Text && i >= 2 && b.get(i - 2..i) == Some(b"]]") => {
                return syntax("']]>' in text", base + i - 2)
            }
            b'<' if kind == Chars::Value => return syntax("'<' in an attribute value", base),
            b'&' => found.reference = true,
            b'\r' => found.carriage_return = true,
            b'\t' | b'\n' => {}
            0..0x20 => return syntax("control character", base + i),
            _ => {}
        }
    }
    Ok(found)
}

/// The character a general reference (`&name;`, name without `&` and `;`) stands for.
fn resolve_reference(r: &BytesRef<'_>, at: usize) -> Result<char, XmlError> {
    let name: &str = r;
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            _ => syntax("invalid character reference", at),
        };
    }
    Ok(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ if is_name(name) => return Err(XmlError::UndefinedEntity(name.to_owned())),
        _ => return syntax("'&' that does not start a reference", at),
    })
}

/// Check a tag's attributes once: count, names, values (references, characters, no `<`),
/// white space between them, duplicates. Most values hold no reference: their raw bytes are
/// all there is to check, without normalising them.
fn check_attributes<'a>(buf: &'a str, name_len: usize, at: usize) -> Result<Attrs<'a>, XmlError> {
    let mut list: Vec<(&'a str, AttrValue<'a>)> = Vec::new();
    let mut attrs = Attributes::new(buf, name_len);
    attrs.with_checks(false);
    for a in attrs {
        let a = a.map_err(|e| XmlError::Syntax {
            what: format!("malformed attribute: {e}").into(),
            at,
        })?;
        let name = a.key.0;
        if !is_name(name) {
            return syntax("malformed attribute name", at);
        }
        if list.len() == MAX_ATTRIBUTES {
            return syntax("too many attributes on one element", at);
        }
        // Duplicates among at most MAX_ATTRIBUTES names: a quadratic scan of the list beats
        // quick-xml's check (a second heap-allocated list per tag) at these sizes.
        if list.iter().any(|(seen, _)| *seen == name) {
            return syntax("duplicate attribute", at);
        }
        let Cow::Borrowed(raw) = a.value else {
            return syntax("malformed attribute", at); // never: `buf` is borrowed
        };
        if check_chars(raw, at, Chars::Value)?.reference {
            check_references(raw, at)?;
        }
        // quick-xml reads `x='1'y='2'` as two attributes; XML wants white space between them.
        // The raw value is a slice of `buf`: what follows its closing quote is at hand.
        let end = (raw.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize) + raw.len() + 1;
        if buf.as_bytes().get(end).is_some_and(|&b| !is_space(b)) {
            return syntax("attributes must be separated by white space", at);
        }
        list.push((name, AttrValue { raw }));
    }
    Ok(Attrs {
        list: list.into_iter(),
    })
}

/// quick-xml's attribute-value normalisation (references resolved, white space to spaces).
fn normalize_value(raw: &str) -> quick_xml::Result<Cow<'_, str>> {
    let attr = Attribute {
        key: QName(""),
        value: Cow::Borrowed(raw),
    };
    attr.normalized_value(XmlVersion::Implicit1_0)
}

/// The references in an attribute value: defined, and to characters XML allows.
fn check_references(raw: &str, at: usize) -> Result<(), XmlError> {
    let value = normalize_value(raw).map_err(|e| match e {
        quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) if is_name(&name) => {
            XmlError::UndefinedEntity(name)
        }
        quick_xml::Error::Escape(EscapeError::InvalidCharRef(_)) => XmlError::Syntax {
            what: "invalid character reference".into(),
            at,
        },
        _ => XmlError::Syntax {
            what: "'&' that does not start a reference".into(),
            at,
        },
    })?;
    if value.chars().any(|c| !is_xml_char(c)) {
        return syntax("invalid character reference", at);
    }
    Ok(())
}

pub struct Reader<'a> {
    src: &'a str,
    inner: quick_xml::Reader<&'a [u8]>,
    depth: usize,
    max_depth: usize,
    /// Element names already found to be XML names: a message repeats a handful of them
    /// hundreds of times, and comparing is cheaper than checking again.
    known_names: [&'a str; 8],
    next_known: usize,
    /// Replies from the license server: an XML declaration inside content (QLM nests a whole
    /// document, declaration included, in `ValidateLicenseHttp`'s `<productProperties>`) is
    /// read as a processing instruction instead of refused.
    inner_declarations: bool,
}

impl<'a> Reader<'a> {
    /// `src` is the whole document (BOM already removed).
    pub fn new(src: &'a str, max_depth: usize) -> Reader<'a> {
        let mut inner = quick_xml::Reader::from_str(src);
        let config = inner.config_mut();
        config.check_comments = true;
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Reader {
            src,
            inner,
            depth: 0,
            max_depth,
            known_names: [""; 8],
            next_known: 0,
            inner_declarations: false,
        }
    }

    /// A reader for a reply from an upstream we do not own: every rule of [`Reader::new`]
    /// (size is the caller's, depth, no DTD, no entity beyond the five, well-formed markup),
    /// except that an XML declaration inside content is a processing instruction, as QLM's
    /// documented `ValidateLicenseHttp` output has one.
    pub fn for_reply(src: &'a str, max_depth: usize) -> Reader<'a> {
        let mut reader = Reader::new(src, max_depth);
        reader.inner_declarations = true;
        reader
    }

    /// Number of open elements.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn position(&self) -> usize {
        usize::try_from(self.inner.buffer_position()).unwrap_or(usize::MAX)
    }

    fn read(&mut self) -> Result<(Event<'a>, usize), XmlError> {
        let at = self.position();
        match self.inner.read_event() {
            Ok(event) => Ok((event, at)),
            Err(e) => {
                let at = usize::try_from(self.inner.error_position()).unwrap_or(at);
                syntax(e.to_string(), at)
            }
        }
    }

    /// The document between `from` and the reader's position, less `trim` bytes at each end.
    fn span(&self, from: usize, trim_start: usize, trim_end: usize) -> &'a str {
        let to = self.position().saturating_sub(trim_end);
        self.src.get(from + trim_start..to).unwrap_or("")
    }

    pub fn next_token(&mut self) -> Result<Token<'a>, XmlError> {
        let (event, at) = self.read()?;
        match event {
            Event::Eof if self.depth > 0 => syntax("unexpected end of document", at),
            Event::Eof => Ok(Token::Eof),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name_len = e.name().0.len();
                // "<" name attributes (">" | "/>")
                let tag = self.span(at, 1, if empty { 2 } else { 1 });
                self.start_tag(tag, name_len, at, empty)
            }
            Event::End(e) => {
                self.depth = self.depth.saturating_sub(1);
                let len = e.name().0.len();
                let name = self.src.get(at + 2..at + 2 + len).unwrap_or("");
                Ok(Token::End { name })
            }
            Event::Text(_) | Event::GeneralRef(_) => self.text(event, at),
            Event::CData(c) => {
                let raw = c.xml10_content();
                check_chars(&raw, at + 9, Chars::Raw)?;
                Ok(Token::CData(Text { content: raw }))
            }
            Event::Comment(c) => {
                check_chars(&c, at + 4, Chars::Raw)?;
                Ok(Token::Comment)
            }
            Event::DocType(_) => Ok(Token::Doctype),
            Event::PI(pi) => {
                let target = pi.target();
                if !is_name(target) {
                    return syntax("processing instruction without a target", at);
                }
                if target.eq_ignore_ascii_case("xml") && !self.inner_declarations {
                    return syntax("XML declaration not at the start of the document", at);
                }
                Ok(Token::ProcessingInstruction)
            }
            Event::Decl(_) => self.declaration(at),
        }
    }

    fn start_tag(
        &mut self,
        tag: &'a str,
        name_len: usize,
        at: usize,
        empty: bool,
    ) -> Result<Token<'a>, XmlError> {
        let name = tag.get(..name_len).unwrap_or("");
        // The cache starts with empty slots: an empty name is never taken from it.
        if name.is_empty() || !self.known_names.contains(&name) {
            if !is_name(name) {
                return syntax("malformed element name", at);
            }
            if let Some(slot) = self.known_names.get_mut(self.next_known % 8) {
                *slot = name;
            }
            self.next_known = self.next_known.wrapping_add(1);
        }
        // Most tags have none: `<name>` / `<name/>` skip the attribute walk.
        let attrs = match tag.get(name_len..) {
            Some(rest) if !rest.bytes().all(is_space) => check_attributes(tag, name_len, at)?,
            _ => Attrs::default(),
        };
        if !empty {
            if self.depth >= self.max_depth {
                return Err(XmlError::TooDeep);
            }
            self.depth += 1;
        }
        Ok(Token::Start { name, attrs, empty })
    }

    /// One run of character data: quick-xml splits it at every reference; the caller gets it
    /// whole, borrowed when it is a single plain piece. The byte after each piece tells whether
    /// the run goes on (text or a reference) or markup follows, so nothing is read ahead.
    fn text(&mut self, first: Event<'a>, at: usize) -> Result<Token<'a>, XmlError> {
        let mut content: Cow<'a, str> = Cow::Borrowed("");
        let (mut event, mut piece_at) = (first, at);
        loop {
            match event {
                Event::Text(t) => {
                    // Checked as written; only a CR makes quick-xml normalise (and copy) it.
                    let raw = if check_chars(&t, piece_at, Chars::Text)?.carriage_return {
                        t.xml10_content()
                    } else {
                        t.into_inner()
                    };
                    if content.is_empty() {
                        content = raw;
                    } else {
                        content.to_mut().push_str(&raw);
                    }
                }
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r, piece_at)?;
                    content.to_mut().push(c);
                }
                _ => return syntax("unexpected event in text", piece_at),
            }
            if matches!(self.src.as_bytes().get(self.position()), None | Some(b'<')) {
                break;
            }
            (event, piece_at) = self.read()?;
        }
        Ok(Token::Text(Text { content }))
    }

    /// `<?xml …?>`: only at the very start, `version` first, then `encoding`, `standalone`.
    fn declaration(&mut self, at: usize) -> Result<Token<'a>, XmlError> {
        if at != 0 && self.inner_declarations {
            return Ok(Token::ProcessingInstruction);
        }
        if at != 0 {
            return syntax("XML declaration not at the start of the document", at);
        }
        // "<?" "xml" pseudo-attributes "?>"
        let body = self.span(at, 2, 2);
        if !body.starts_with("xml") {
            return syntax("XML declaration not at the start of the document", at);
        }
        let attrs = check_attributes(body, 3, at)?;
        let mut names = attrs.clone().map(|(name, _)| name);
        if names.next() != Some("version") {
            return syntax("XML declaration without a version", at);
        }
        if names.any(|n| n != "encoding" && n != "standalone") {
            return syntax("unknown pseudo-attribute in the XML declaration", at);
        }
        Ok(Token::Decl(attrs))
    }
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
