//! A small element tree between quick-xml's events and the typed
//! configuration: it keeps byte offsets for error positions and prints
//! canonically, so that unknown elements can be carried as text fragments.

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};

use crate::error::{ConfigError, ErrorKind, Position};

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
    /// An already printed element (an `extra` fragment), written verbatim.
    Raw(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) children: Vec<Node>,
    /// Byte offset of the start tag in the parsed text.
    pub(crate) offset: usize,
}

impl Element {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            attributes: Vec::new(),
            children: Vec::new(),
            offset: 0,
        }
    }

    pub(crate) fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn has_child_elements(&self) -> bool {
        self.children
            .iter()
            .any(|c| matches!(c, Node::Element(_) | Node::Raw(_)))
    }

    /// The concatenated text of a value element.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            if let Node::Text(t) = child {
                out.push_str(t);
            }
        }
        out
    }
}

/// Parses `text` into its root element. The error carries no path beyond the
/// element where it happened.
pub(crate) fn parse(text: &str) -> Result<Element, ConfigError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ConfigError::new(
            "",
            None,
            ErrorKind::TooLarge {
                size: text.len(),
                limit: MAX_DOCUMENT_BYTES,
            },
        ));
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let at = |offset: u64| {
        Some(Position::of_offset(
            text,
            usize::try_from(offset).unwrap_or(usize::MAX),
        ))
    };
    let path_of = |stack: &[Element]| {
        stack
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join("/")
    };
    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                return Err(ConfigError::new(
                    path_of(&stack),
                    at(reader.error_position()),
                    ErrorKind::Syntax(e.to_string()),
                ));
            }
        };
        let syntax = |stack: &[Element], message: &str| {
            ConfigError::new(
                path_of(stack),
                at(start),
                ErrorKind::Syntax(message.to_owned()),
            )
        };
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                if root.is_some() {
                    return Err(syntax(&stack, "content after the root element"));
                }
                let name = tag.name().as_ref().to_owned();
                let mut element = Element::new(name);
                element.offset = usize::try_from(start).unwrap_or(usize::MAX);
                for attribute in tag.attributes() {
                    let attribute = attribute.map_err(|e| syntax(&stack, &e.to_string()))?;
                    let key = attribute.key.as_ref().to_owned();
                    let value = attribute
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|e| syntax(&stack, &e.to_string()))?
                        .into_owned();
                    element.attributes.push((key, value));
                }
                if matches!(event, Event::Start(_)) {
                    if stack.len() >= MAX_DEPTH {
                        return Err(ConfigError::new(
                            path_of(&stack),
                            at(start),
                            ErrorKind::TooDeep { limit: MAX_DEPTH },
                        ));
                    }
                    stack.push(element);
                } else {
                    close(&mut stack, &mut root, element);
                }
            }
            Event::End(_) => {
                let Some(element) = stack.pop() else {
                    return Err(syntax(&stack, "end tag without start tag"));
                };
                close(&mut stack, &mut root, element);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content(), || {
                syntax(&[], "text outside the root element")
            })?,
            Event::CData(t) => push_text(&mut stack, &t.xml10_content(), || {
                syntax(&[], "text outside the root element")
            })?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match &*r.xml10_content() {
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "amp" => "&".to_owned(),
                        "apos" => "'".to_owned(),
                        "quot" => "\"".to_owned(),
                        _ => return Err(syntax(&stack, "unknown entity reference")),
                    },
                    Err(e) => return Err(syntax(&stack, &e.to_string())),
                };
                push_text(&mut stack, &resolved, || {
                    syntax(&[], "reference outside the root element")
                })?;
            }
            Event::DocType(_) => {
                return Err(syntax(
                    &stack,
                    "document type declarations are not accepted",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(ConfigError::new(
            path_of(&stack),
            at(reader.buffer_position()),
            ErrorKind::Syntax("unexpected end of document".to_owned()),
        ));
    }
    let Some(mut root) = root else {
        return Err(ConfigError::new(
            "",
            at(0),
            ErrorKind::Syntax("no root element".to_owned()),
        ));
    };
    drop_layout(&mut root);
    Ok(root)
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn push_text(
    stack: &mut [Element],
    text: &str,
    outside: impl FnOnce() -> ConfigError,
) -> Result<(), ConfigError> {
    match stack.last_mut() {
        Some(parent) => {
            if let Some(Node::Text(previous)) = parent.children.last_mut() {
                previous.push_str(text);
            } else if !text.is_empty() {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(outside()),
    }
}

/// Drops whitespace-only text beside child elements (indentation), keeping
/// the text of value elements verbatim.
fn drop_layout(element: &mut Element) {
    if element.has_child_elements() {
        element
            .children
            .retain(|c| !matches!(c, Node::Text(t) if t.trim().is_empty()));
    }
    for child in &mut element.children {
        if let Node::Element(e) = child {
            drop_layout(e);
        }
    }
}

/// Prints an element on one line, without indentation: the canonical form of
/// an `extra` fragment.
pub(crate) fn print_compact(element: &Element) -> String {
    let mut out = String::new();
    write_element(&mut out, element, None);
    out
}

/// Prints a whole document with an XML declaration and two-space indentation.
pub(crate) fn print_document(root: &Element) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(&mut out, root, Some(0));
    out.push('\n');
    out
}

fn write_element(out: &mut String, element: &Element, indent: Option<usize>) {
    out.push('<');
    out.push_str(&element.name);
    for (name, value) in &element.attributes {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escape_into(out, value, true);
        out.push('"');
    }
    if element.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    // Indent only element-only content; mixed content is printed as is.
    let indent = indent.filter(|_| element.children.iter().all(|c| !matches!(c, Node::Text(_))));
    for child in &element.children {
        if let Some(level) = indent {
            out.push('\n');
            out.push_str(&"  ".repeat(level + 1));
        }
        match child {
            Node::Element(e) => write_element(out, e, indent.map(|l| l + 1)),
            Node::Text(t) => escape_into(out, t, false),
            Node::Raw(raw) => out.push_str(raw),
        }
    }
    if let Some(level) = indent {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_print_is_stable_through_a_parse() {
        let text = "<x a=\"1 &amp; 2\">\n  <y>t &lt; u</y>\n  <z/>\n</x>";
        let element = parse(text).unwrap();
        let printed = print_compact(&element);
        assert_eq!(printed, "<x a=\"1 &amp; 2\"><y>t &lt; u</y><z/></x>");
        assert_eq!(print_compact(&parse(&printed).unwrap()), printed);
    }

    #[test]
    fn value_text_is_kept_verbatim() {
        let element = parse("<p>  two  spaces &#13;</p>").unwrap();
        assert_eq!(element.text(), "  two  spaces \r");
        assert_eq!(
            parse(&print_compact(&element)).unwrap().text(),
            "  two  spaces \r"
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let error = parse("<a>\n  <b></c>\n</a>").unwrap_err();
        assert!(matches!(error.kind, ErrorKind::Syntax(_)));
        assert_eq!(error.position.unwrap().line, 2);
    }

    #[test]
    fn doctype_and_unknown_entities_are_refused() {
        assert!(parse("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").is_err());
        assert!(parse("<a>&x;</a>").is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let text = "<a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            parse(&text).unwrap_err().kind,
            ErrorKind::TooDeep { .. }
        ));
    }
}
