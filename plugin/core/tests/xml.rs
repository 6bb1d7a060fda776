//! The XML reader on its own: tokens, well-formedness, bounds. Runs natively and, compiled to
//! wasm32-unknown-unknown, under Node with wasm-bindgen-test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Under Node through wasm-bindgen on wasm32-unknown-unknown; plain libtest natively and on
// wasm32-wasip1 (under Node's WASI: scripts/run-wasi.mjs).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use keygate_core::xml::{split_qname, Reader, Token, XmlError, MAX_ATTRIBUTES};

fn tokens(doc: &str) -> Result<Vec<String>, XmlError> {
    let mut r = Reader::new(doc, 16);
    let mut out = Vec::new();
    loop {
        let t = r.next_token()?;
        out.push(match t {
            Token::Eof => break,
            Token::Decl(_) => "decl".into(),
            Token::ProcessingInstruction => "pi".into(),
            Token::Doctype => "doctype".into(),
            Token::Comment => "comment".into(),
            Token::Start { name, attrs, empty } => {
                let a: Vec<String> = attrs.map(|(n, v)| format!("{n}={}", v.value())).collect();
                format!(
                    "<{name}{}{}>",
                    if a.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", a.join(" "))
                    },
                    if empty { "/" } else { "" }
                )
            }
            Token::End { name } => format!("</{name}>"),
            Token::Text(t) | Token::CData(t) => format!("{:?}", t.content()),
        });
    }
    Ok(out)
}

#[test]
fn reads_elements_attributes_and_text() {
    let t = tokens("<?xml version=\"1.0\" encoding='UTF-8'?><a x='1' y = \"a&amp;b\tc\"><b/>t&#65;&#x42;&lt;<![CDATA[<&>]]></a>").unwrap();
    assert_eq!(
        t,
        [
            "decl",
            "<a x=1 y=a&b c>",
            "<b/>",
            "\"tAB<\"",
            "\"<&>\"",
            "</a>"
        ]
    );
}

#[test]
fn normalises_line_ends() {
    let t = tokens("<a b='x\r\ny'>1\r\n2\r3</a>").unwrap();
    assert_eq!(t, ["<a b=x y>", "\"1\\n2\\n3\"", "</a>"]);
    // A run split at a reference is normalised piece by piece; a lone CR at a piece's end too.
    let t = tokens("<a>1\r&amp;\r\n2\r</a>").unwrap();
    assert_eq!(t, ["<a>", "\"1\\n&\\n2\\n\"", "</a>"]);
    // CDATA too, taken literally otherwise.
    let t = tokens("<a><![CDATA[1\r\n<&>\r]]></a>").unwrap();
    assert_eq!(t, ["<a>", "\"1\\n<&>\\n\"", "</a>"]);
}

#[test]
fn refuses_what_is_not_well_formed() {
    for doc in [
        "<a>",
        "<a></b>",
        "</a>",
        "<a x='1' x='2'/>",
        "<a x='1'y='2'/>",
        "<a x=1/>",
        "<a x='<'/>",
        "<a>&#0;</a>",
        "<a>&#xFFFE;</a>",
        "<a>&</a>",
        "<a>&amp</a>",
        "<a>\u{1}</a>",
        // A CR sends the text down the slow path: the checks still run there.
        "<a>\r\u{1}</a>",
        "<a>\r]]></a>",
        "<a>\r\u{FFFF}</a>",
        "<a><![CDATA[\r\u{1}]]></a>",
        "<a>\u{FFFF}</a>",
        "<a>]]></a>",
        "<!-- a -- b --><a/>",
        "<a/><?xml version='1.0'?>",
        "<?xml encoding='UTF-8'?><a/>",
        "<1a/>",
        "<a",
        "<a x='1'",
        "<!x>",
        "<a><![CDATA[x</a>",
        "<a/ >",
        "<?XML version='1.0'?><a/>",
        "< a/>",
        "<>",
        "<a>< a/></a>",
        "<a><b/><b/><b-/><-b/></a>",
    ] {
        assert!(tokens(doc).is_err(), "accepted {doc:?}");
    }
    assert_eq!(
        tokens("<a>&ent;</a>"),
        Err(XmlError::UndefinedEntity("ent".into()))
    );
}

#[test]
fn bounds_depth() {
    let deep = "<a>".repeat(17);
    assert_eq!(tokens(&deep), Err(XmlError::TooDeep));
    assert!(tokens(&format!("{}{}", "<a>".repeat(16), "</a>".repeat(16))).is_ok());
}

#[test]
fn bounds_attributes() {
    let many: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}='1'")).collect();
    assert!(tokens(&format!("<a{many}/>")).is_err());
}

#[test]
fn accepts_non_ascii_names_and_splits_qnames() {
    assert_eq!(tokens("<é:ü/>").unwrap(), ["<é:ü/>"]);
    assert_eq!(split_qname("sf:Id"), Some(("sf", "Id")));
    assert_eq!(split_qname("Id"), Some(("", "Id")));
    for bad in ["sf:", ":Id", "a:b:c"] {
        assert_eq!(split_qname(bad), None, "{bad}");
    }
}
