//! The page: one self-contained HTML file (inline CSS and SVG, images as `data:` URIs, no
//! script and no network), its sections in order, and the machine-readable data block
//! `<script type="application/json" id="report-data">` a test or a lab's tool can parse.

use serde_json::Value;
use std::fmt::Write;

/// One section of the page.
pub(super) struct Section {
    /// Anchor id (`summary`, `pet`, `meg`, `us`).
    pub id: &'static str,
    /// Heading.
    pub title: String,
    /// Body (already escaped HTML).
    pub html: String,
}

/// `text` with the HTML special characters escaped.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure: inline SVG with its caption (`caption` is HTML), named by `id` so a test can
/// find it (`data-figure`).
pub(super) fn figure(id: &str, svg: &str, caption: &str) -> String {
    format!(
        "<figure class=\"fig\" data-figure=\"{}\">{svg}<figcaption>{caption}</figcaption></figure>",
        escape(id)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em auto;max-width:1400px;color:#222}\
h1{font-size:1.5em}h2{border-bottom:1px solid #aaa;margin-top:2em}\
table.data{border-collapse:collapse;margin:0.5em 0}\
table.data td,table.data th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
table.data td:first-child,table.data th:first-child{text-align:left}\
table.kv td{text-align:left}\
.figs{display:flex;flex-wrap:wrap;gap:12px}\
figure.fig{margin:0;border:1px solid #ddd;padding:4px;background:#fff}\
figure.fig svg{display:block}figcaption{font-size:0.85em;max-width:640px}\
.bad{color:#b00;font-weight:bold}.ok{color:#070}\
nav a{margin-right:1em}";

/// The whole page: `title`, a navigation line, the sections, and `data` as JSON.
pub(super) fn page(title: &str, sections: &[Section], data: &Value) -> String {
    let mut out = String::with_capacity(1 << 20);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<nav>",
        escape(title),
        escape(title)
    );
    for s in sections {
        let _ = write!(out, "<a href=\"#{}\">{}</a>", s.id, escape(&s.title));
    }
    out.push_str("</nav>\n");
    for s in sections {
        let _ = write!(
            out,
            "<section id=\"{}\"><h2>{}</h2>\n{}\n</section>\n",
            s.id,
            escape(&s.title),
            s.html
        );
    }
    // JSON inside a script element: "</" would end it early.
    let json = serde_json::to_string(data)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"report-data\">{json}</script>\n</body></html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_block_cannot_close_its_script_element() {
        let data = serde_json::json!({"source": "a</script><b>"});
        let html = page("run", &[], &data);
        let start = html.find("id=\"report-data\">").unwrap();
        let body = &html[start..];
        assert_eq!(body.matches("</script>").count(), 1);
        assert!(body.contains("a<\\/script><b>"));
        // And the JSON still parses to the same value.
        let json = &body["id=\"report-data\">".len()..body.find("</script>").unwrap()];
        let back: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
