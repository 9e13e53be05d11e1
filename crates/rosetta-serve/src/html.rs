//! `format=html`: translate the text between tags, keep the markup byte for byte.
//!
//! Hand-written rather than an HTML5 parser crate (html5ever and friends): those rebuild the document
//! from a tree and re-serialize it, which changes the markup (attribute quoting, implied tags); here
//! only text nodes change. Tags (with quoted attributes that may contain `>`), comments, and the
//! contents of `<script>` and `<style>` pass through untouched.

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
            let core = text.trim();
            if core.is_empty() {
                parts.push(Part::Keep(text.to_owned()));
                return;
            }
            let lead_len = text.len() - text.trim_start().len();
            let trail_start = lead_len + core.len();
            parts.push(Part::Translate {
                lead: text[..lead_len].to_owned(),
                text: decode_entities(core),
                trail: text[trail_start..].to_owned(),
            });
        };
        while let Some(offset) = html[pos..].find('<') {
            let lt = pos + offset;
            let next = html[lt + 1..].chars().next();
            // A `<` not followed by a tag name, `/` or `!` is text (e.g. "a < b").
            if !matches!(next, Some(c) if c.is_ascii_alphabetic() || c == '/' || c == '!') {
                pos = lt + 1;
                continue;
            }
            push_text(&mut parts, &html[text_start..lt]);
            let end = if html[lt..].starts_with("<!--") {
                html[lt + 4..]
                    .find("-->")
                    .map_or(html.len(), |e| lt + 4 + e + 3)
            } else {
                tag_end(html, lt)
            };
            let tag = &html[lt..end];
            let name = tag_name(tag);
            let end = if (name == "script" || name == "style") && !tag.ends_with("/>") {
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

/// Decodes the character references a text node commonly holds.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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
            HtmlDoc::parse("x &amp; &#228; &#xe4;").texts(),
            vec!["x & ä ä"]
        );
    }
}
