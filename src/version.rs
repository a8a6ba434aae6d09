//! XEP-0092 software version of the server.

use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::stanza::IqType;
use crate::xml::build::Element;

pub const NS: &str = "jabber:iq:version";

pub const FEATURE: Feature = Feature {
    name: "version",
    answers_remote: true,
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    ..Feature::NONE
};

/// A version query to the server (§2): a get of an empty `<query/>`.
#[derive(Debug, PartialEq)]
struct Query;

impl Query {
    /// `None` for anything else (a set, another element, an account's JID): not this
    /// feature's request, answered as any unknown payload is. Any `jabber:iq:version`
    /// payload of a get is taken as the query, as it always was.
    fn parse(ty: IqType, target: IqTarget) -> Option<Query> {
        (ty == IqType::Get && target == IqTarget::Server).then_some(Query)
    }
}

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let Some(Query) = Query::parse(iq.ty, iq.target) else {
        return false;
    };
    iq.reply().result_of(out, write_version);
    true
}

/// `<query/>` naming the server and its version (§2).
fn write_version(out: &mut String) {
    Element::new("query").ns(NS).children(out, |out| {
        Element::new("name").text(out, "hearth");
        Element::new("version").text(out, env!("CARGO_PKG_VERSION"));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: IqType, target: IqTarget) -> Option<Query> {
        Query::parse(ty, target)
    }

    #[test]
    fn a_get_to_the_server_is_a_query_xep_0092_s2() {
        assert_eq!(parse(IqType::Get, IqTarget::Server), Some(Query));
    }

    #[test]
    fn a_set_or_a_query_to_an_account_is_not_ours() {
        assert_eq!(parse(IqType::Set, IqTarget::Server), None);
        assert_eq!(parse(IqType::Get, IqTarget::Account("alice")), None);
    }

    #[test]
    fn the_answer_names_hearth_and_its_version() {
        let mut out = String::new();
        write_version(&mut out);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element();
        assert!(query.has_tag_name((NS, "query")));
        let text = |name| crate::stanza::child_text(query, name, NS);
        assert_eq!(text("name"), Some("hearth"));
        assert_eq!(text("version"), Some(env!("CARGO_PKG_VERSION")));
    }
}
