//! `format=html`: translate the text between tags, keep the markup byte for byte.
//!
//! Hand-written rather than an HTML5 parser crate (html5ever and friends): those rebuild the document
//! from a tree and re-serialize it, which changes the markup (attribute quoting, implied tags); here
//! only text nodes change. Tags (with quoted attributes that may contain `>`), comments, processing
//! instructions (`<?xml …?>`), and the contents of `<script>` and `<style>` pass through untouched.
//! A text node's character references (all of HTML5's named ones, and numeric ones) are decoded
//! before it is translated; its leading and trailing whitespace, `&nbsp;` included, is kept aside.

/// A document split into markup, kept, and text, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct HtmlDoc {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Keep(String),
    /// Text with its surrounding whitespace kept aside, entities decoded.
    Translate {
        lead: String,
        text: String,
        trail: String,
    },
}

/// End of the tag starting at `start` (index after its `>`), honouring quoted attribute values.
fn tag_end(s: &str, start: usize) -> usize {
    let mut quote: Option<u8> = None;
    for (i, &b) in s.as_bytes().iter().enumerate().skip(start + 1) {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// The element name of a start tag `<name …>`, lowercased.
fn tag_name(tag: &str) -> String {
    tag.trim_start_matches('<')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Finds `needle` (ASCII) case-insensitively from `from`.
fn find_ci(s: &str, needle: &str, from: usize) -> Option<usize> {
    let hay = s.as_bytes();
    let n = needle.as_bytes();
    (from..hay.len().saturating_sub(n.len() - 1))
        .find(|&i| hay[i..i + n.len()].eq_ignore_ascii_case(n))
}

impl HtmlDoc {
    /// Splits a document.
    pub fn parse(html: &str) -> Self {
        let mut parts = Vec::new();
        let mut pos = 0;
        let mut text_start = 0;
        let push_text = |parts: &mut Vec<Part>, text: &str| {
            if text.is_empty() {
                return;
            }
            // Decoded first, so that an encoded space (`&nbsp;`, `&#160;`) counts as whitespace:
            // sent to the model, it would be normalized away and the space lost.
            let decoded = decode_entities(text);
            let core = decoded.trim();
            if core.is_empty() {
                parts.push(Part::Keep(text.to_owned()));
                return;
            }
            let lead_len = decoded.len() - decoded.trim_start().len();
            let trail_start = lead_len + core.len();
            parts.push(Part::Translate {
                lead: escape_space(&decoded[..lead_len]),
                text: core.to_owned(),
                trail: escape_space(&decoded[trail_start..]),
            });
        };
        while let Some(offset) = html[pos..].find('<') {
            let lt = pos + offset;
            let next = html[lt + 1..].chars().next();
            // A `<` not followed by a tag name, `/`, `!` or `?` is text (e.g. "a < b").
            if !matches!(next, Some(c) if c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?')) {
                pos = lt + 1;
                continue;
            }
            push_text(&mut parts, &html[text_start..lt]);
            let end = if let Some(rest) = html[lt..].strip_prefix("<!--") {
                // `<!-->` and `<!--->` are complete (empty) comments in HTML5.
                if rest.starts_with('>') {
                    lt + 5
                } else if rest.starts_with("->") {
                    lt + 6
                } else {
                    rest.find("-->").map_or(html.len(), |e| lt + 4 + e + 3)
                }
            } else if next == Some('?') {
                // A processing instruction (`<?xml …?>`): HTML5 reads it as a comment ending at
                // the first `>`.
                html[lt..].find('>').map_or(html.len(), |e| lt + e + 1)
            } else {
                tag_end(html, lt)
            };
            let tag = &html[lt..end];
            let name = tag_name(tag);
            // HTML5 ignores `/>` on these: `<script … />` still opens raw text. (A closing tag has
            // no name here: `tag_name` stops at its `/`.)
            let end = if name == "script" || name == "style" {
                // Raw text up to the closing tag stays as it is.
                match find_ci(html, &format!("</{name}"), end) {
                    Some(close) => tag_end(html, close),
                    None => html.len(),
                }
            } else {
                end
            };
            parts.push(Part::Keep(html[lt..end].to_owned()));
            pos = end;
            text_start = end;
        }
        push_text(&mut parts, &html[text_start..]);
        HtmlDoc { parts }
    }

    /// The texts to translate, in document order.
    pub fn texts(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Translate { text, .. } => Some(text.as_str()),
                Part::Keep(_) => None,
            })
            .collect()
    }

    /// The document with its texts replaced by `translations` (one per [`HtmlDoc::texts`] entry,
    /// escaped for HTML).
    pub fn render(&self, translations: &[String]) -> String {
        let mut out = String::new();
        let mut next = translations.iter();
        for part in &self.parts {
            match part {
                Part::Keep(s) => out.push_str(s),
                Part::Translate { lead, trail, .. } => {
                    out.push_str(lead);
                    out.push_str(&escape(next.next().map_or("", String::as_str)));
                    out.push_str(trail);
                }
            }
        }
        out
    }
}

/// The text of a named character reference (`&name;`, with both delimiters), from HTML5's list.
fn named_entity(reference: &str) -> Option<&'static str> {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<&'static str, &'static str>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            entities::ENTITIES
                .iter()
                // The legacy forms without `;` (`&amp`, `&uuml`) are left as text.
                .filter(|e| e.entity.ends_with(';'))
                .map(|e| (e.entity, e.characters))
                .collect()
        })
        .get(reference)
        .copied()
}

