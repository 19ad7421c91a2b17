//! The report's HTML pieces: escaping, tables of typed cells, shell words for the commands the
//! page suggests, and how times and durations read. Every text reaching the page goes through
//! `esc` here or in the charts.

use std::fmt::Write as _;
use std::time::Duration;

use dataflows::low_stock::LowState;
use dataflows::model::Millis;

use crate::io::format::rfc3339;

/// Escapes text for HTML and SVG.
pub(super) fn esc(text: &str) -> String {
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

/// One table cell.
pub(super) enum Cell {
    /// Text, left-aligned.
    Text(String),
    /// A number, right-aligned.
    Num(i64),
    /// A raw value, in a monospace font.
    Code(String),
    /// A shell command, in a monospace font, wrapped only between words.
    Command(String),
    /// A low-stock state, coloured.
    State(LowState),
}

impl Cell {
    pub(super) fn text(text: impl Into<String>) -> Cell {
        Cell::Text(text.into())
    }

    fn write(&self, h: &mut String) {
        let _ = match self {
            Cell::Text(text) => write!(h, "<td>{}</td>", esc(text)),
            Cell::Num(n) => write!(h, "<td class=\"n\">{n}</td>"),
            Cell::Code(code) => write!(h, "<td><code>{}</code></td>", esc(code)),
            Cell::Command(command) => write!(h, "<td>{}</td>", command_html(command)),
            Cell::State(state) => write!(h, "<td class=\"{0}\">{0}</td>", state.as_str()),
        };
    }
}

/// A command as code that a browser wraps between words only (not after a word's hyphens),
/// and that copies back as the same text.
pub(super) fn command_html(command: &str) -> String {
    let words: Vec<String> = command.split(' ').map(|w| format!("<span class=\"w\">{}</span>", esc(w))).collect();
    format!("<code>{}</code>", words.join(" "))
}

/// A table with a header row (none when `headers` is empty) and one row per item.
pub(super) fn table(h: &mut String, id: &str, headers: &[&str], rows: impl IntoIterator<Item = Vec<Cell>>) {
    let _ = write!(h, "<table id=\"{}\">", esc(id));
    if !headers.is_empty() {
        h.push_str("<tr>");
        for header in headers {
            let _ = write!(h, "<th>{}</th>", esc(header));
        }
        h.push_str("</tr>");
    }
    for row in rows {
        h.push_str("<tr>");
        for cell in &row {
            cell.write(h);
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
}

/// `n` and the noun, singular or plural: `1 key`, `2 keys`.
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Opens a block that can be folded: open when it is short, else folded under `summary`.
pub(super) fn open_details(h: &mut String, rows: usize, summary: &str) {
    let open = if rows <= FOLD_ABOVE { " open" } else { "" };
    let _ = writeln!(h, "<details{open}><summary>{}</summary>", esc(summary));
}

/// Tables longer than this many rows start folded.
const FOLD_ABOVE: usize = 20;

/// A paragraph of notes.
pub(super) fn note(h: &mut String, text: &str) {
    let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(text));
}

/// Says how many rows a capped table left out and where the rest is.
pub(super) fn more_rows(h: &mut String, shown: usize, total: usize, rest: &str) {
    if total > shown {
        note(h, &format!("{shown} of {total} shown; the other {} are in {rest}.", total - shown));
    }
}

/// Names joined by commas, at most `most` of them, then how many more.
pub(super) fn name_list(names: &[&str], most: usize) -> String {
    let mut text = names.iter().take(most).copied().collect::<Vec<_>>().join(", ");
    if names.len() > most {
        let _ = write!(text, " and {} more", names.len() - most);
    }
    text
}

/// A word as a POSIX shell reads it back: bare when it holds only safe characters, else in
/// single quotes.
pub(super) fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A logical time as a reader wants it: `2023-11-14 22:14:20.000 UTC`.
pub(super) fn when(ms: Millis) -> String {
    let text = rfc3339(ms);
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A duration in seconds below a minute, else in minutes and seconds.
pub(super) fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.2} s")
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        let mut h = String::new();
        table(&mut h, "t", &["<h>"], [vec![Cell::text("<td>"), Cell::Code("a&b".into())]]);
        assert_eq!(h, "<table id=\"t\"><tr><th>&lt;h&gt;</th></tr><tr><td>&lt;td&gt;</td><td><code>a&amp;b</code></td></tr></table>\n");
    }

    #[test]
    fn shell_words_read_back() {
        assert_eq!(shell_word("fixtures/medium/input"), "fixtures/medium/input");
        assert_eq!(shell_word("my file"), "'my file'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn times_and_durations_read_plainly() {
        assert_eq!(when(1_700_000_060_000), "2023-11-14 22:14:20.000 UTC");
        assert_eq!(duration(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(duration(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(name_list(&["a", "b", "c"], 2), "a, b and 1 more");
        assert_eq!((count(1, "key", "keys"), count(2, "key", "keys")), ("1 key".into(), "2 keys".into()));
        assert_eq!(command_html("a --b"), "<code><span class=\"w\">a</span> <span class=\"w\">--b</span></code>");
    }
}
