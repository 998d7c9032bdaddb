//! YAML syntax errors: the parser's message with its position said once and, when a flow
//! collection (`[`, `{`) or a quoted scalar is left open, where it was opened. The parser
//! reports where it gave up, which for an unclosed bracket is often lines later.

use crate::locate::Position;

/// The problems of a text the parser refused: its error, then what was left open before it.
pub(super) fn problems(text: &str, error: &serde_saphyr::Error) -> Vec<(Option<Position>, String)> {
    let at = error.location().map(|l| Position {
        line: l.line() as usize,
        column: l.column() as usize,
    });
    let message = error.to_string();
    let first = message.lines().next().unwrap_or("");
    // The parser repeats the position in its message; it is printed once, up front.
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let reason = match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest,
        _ => first,
    };
    // Not "invalid YAML: invalid indentation …".
    let reason = reason.strip_prefix("invalid ").unwrap_or(reason).trim();
    // Advice to the parser's caller ("set DuplicateKeyPolicy in Options") is not for people.
    let reason = match reason.split_once(", set ") {
        Some((head, advice)) if advice.ends_with(" in Options if acceptable") => head,
        _ => reason,
    };
    let mut out = vec![(
        at,
        if reason.is_empty() {
            "invalid YAML".to_string()
        } else {
            format!("invalid YAML: {reason}")
        },
    )];
    // Where the parser points at the opening itself, it has said it already.
    for (opened, pos) in unclosed(text) {
        if at.is_none_or(|at| pos < at) {
            out.push((
                Some(pos),
                format!("the {opened} opened here is never closed"),
            ));
        }
    }
    out
}

/// The flow brackets and quotes a YAML text opens and never closes, in text order.
///
/// A scanner, not a parser, used only to add to an error the parser found: it knows
/// comments, quoted scalars (`''` and `\"` inside them), block scalars (`|`, `>`), document
/// markers, and that outside brackets a bracket or quote opens only where a value starts
/// (`pattern: a[0]` and `note: it's` open nothing).
pub(super) fn unclosed(text: &str) -> Vec<(char, Position)> {
    let mut open: Vec<(char, Position)> = Vec::new();
    let mut never: Vec<(char, Position)> = Vec::new();
    let mut quote: Option<(char, Position)> = None;
    // Inside a block scalar: the indentation its content is deeper than.
    let mut block: Option<usize> = None;
    // YAML breaks lines at LF, CR and CRLF, and so do the parser's positions.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for (n, line) in text.split('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block = None;
        }
        if quote.is_none() && (line == "---" || line.starts_with("--- ") || line == "...") {
            // The document ends, and what it left open with it.
            never.append(&mut open);
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        // Whether a value may start here.
        let mut at_start = true;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            let pos = Position {
                line: n + 1,
                column: i + 1,
            };
            if let Some((q, _)) = quote {
                match c {
                    '\\' if q == '"' => i += 1,
                    '\'' if q == '\'' && next == Some('\'') => i += 1,
                    _ if c == q => quote = None,
                    _ => {}
                }
                i += 1;
                continue;
            }
            let space_before = i == 0 || chars[i - 1].is_whitespace();
            let space_after = next.is_none_or(char::is_whitespace);
            match c {
                '#' if space_before => break,
                ' ' | '\t' => {}
                '\'' | '"' if at_start => {
                    quote = Some((c, pos));
                    at_start = false;
                }
                '[' | '{' if at_start || !open.is_empty() => {
                    open.push((c, pos));
                    at_start = true;
                }
                ']' | '}' if !open.is_empty() => {
                    let opener = if c == ']' { '[' } else { '{' };
                    // `[1, 2}` closes the `{` around it and leaves the `[` open.
                    if let Some(k) = open.iter().rposition(|(o, _)| *o == opener) {
                        never.extend(open.drain(k + 1..));
                        open.truncate(k);
                    }
                    at_start = false;
                }
                ',' if !open.is_empty() => at_start = true,
                ':' if space_after || !open.is_empty() => at_start = true,
                '-' | '?' if at_start && space_after => {}
                // An anchor or a tag: the value follows it.
                '&' | '!' if at_start => {
                    while chars.get(i + 1).is_some_and(|c| !c.is_whitespace()) {
                        i += 1;
                    }
                }
                '|' | '>' if at_start && open.is_empty() => {
                    block = Some(indent);
                    break;
                }
                _ => at_start = false,
            }
            i += 1;
        }
    }
    never.extend(open);
    never.extend(quote);
    never.sort_by_key(|(_, pos)| *pos);
    never
}