/// The longest named reference, `&CounterClockwiseContourIntegral;`, is 33 bytes.
const LONGEST_REFERENCE: usize = 40;

/// Decodes a text node's character references: HTML5's named ones and numeric ones (`&#228;`,
/// `&#xe4;`); anything else stays as written.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Only the first bytes can hold the `;` (and a text of many `&` stays linear).
        let window = &rest.as_bytes()[..rest.len().min(LONGEST_REFERENCE + 1)];
        let decoded = window.iter().position(|&b| b == b';').and_then(|semi| {
            let reference = &rest[..=semi];
            match reference[1..semi].strip_prefix('#') {
                Some(number) => {
                    let (digits, radix) = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => (hex, 16),
                        None => (number, 10),
                    };
                    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                        return None;
                    }
                    // As HTML5 reads them: NUL, surrogates and numbers past U+10FFFF are U+FFFD.
                    let c = u32::from_str_radix(digits, radix)
                        .ok()
                        .and_then(char::from_u32)
                        .filter(|&c| c != '\0')
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    out.push(c);
                }
                None => out.push_str(named_entity(reference)?),
            }
            Some(semi + 1)
        });
        match decoded {
            Some(len) => rest = &rest[len..],
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whitespace kept beside a text node, written back: a no-break space as `&nbsp;`, as such
/// documents usually write it, the rest as it is.
fn escape_space(s: &str) -> String {
    s.replace('\u{a0}', "&nbsp;")
}

/// Escapes text for an HTML text node.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_kept_and_text_nodes_are_translated() {
        let html = "<p class=\"a>b\">Hallo <b>Welt</b>!</p>\n<!-- Kommentar --><script>var x = '<b>';</script> a &lt; b ";
        let doc = HtmlDoc::parse(html);
        assert_eq!(doc.texts(), vec!["Hallo", "Welt", "!", "a < b"]);
        let out = doc.render(&["Hello".into(), "world".into(), "!".into(), "a < b".into()]);
        assert_eq!(
            out,
            "<p class=\"a>b\">Hello <b>world</b>!</p>\n<!-- Kommentar --><script>var x = '<b>';</script> a &lt; b "
        );
    }

    #[test]
    fn plain_text_and_unclosed_markup_do_not_panic() {
        for s in [
            "",
            "no tags",
            "<",
            "a <b",
            "<!-- open",
            "<script>x",
            "&",
            "&#xZZ;",
            "&#99999999;",
            "ü<p>ö",
        ] {
            let doc = HtmlDoc::parse(s);
            let texts: Vec<String> = doc.texts().iter().map(|t| t.to_string()).collect();
            let _ = doc.render(&texts);
        }
        assert_eq!(
            HtmlDoc::parse("x &amp; &#228; &#xe4; &#0; &#xD800; &#99999999999; &#x; &#12a;")
                .texts(),
            vec!["x & ä ä \u{fffd} \u{fffd} \u{fffd} &#x; &#12a;"]
        );
    }

    #[test]
    fn html5_named_references_are_decoded_and_written_back_once() {
        let doc = HtmlDoc::parse("<p>Gr&uuml;&szlig;e &mdash; &copy; 2024 &foo; &amp</p>");
        assert_eq!(doc.texts(), vec!["Grüße — © 2024 &foo; &amp"]);
        // What comes back is escaped once: the unknown reference and the bare `&` were text.
        let out = doc.render(&["Grüße — © 2024 &foo; &amp".into()]);
        assert_eq!(out, "<p>Grüße — © 2024 &amp;foo; &amp;amp</p>");
        assert_eq!(
            HtmlDoc::parse("&CounterClockwiseContourIntegral; &NotNestedGreaterGreater;").texts(),
            vec!["\u{2233} \u{2aa2}\u{338}"]
        );
    }

    /// An encoded space beside or as a text node used to be sent to the model, normalized away,
    /// and lost from the document.
    #[test]
    fn regression_encoded_spaces_beside_text_were_lost() {
        let doc = HtmlDoc::parse("<td>&nbsp;</td><b>Preis:</b>&nbsp;10&#160;€ &#32;");
        assert_eq!(doc.texts(), vec!["Preis:", "10\u{a0}€"]);
        let out = doc.render(&["Price:".into(), "10\u{a0}€".into()]);
        assert_eq!(out, "<td>&nbsp;</td><b>Price:</b>&nbsp;10\u{a0}€  ");
    }

    #[test]
    fn processing_instructions_empty_comments_and_self_closed_scripts_are_markup() {
        let doc = HtmlDoc::parse(
            "<?xml version=\"1.0\"?><p>Hallo</p><!-->Welt<!--->!<script src=a.js/>if (a<b) x()</script>Ende",
        );
        assert_eq!(doc.texts(), vec!["Hallo", "Welt", "!", "Ende"]);
        let out = doc.render(&["Hello".into(), "world".into(), "!".into(), "End".into()]);
        assert_eq!(
            out,
            "<?xml version=\"1.0\"?><p>Hello</p><!-->world<!--->!<script src=a.js/>if (a<b) x()</script>End"
        );
    }
}
