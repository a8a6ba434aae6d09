//! XEP-0157 Contact Addresses: the configured abuse, admin and support URIs as the
//! `http://jabber.org/network/serverinfo` form in the server's disco#info, and their part
//! of the server's XEP-0115 hash. It only writes what `[contact]` says; it never checks or
//! contacts an address.

use crate::config::Contact;
use crate::xml::Esc;
use std::fmt::Write;

pub const FORM_TYPE: &str = "http://jabber.org/network/serverinfo";

/// The non-empty lists with their field names, in the order XEP-0115 §5.1 sorts them.
fn fields(contact: &Contact) -> impl Iterator<Item = (&'static str, &[String])> {
    [
        ("abuse-addresses", contact.abuse.as_slice()),
        ("admin-addresses", contact.admin.as_slice()),
        ("support-addresses", contact.support.as_slice()),
    ]
    .into_iter()
    .filter(|(_, uris)| !uris.is_empty())
}

/// The form (XEP-0128 extended information), when any address is configured.
pub fn write_form(out: &mut String, contact: &Contact) {
    if fields(contact).next().is_none() {
        return;
    }
    let _ = write!(
        out,
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>{FORM_TYPE}</value></field>"
    );
    for (var, uris) in fields(contact) {
        let _ = write!(out, "<field var='{var}'>");
        for uri in uris {
            let _ = write!(out, "<value>{}</value>", Esc(uri));
        }
        out.push_str("</field>");
    }
    out.push_str("</x>");
}

/// XEP-0115 §5.1 step 7: the form's part of the verification string.
pub fn append_to_ver(string: &mut String, contact: &Contact) {
    if fields(contact).next().is_none() {
        return;
    }
    let _ = write!(string, "{FORM_TYPE}<");
    for (var, uris) in fields(contact) {
        let _ = write!(string, "{var}<");
        let mut sorted: Vec<&str> = uris.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        for uri in sorted {
            let _ = write!(string, "{uri}<");
        }
    }
}
