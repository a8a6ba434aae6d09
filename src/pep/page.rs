//! Which of a node's items one retrieval reply carries (XEP-0060 §6.5.4 "Returning Some
//! Items", §6.5.7 `max_items`) under XEP-0059 result set paging and a byte cap, and the RSM
//! `<set/>` that tells the client what it got. The result set is the node's items oldest
//! first, as replies list them. This module owns the request's paging parameters and the
//! page arithmetic; it never reads the store or checks access.

use crate::xml::build::Element;
use roxmltree::Node;
use std::ops::Range;

pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// Bytes an item adds to a reply besides its id and payload (`<item id=''></item>`).
pub const ITEM_OVERHEAD: usize = 20;

/// Where an RSM page starts or ends (XEP-0059 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    /// No `<after/>`, `<before/>` or `<index/>`: the first page.
    First,
    /// The items following this one.
    After(String),
    /// The items preceding this one; `None` (an empty `<before/>`): the last page.
    Before(Option<String>),
    /// The page starting at this index (§2.6).
    Index(usize),
}

/// The paging parameters of one `<items/>` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// `max_items` (XEP-0060 §6.5.7): the most recent this many.
    max_items: Option<usize>,
    /// The RSM `<set/>`, when the request had one: `<max/>` and the anchor.
    rsm: Option<(Option<usize>, Anchor)>,
}

/// The request's paging parameters are malformed: `bad-request`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest;

/// An `<after/>` or `<before/>` names no item of the result set (XEP-0059 §2.4: `item-not-found`).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownItem;

impl Paging {
    /// Reads `max_items` of `<items/>` and the RSM `<set/>` among `<pubsub/>`'s children.
    pub fn parse(pubsub: Node, items: Node) -> Result<Paging, BadRequest> {
        let max_items = items.attribute("max_items").map(count).transpose()?;
        let rsm = match pubsub.children().find(|c| c.has_tag_name((NS_RSM, "set"))) {
            None => None,
            Some(set) => Some(parse_set(set)?),
        };
        Ok(Paging { max_items, rsm })
    }

    /// The page of a result set whose items have the ids `ids` and take `sizes` bytes each,
    /// cut to at most `cap` bytes (but never to no item at all): the end nearest its
    /// anchor is kept, so a plain retrieval keeps the newest items and paging on from the
    /// page's first or last item leaves no gap.
    pub fn select(&self, ids: &[&str], sizes: &[usize], cap: usize) -> Result<Page, UnknownItem> {
        let n = ids.len();
        let position = |id: &str| ids.iter().position(|i| *i == id).ok_or(UnknownItem);
        let rsm_max = self.rsm.as_ref().and_then(|(max, _)| *max);
        let limit = match (rsm_max, self.max_items) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(n),
        };
        // Whether the page grows forward from its start (else back from its end).
        let (range, forward) = match self.rsm.as_ref().map(|(_, anchor)| anchor) {
            Some(Anchor::After(id)) => {
                let start = position(id)? + 1;
                (start..(start + limit).min(n), true)
            }
            Some(Anchor::Before(Some(id))) => {
                let end = position(id)?;
                (end.saturating_sub(limit)..end, false)
            }
            Some(Anchor::Index(index)) => {
                let start = (*index).min(n);
                (start..(start + limit).min(n), true)
            }
            Some(Anchor::First) if self.max_items.is_none() => (0..limit.min(n), true),
            // `max_items`, `<before/>` or nothing: the most recent items.
            _ => (n.saturating_sub(limit)..n, false),
        };
        let mut kept = 0;
        let mut bytes = 0;
        for k in 0..range.len() {
            let i = if forward {
                range.start + k
            } else {
                range.end - 1 - k
            };
            let size = sizes.get(i).copied().unwrap_or(0);
            if kept > 0 && bytes + size > cap {
                break;
            }
            bytes += size;
            kept += 1;
        }
        let truncated = kept < range.len();
        let items = if forward {
            range.start..range.start + kept
        } else {
            range.end - kept..range.end
        };
        Ok(Page {
            items,
            count: n,
            with_set: self.rsm.is_some() || truncated,
        })
    }
}

/// A non-negative integer attribute or element text.
fn count(text: &str) -> Result<usize, BadRequest> {
    text.trim().parse().map_err(|_| BadRequest)
}

fn parse_set(set: Node) -> Result<(Option<usize>, Anchor), BadRequest> {
    let mut max = None;
    let mut anchor = Anchor::First;
    for child in set.children().filter(Node::is_element) {
        if child.tag_name().namespace() != Some(NS_RSM) {
            return Err(BadRequest);
        }
        let text = child.text().unwrap_or_default();
        match child.tag_name().name() {
            "max" => max = Some(count(text)?),
            "after" if !text.is_empty() => anchor = Anchor::After(text.to_owned()),
            "before" if text.is_empty() => anchor = Anchor::Before(None),
            "before" => anchor = Anchor::Before(Some(text.to_owned())),
            "index" => anchor = Anchor::Index(count(text)?),
            _ => return Err(BadRequest),
        }
    }
    Ok((max, anchor))
}

