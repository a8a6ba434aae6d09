//! The one way replies are written: an element, its attributes and its
//! children, streamed into a `String` with every attribute value and text
//! escaped, so a handler never formats markup by hand and never forgets an
//! escape. Writing goes straight to the output (no tree is built), and the
//! end tag is written by the same call that opened the element, so the
//! result is always balanced.
//!
//! ```
//! use hearth::xml::build::Element;
//! let mut out = String::new();
//! Element::new("query")
//!     .ns("jabber:iq:roster")
//!     .attr("ver", "3")
//!     .children(&mut out, |out| {
//!         Element::new("item").attr("jid", "a&b@example.org").empty(out);
//!     });
//! assert_eq!(
//!     out,
//!     "<query xmlns='jabber:iq:roster' ver='3'><item jid='a&amp;b@example.org'/></query>"
//! );
//! ```

use super::writer::escape_into;

/// An element's start tag, collected until it is written with
/// [`Element::empty`], [`Element::text`] or [`Element::children`].
#[must_use = "an element is written only by empty, text or children"]
pub struct Element<'a> {
    name: &'a str,
    attrs: heapless::Vec<(&'a str, &'a str), 8>,
    /// Attributes beyond the inline eight (rare: data forms, MUC items).
    more: Vec<(&'a str, &'a str)>,
}

impl<'a> Element<'a> {
    /// `name` is written as given (a hearth constant, never peer input).
    #[inline]
    pub fn new(name: &'a str) -> Element<'a> {
        Element {
            name,
            attrs: heapless::Vec::new(),
            more: Vec::new(),
        }
    }

    /// The default namespace (`xmlns='…'`).
    #[inline]
    pub fn ns(self, ns: &'a str) -> Element<'a> {
        self.attr("xmlns", ns)
    }

    /// An attribute; `value` is escaped.
    #[inline]
    pub fn attr(mut self, name: &'a str, value: &'a str) -> Element<'a> {
        if let Err(pair) = self.attrs.push((name, value)) {
            self.more.push(pair);
        }
        self
    }

    /// An attribute written only when there is a value.
    #[inline]
    pub fn attr_opt(self, name: &'a str, value: Option<&'a str>) -> Element<'a> {
        match value {
            Some(value) => self.attr(name, value),
            None => self,
        }
    }

    fn open(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        // Straight pushes, not `write!`: these writers are on every reply's path, and the
        // formatting machinery costs more than the copying.
        for (name, value) in self.attrs.iter().chain(&self.more) {
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            let _ = escape_into(out, value, true);
            out.push('\'');
        }
    }

    fn close(&self, out: &mut String) {
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }

    /// `<name …/>`.
    pub fn empty(self, out: &mut String) {
        self.open(out);
        out.push_str("/>");
    }

    /// `<name …>text</name>`, the text escaped.
    pub fn text(self, out: &mut String, text: &str) {
        self.open(out);
        out.push('>');
        let _ = escape_into(out, text, false);
        self.close(out);
    }

    /// `<name …>` then whatever `children` writes, then `</name>`.
    pub fn children(self, out: &mut String, children: impl FnOnce(&mut String)) {
        self.open(out);
        out.push('>');
        children(out);
        self.close(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).expect("well-formed")
    }

    #[test]
    fn empty_element_with_namespace_and_attributes() {
        let mut out = String::new();
        Element::new("ping")
            .ns("urn:xmpp:ping")
            .attr_opt("id", None)
            .empty(&mut out);
        assert_eq!(out, "<ping xmlns='urn:xmpp:ping'/>");
    }

    #[test]
    fn hostile_values_and_text_stay_data() {
        let mut out = String::new();
        let evil = "'/><evil a=\"&\n";
        Element::new("a")
            .attr("x", evil)
            .children(&mut out, |out| Element::new("b").text(out, "</a><c>&"));
        let doc = parse(&out);
        let a = doc.root_element();
        assert_eq!(a.attribute("x"), Some(evil));
        assert_eq!(a.children().count(), 1);
        let b = a.first_element_child().expect("b");
        assert_eq!(b.text(), Some("</a><c>&"));
    }

    #[test]
    fn many_attributes_keep_their_order() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut element = Element::new("x");
        for name in names {
            element = element.attr(name, name);
        }
        let mut out = String::new();
        element.empty(&mut out);
        let doc = parse(&out);
        let written: Vec<_> = doc.root_element().attributes().map(|a| a.name()).collect();
        assert_eq!(written, names);
    }
}
