//! XEP-0157 Contact Addresses as a client sees them: the serverinfo form in the server's
//! disco#info when `[contact]` is set (and none otherwise), counted in the server's
//! XEP-0115 hash so that the capabilities node still answers.

mod common;

use common::*;
use hearth::sasl::base64;

const INFO: &str = "http://jabber.org/protocol/disco#info";

fn server_info(client: &mut Client, node: Option<&str>) -> String {
    let node = node.map_or(String::new(), |n| format!(" node='{n}'"));
    client.send(&format!(
        "<iq type='get' id='info' to='{DOMAIN}'><query xmlns='{INFO}'{node}/></iq>"
    ));
    client.expect("id='info'")
}

/// XEP-0115 §5.1 computed here, from the answer as the client got it.
fn caps_ver(info: &str) -> String {
    let string = with_doc(info, |iq| {
        let query = iq.first_element_child().unwrap();
        let mut string = String::new();
        for identity in query
            .children()
            .filter(|c| c.has_tag_name((INFO, "identity")))
        {
            let attr = |name| identity.attribute(name).unwrap_or_default();
            string += &format!("{}/{}//{}<", attr("category"), attr("type"), attr("name"));
        }
        let mut features: Vec<&str> = query
            .children()
            .filter(|c| c.has_tag_name((INFO, "feature")))
            .filter_map(|c| c.attribute("var"))
            .collect();
        features.sort_unstable();
        for feature in features {
            string += &format!("{feature}<");
        }
        for form in query.children().filter(|c| c.tag_name().name() == "x") {
            let mut fields: Vec<(&str, Vec<&str>)> = form
                .children()
                .filter(|f| f.is_element())
                .map(|f| {
                    let values = f.children().filter_map(|v| v.text()).collect();
                    (f.attribute("var").unwrap(), values)
                })
                .collect();
            fields.sort_unstable();
            let (_, form_type) = fields.iter().find(|(var, _)| *var == "FORM_TYPE").unwrap();
            string += &format!("{}<", form_type[0]);
            for (var, mut values) in fields.into_iter().filter(|(v, _)| *v != "FORM_TYPE") {
                values.sort_unstable();
                string += &format!("{var}<");
                for value in values {
                    string += &format!("{value}<");
                }
            }
        }
        string
    });
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, string.as_bytes());
    base64::encode(digest.as_ref())
}

#[test]
fn contact_addresses_are_in_the_server_disco_info() {
    let server = TestServer::start(
        "[contact]\nabuse = [\"xmpp:abuse@localhost\", \"mailto:abuse@example.org\"]\nsupport = [\"https://help.example.org/?a=1&b=2\"]\n",
    );
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "pc");
    let info = server_info(&mut alice, None);
    let form = "<x xmlns='jabber:x:data' type='result'>\
        <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/network/serverinfo</value></field>\
        <field var='abuse-addresses'><value>xmpp:abuse@localhost</value><value>mailto:abuse@example.org</value></field>\
        <field var='support-addresses'><value>https://help.example.org/?a=1&amp;b=2</value></field>\
        </x></query></iq>";
    assert!(info.ends_with(form), "{info}");

    // The capabilities hash covers the form: the node named by it answers.
    let ver = caps_ver(&info);
    let by_node = server_info(&mut alice, Some(&format!("https://hearth#{ver}")));
    assert!(
        by_node.contains("type='result'") && by_node.ends_with(form),
        "{by_node}"
    );
}

#[test]
fn no_contact_form_unless_configured() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "pc");
    let info = server_info(&mut alice, None);
    assert!(
        info.contains("type='result'") && !info.contains("jabber:x:data"),
        "{info}"
    );
    let ver = caps_ver(&info);
    let by_node = server_info(&mut alice, Some(&format!("https://hearth#{ver}")));
    assert!(by_node.contains("type='result'"), "{by_node}");
}