/// The items of one reply, as indices into the result set.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Range<usize>,
    /// Items in the whole result set.
    pub count: usize,
    /// The reply carries a `<set/>`: the client asked for paging, or did not get everything.
    pub with_set: bool,
}

impl Page {
    /// The RSM `<set/>` (XEP-0059 §2) for this page; `ids` are the result set's item ids.
    pub fn write_set(&self, ids: &[&str], out: &mut String) {
        let (first, last) = (
            ids.get(self.items.start),
            ids.get(self.items.end.wrapping_sub(1)),
        );
        Element::new("set").ns(NS_RSM).children(out, |out| {
            if let (false, Some(first), Some(last)) = (self.items.is_empty(), first, last) {
                let index = self.items.start.to_string();
                Element::new("first").attr("index", &index).text(out, first);
                Element::new("last").text(out, last);
            }
            Element::new("count").text(out, &self.count.to_string());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn page(items: &str, set: &str, cap: usize) -> Result<Page, UnknownItem> {
        let xml =
            format!("<pubsub xmlns='http://jabber.org/protocol/pubsub'>{items}{set}</pubsub>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let pubsub = doc.root_element();
        let items = pubsub.first_element_child().unwrap();
        Paging::parse(pubsub, items)
            .unwrap()
            .select(&IDS, &[10; 5], cap)
    }

    fn set(inner: &str) -> String {
        format!("<set xmlns='{NS_RSM}'>{inner}</set>")
    }

    #[test]
    fn whole_node_fits_or_keeps_the_newest() {
        let all = page("<items node='n'/>", "", 100).unwrap();
        assert_eq!((all.items, all.with_set), (0..5, false));
        let cut = page("<items node='n'/>", "", 25).unwrap();
        assert_eq!((cut.items, cut.count, cut.with_set), (3..5, 5, true));
        // One item always goes out, however large.
        assert_eq!(page("<items node='n'/>", "", 1).unwrap().items, 4..5);
    }

    #[test]
    fn max_items_is_the_newest_n() {
        let newest = page("<items node='n' max_items='2'/>", "", 100).unwrap();
        assert_eq!((newest.items, newest.with_set), (3..5, false));
        assert_eq!(
            page("<items node='n' max_items='9'/>", "", 100)
                .unwrap()
                .items,
            0..5
        );
    }

    #[test]
    fn rsm_pages_forward_and_back() {
        assert_eq!(
            page("<items node='n'/>", &set("<max>2</max>"), 100)
                .unwrap()
                .items,
            0..2
        );
        let next = page(
            "<items node='n'/>",
            &set("<max>2</max><after>b</after>"),
            100,
        )
        .unwrap();
        assert_eq!((next.items, next.with_set), (2..4, true));
        assert_eq!(
            page("<items node='n'/>", &set("<max>2</max><before/>"), 100)
                .unwrap()
                .items,
            3..5
        );
        assert_eq!(
            page(
                "<items node='n'/>",
                &set("<max>2</max><before>b</before>"),
                100
            )
            .unwrap()
            .items,
            0..1
        );
        assert_eq!(
            page(
                "<items node='n'/>",
                &set("<max>2</max><index>3</index>"),
                100
            )
            .unwrap()
            .items,
            3..5
        );
        assert_eq!(
            page("<items node='n'/>", &set("<max>0</max>"), 100)
                .unwrap()
                .items,
            0..0
        );
        assert_eq!(
            page("<items node='n'/>", &set("<after>zz</after>"), 100),
            Err(UnknownItem)
        );
        // The byte cap keeps the end nearest the anchor.
        assert_eq!(
            page("<items node='n'/>", &set("<after>a</after>"), 25)
                .unwrap()
                .items,
            1..3
        );
    }

    #[test]
    fn malformed_paging_is_a_bad_request() {
        let doc = roxmltree::Document::parse(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n' max_items='x'/></pubsub>",
        )
        .unwrap();
        let pubsub = doc.root_element();
        let items = pubsub.first_element_child().unwrap();
        assert_eq!(Paging::parse(pubsub, items), Err(BadRequest));
        let xml = format!(
            "<pubsub xmlns='p'><items node='n'/>{}</pubsub>",
            set("<max>-1</max>")
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let pubsub = doc.root_element();
        let items = pubsub.first_element_child().unwrap();
        assert_eq!(Paging::parse(pubsub, items), Err(BadRequest));
    }

    #[test]
    fn set_names_first_last_and_count() {
        let mut out = String::new();
        let page = Page {
            items: 3..5,
            count: 5,
            with_set: true,
        };
        page.write_set(&IDS, &mut out);
        assert_eq!(
            out,
            format!("<set xmlns='{NS_RSM}'><first index='3'>d</first><last>e</last><count>5</count></set>")
        );
        out.clear();
        Page {
            items: 5..5,
            count: 5,
            with_set: true,
        }
        .write_set(&IDS, &mut out);
        assert_eq!(out, format!("<set xmlns='{NS_RSM}'><count>5</count></set>"));
    }
}
